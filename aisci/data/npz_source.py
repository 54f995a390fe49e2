"""`npz:PATH` — NumPy arrays for sequences, spectra or signals.

PATH is an `.npz` file holding, per split, inputs and targets with equal
first dimensions: `x`, `y` (or `x_train`, `y_train`) for the training split
and `x_<split>`, `y_<split>` for the others. A held-out split named test,
dev, val, validation or eval is found under any of these names when the
file has exactly one of them (`x_test` serves `--config.eval_split=dev`).

  x  float [n, length] or [n, length, features]: values, embedded by the
     model without tokenization; standardized per feature with the
     training split's mean and std (saved as WORKDIR/npz_stats.json).
     int [n, length]: token ids (vocabulary size from the training split).
  y  int [n]: class labels 0..N-1; float [n] or [n, k]: regression targets.
  class_names  optional str [N]: names of the classes (else their numbers).

Files are read with allow_pickle=False: object arrays are refused.
"""

import json
import os
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from aisci.data import source as source_lib

HELD_OUT = ('test', 'dev', 'val', 'validation', 'eval')
STATS_FILENAME = 'npz_stats.json'


def _keys(arrays, split: str) -> tuple[str, str]:
  candidates = [('x', 'y'), ('x_train', 'y_train')] if split == 'train' else [
      (f'x_{split}', f'y_{split}')]
  for x_key, y_key in candidates:
    if x_key in arrays:
      return x_key, y_key
  if split in HELD_OUT:
    found = [(f'x_{s}', f'y_{s}') for s in HELD_OUT if f'x_{s}' in arrays]
    if len(found) == 1:
      logging.info('npz: split %r read from %s/%s.', split, *found[0])
      return found[0]
  raise KeyError(
      f'No inputs for split {split!r}: looked for '
      f'{[c[0] for c in candidates]}; the file holds {sorted(arrays)}. Name '
      'the arrays x, y (training) and x_test, y_test (or x_<split>, '
      'y_<split>), or set config.train_split / config.eval_split.')


def load_split(path: str, split: str):
  """(x, y, class names or None) of one split, checked."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'npz file {path!r} does not exist.')
  try:
    with np.load(path, allow_pickle=False) as arrays:
      x_key, y_key = _keys(arrays, split)
      if y_key not in arrays:
        raise KeyError(f'{path!r} holds {x_key!r} but not its targets '
                       f'{y_key!r} (file holds {sorted(arrays)}).')
      x, y = arrays[x_key], arrays[y_key]
      names = [str(n) for n in arrays['class_names']] if 'class_names' in arrays else None
  except ValueError as e:
    if 'pickle' in str(e):
      raise ValueError(f'{path!r} holds object arrays, which would need '
                       'pickle to load (never done here): save plain numeric '
                       'arrays with numpy.savez.') from e
    raise
  if len(x) != len(y):
    raise ValueError(f'{path!r}: {x_key} has {len(x)} rows but {y_key} has '
                     f'{len(y)}; inputs and targets must pair row by row.')
  if x.ndim not in (2, 3):
    raise ValueError(f'{path!r}: {x_key} has shape {x.shape}; expected '
                     '[n, length] or [n, length, features].')
  if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
    raise ValueError(f'{path!r}: {x_key} ({x.dtype}) and {y_key} ({y.dtype}) '
                     'must be numeric.')
  if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
    raise ValueError(f'{path!r}: {x_key} holds NaN or Inf values.')
  return x, y, names


def _stats(workdir, x, is_training_split):
  path = os.path.join(workdir, STATS_FILENAME) if workdir else None
  if path and os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      stats = json.load(f)
    return np.asarray(stats['mean'], np.float32), np.asarray(stats['std'], np.float32)
  if not is_training_split:
    raise FileNotFoundError(f'No {STATS_FILENAME} in the workdir: the '
                            'training split must be read first.')
  mean = x.mean(axis=(0, 1)).astype(np.float32)
  std = np.maximum(x.std(axis=(0, 1)), 1e-6).astype(np.float32)
  if path:
    os.makedirs(workdir, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(dict(mean=mean.tolist(), std=std.tolist()), f)
  return mean, std


def make_source(path: str, split: str, *, options: Mapping[str, Any],
                workdir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                class_names: Optional[Sequence[str]] = None
                ) -> source_lib.Source:
  """This process's share of one split of the arrays in `path`."""
  is_training_split = class_names is None
  del options  # everything comes from the file
  x, y, names_in_file = load_split(path, split)
  total = len(x)
  features = {}
  # The data decide the position table's size (+1: a class token may lead).
  model_kwargs = {'max_len': int(x.shape[1]) + 1}
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if x.ndim == 2:
      x = x[..., None]
    mean, std = _stats(workdir, x, is_training_split)
    features['x'] = (x - mean) / std
    input_key = 'x'
  else:
    if x.ndim != 2:
      raise ValueError(f'{path!r}: integer inputs are token ids [n, length], '
                       f'got shape {x.shape}.')
    features['tokens'] = x.astype(np.int32)
    input_key = 'tokens'
    model_kwargs['vocab_size'] = int(x.max()) + 1
  if np.issubdtype(y.dtype, np.integer):
    if class_names is None:
      class_names = names_in_file or [str(i) for i in range(int(y.max()) + 1)]
    if y.ndim != 1 or y.min() < 0 or y.max() >= len(class_names):
      raise ValueError(
          f'{path!r}: integer targets must be class labels [n] in '
          f'0..{len(class_names) - 1}; got shape {y.shape}, values '
          f'{y.min()}..{y.max()}.')
    features['label'] = y.astype(np.int32)
  else:
    class_names = ()
    features['label'] = y.astype(np.float32).reshape(len(y), -1)
    # One model output per target column.
    model_kwargs['num_classes'] = int(features['label'].shape[1])
  features = {k: v[process_index::process_count] for k, v in features.items()}
  shape = 'x'.join(map(str, x.shape[1:]))
  return source_lib.array_source(
      features, total_examples=total, class_names=class_names,
      kind='sequence', input_key=input_key, model_kwargs=model_kwargs,
      description=f'npz {path} split {split} ({total} sequences of {shape})',
      info=dict(length=int(x.shape[1])))
