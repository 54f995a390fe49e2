"""What `python -m aisci.predict` reads: the files a user gives, turned into
the model's input exactly as the training pipeline did, by kind of data.

  image         image files or folders -> [h, w, 3] float32, resized to the
                run's image size, normalized by its mean and std
  segmentation  image files or folders -> [h, w, channels] float32 at their
                own size (or the run's config.input.image_size), padded by
                reflection to a multiple of the U-Net's 2**depth
  text          text files, one example per non-empty line ('-': stdin); a
                .tsv/.csv whose header names the run's text column gives
                that column -> [max_length] int32 token ids (the run's
                WORKDIR/tokenizer.json)
  sequence      .npz files: the array `x` (or the one x_* array, or
                --npz_key) -> [length, features] float32 standardized by
                WORKDIR/npz_stats.json, or [length] int32 token ids
"""

import csv
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from aisci import inference


@dataclasses.dataclass
class Example:
  """One input: `name` (path, path:line or path[row]), the model's `input`,
  and for images the `display` pixels [h, w, c] uint8 and `crop` (h, w):
  the model's output is cut back to it after padding."""
  name: str
  input: np.ndarray
  display: Optional[np.ndarray] = None
  crop: Optional[tuple[int, int]] = None


def read(trained: inference.Trained, paths: Sequence[str], *,
         npz_key: Optional[str] = None) -> list[Example]:
  """The examples in `paths` for the run's kind of data (see module doc)."""
  readers = {'image': _images, 'segmentation': _segmentation_images,
             'text': _texts, 'sequence': _sequences}
  if trained.kind not in readers:
    raise NotImplementedError(f'No reader for data of kind {trained.kind!r}.')
  if trained.kind == 'sequence':
    return _sequences(trained, paths, npz_key)
  return readers[trained.kind](trained, paths)


def _images(trained, paths):
  files = inference.expand_paths(paths)
  # pylint: disable=g-import-not-at-top
  from aisci.data import imagefolder
  from aisci.data import parallel_decode
  # pylint: enable=g-import-not-at-top
  # Many files decode in one process per core, as training reads them
  # (parallel_decode.py); an unreadable file is the same error either way.
  workers = parallel_decode.workers_for(len(files))
  if workers > 1:
    outcomes = parallel_decode.decode(files, trained.image_size, workers)
  else:
    outcomes = ((True, imagefolder.load_image(path, trained.image_size))
                for path in files)
  examples = []
  for path, (ok, pixels) in zip(files, outcomes):
    if not ok:
      raise pixels
    examples.append(Example(path, inference.normalize(
        pixels, trained.mean, trained.std), display=pixels))
  return examples


def _downsampling_factor(model_config) -> int:
  """2**depth of a U-Net (also as a multi-head backbone); 1 otherwise."""
  config = model_config.to_dict()
  config = config.get('backbone', config)
  return 2**int(config['depth']) if config.get('name') == 'unet' else 1


def _segmentation_images(trained, paths):
  from aisci.data import segfolder  # pylint: disable=g-import-not-at-top
  channels = int(trained.info.get('channels', 3))
  size = trained.config.input.get('image_size') or None
  factor = _downsampling_factor(trained.config.model)
  examples = []
  for path in inference.expand_paths(paths):
    pixels = segfolder.load_image(path, channels, size)
    h, w = pixels.shape[:2]
    pad = ((0, -h % factor), (0, -w % factor), (0, 0))
    # Reflection continues the tissue into the padding, as the paper's tiling.
    padded = np.pad(pixels, pad, mode='reflect' if min(h, w) > 1 else 'edge')
    examples.append(Example(path, inference.normalize(
        padded, trained.mean, trained.std), display=pixels, crop=(h, w)))
  return examples


def _text_lines(path: str, text_column: str) -> list[tuple[str, str]]:
  """[(name, text)] of a file: its text column if it is a .tsv/.csv with
  that column in its header, else every non-empty line."""
  if path == '-':
    lines = sys.stdin.read().splitlines()
  else:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path!r} is not a file of text lines.')
    with open(path, encoding='utf-8-sig') as f:
      lines = f.read().splitlines()
  delimiter = {'.tsv': '\t', '.csv': ','}.get(os.path.splitext(path)[1])
  if delimiter and lines:
    quoting = csv.QUOTE_NONE if delimiter == '\t' else csv.QUOTE_MINIMAL
    rows = list(csv.reader(lines, delimiter=delimiter, quoting=quoting))
    if text_column in rows[0]:
      column = rows[0].index(text_column)
      return [(f'{path}:{number}', row[column])
              for number, row in enumerate(rows[1:], start=2)
              if len(row) > column]
  return [(f'{path}:{number}', line) for number, line in
          enumerate(lines, start=1) if line.strip()]


def _texts(trained, paths):
  from aisci.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizer_lib.load(os.path.join(trained.workdir,
                                              trained.info['tokenizer']))
  rows = [row for path in paths
          for row in _text_lines(path, trained.info.get('text_column', ''))]
  if not rows:
    raise ValueError(f'No text lines in {list(paths)}.')
  tokens = tokenizer_lib.encode(tokenizer, [text for _, text in rows],
                                int(trained.info['max_length']))
  return [Example(name, ids) for (name, _), ids in zip(rows, tokens)]


def _npz_array(path: str, npz_key: Optional[str]) -> np.ndarray:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path!r} is not an .npz file.')
  with np.load(path, allow_pickle=False) as arrays:
    keys = sorted(arrays)
    if npz_key is None:
      candidates = ['x'] if 'x' in arrays else [k for k in keys if k.startswith('x_')]
      if len(candidates) != 1:
        raise ValueError(f'{path!r} holds {keys}: name the inputs `x`, or '
                         'give --npz_key.')
      npz_key = candidates[0]
    if npz_key not in arrays:
      raise KeyError(f'{path!r} has no array {npz_key!r}; it holds {keys}.')
    return arrays[npz_key]


def _sequences(trained, paths, npz_key):
  from aisci.data import npz_source  # pylint: disable=g-import-not-at-top
  examples = []
  for path in paths:
    x = _npz_array(path, npz_key)
    expected = 'int' if trained.input_key == 'tokens' else 'float'
    kind = 'int' if np.issubdtype(x.dtype, np.integer) else 'float'
    if kind != expected or x.ndim not in (2, 3):
      raise ValueError(
          f'{path!r}: inputs {x.dtype} {list(x.shape)} do not fit this run, '
          f'which was trained on {expected} arrays [n, length] or '
          '[n, length, features].')
    if kind == 'float':
      with open(os.path.join(trained.workdir, npz_source.STATS_FILENAME),
                encoding='utf-8') as f:
        stats = json.load(f)
      x = x.astype(np.float32)
      x = x[..., None] if x.ndim == 2 else x
      x = (x - np.asarray(stats['mean'], np.float32)) / np.asarray(
          stats['std'], np.float32)
    else:
      x = x.astype(np.int32)
    examples += [Example(f'{path}[{i}]', row) for i, row in enumerate(x)]
  return examples
