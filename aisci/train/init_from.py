"""Start a run from trained weights (`config.init`): fine-tuning.

Sources (`config.init.format`, or 'auto' from the path):
  aisci      an aisci workdir (its newest checkpoint) or one checkpoint
             folder `WORKDIR/checkpoints/<step>`
  vit_npz    a google-research/vision_transformer `.npz`
  hf_vit, hf_bert, hf_resnet
             a Hugging Face `.safetensors` file (see aisci.models.pretrained)

Weights are matched to the new model by name. A name in `config.init.reinit`
(a prefix such as 'head') keeps its fresh initialisation; so does a head
whose class count differs from the file's. ViT position embeddings for
another image size are interpolated to the new patch grid. Any other
mismatch is an error that lists the names.
"""

import os
import re
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from aisci.models import pretrained
from aisci.train import checkpoint as checkpoint_lib

_HEAD = re.compile(r'(^|/)head/')
_POSEMB = re.compile(r'(^|/)pos_embedding$')


def detect_format(path: str) -> str:
  if os.path.isdir(path):
    return 'aisci'
  if path.endswith('.npz'):
    return 'vit_npz'
  if path.endswith('.safetensors'):
    raise ValueError(
        f'config.init.path={path!r} is a safetensors file: set '
        "config.init.format to 'hf_vit', 'hf_bert' or 'hf_resnet' to say "
        'which Hugging Face model it holds.')
  raise ValueError(f'config.init.path={path!r} is neither an aisci workdir or '
                   'checkpoint folder, nor a .npz or .safetensors file.')


def read_aisci_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Flat {'params/...': array, '<collection>/...': array} of a checkpoint:
  a workdir's newest, or one folder WORKDIR/checkpoints/<step> (or
  best_checkpoint/<step>), whatever device count wrote it."""
  path = os.path.abspath(path)  # orbax takes absolute paths only
  checkpoints = os.path.join(path, 'checkpoints')
  try:
    if os.path.isdir(checkpoints):  # A workdir: take its newest checkpoint.
      state, _ = checkpoint_lib.read_on_one_device(checkpoints)
    elif os.path.basename(path).isdigit():
      state, _ = checkpoint_lib.read_on_one_device(
          os.path.dirname(path), int(os.path.basename(path)))
    else:
      raise FileNotFoundError(f'{path} is neither a workdir nor a checkpoint '
                              'folder <workdir>/checkpoints/<step>.')
  except (FileNotFoundError, ValueError) as e:
    raise FileNotFoundError(f'config.init.path={path!r}: {e}') from e
  flat = {f'params/{k}': v for k, v in pretrained.flatten(state['params']).items()}
  flat.update(pretrained.flatten(state.get('model_state') or {}))
  return flat


def merge(source: Mapping[str, np.ndarray], template: Mapping[str, Any],
          reinit: Sequence[str], what: str) -> dict[str, Any]:
  """Template leaves replaced by the source's, by name (flat dicts).

  template: flat {'collection/name': array or ShapeDtypeStruct} of the
  freshly initialised model (its values are kept where reinitialised).
  """
  merged, missing, misshaped = {}, [], []
  kept_heads = []
  for name, fresh in template.items():
    inner = name.split('/', 1)[1]
    if any(inner.startswith(prefix) for prefix in reinit):
      merged[name] = fresh
    elif name not in source:
      missing.append(name)
    elif tuple(source[name].shape) == tuple(fresh.shape):
      merged[name] = np.asarray(source[name], fresh.dtype)
    elif _HEAD.search(inner):
      merged[name] = fresh  # Another class count: a new head.
      kept_heads.append(name)
    elif _POSEMB.search(inner) and source[name].shape[-1] == fresh.shape[-1]:
      merged[name] = _resize_posemb(source[name], fresh.shape)
    else:
      misshaped.append(f'{name}: file {tuple(source[name].shape)}, '
                       f'model {tuple(fresh.shape)}')
  if missing or misshaped:
    raise ValueError(
        f'{what} does not fit the model of this config.\n'
        + (f'  Missing from the file: {missing}\n' if missing else '')
        + (f'  Different shapes: {misshaped}\n' if misshaped else '')
        + '  Check config.model against the model that wrote the file, or '
        'list parameter prefixes to initialise afresh in config.init.reinit.')
  if kept_heads:
    logging.info('New head (class count differs from the file): %s', kept_heads)
  unused = sorted(set(source) - set(template))
  if unused:
    logging.info('Weights in the file that the model does not use: %s', unused)
  return merged


def _resize_posemb(posemb: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """[1, n_old, w] -> [1, n_new, w]; a leading class token is kept."""
  old, new = posemb.shape[1], shape[1]
  prefix = 0 if _is_square(old) and _is_square(new) else 1
  grid = int(round((new - prefix) ** 0.5))
  return pretrained.resize_posemb(posemb, (grid, grid), num_prefix_tokens=prefix)


def _is_square(n: int) -> bool:
  return int(round(n ** 0.5)) ** 2 == n


_FORMATS = ('aisci', 'vit_npz', 'hf_vit', 'hf_bert', 'hf_resnet')


def check(init_config: Any) -> tuple[str, str]:
  """(path, format) of `config.init`; a missing path or an unknown format
  is an error. The loop calls it before compiling anything, since the
  weights are read only once the model's fresh state exists."""
  path = os.path.expanduser(init_config.path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'config.init.path={path!r} does not exist.')
  fmt = init_config.format
  if fmt == 'auto':
    fmt = detect_format(path)
  if fmt not in _FORMATS:
    raise ValueError(f'Unknown config.init.format {fmt!r}; known: auto, '
                     f'{", ".join(_FORMATS)}.')
  return path, fmt


def load(init_config: Any, template_variables: Mapping[str, Any]) -> dict[str, Any]:
  """Variables ({'params': ..., other collections}) to start training from.

  template_variables: the freshly initialised variables of the new model.
  """
  path, fmt = check(init_config)
  reinit = tuple(init_config.reinit)
  template = pretrained.flatten(template_variables)
  if fmt == 'aisci':
    source = read_aisci_checkpoint(path)
  elif fmt == 'vit_npz':
    source = {f'params/{k.removeprefix("params/")}': v
              for k, v in pretrained.read_npz(path).items()}
  else:  # a Hugging Face file (check() allows no other format)
    loader = getattr(pretrained, f'load_{fmt}')
    return loader(path, template_variables, keep_init=reinit)
  merged = merge(source, template, reinit, f'config.init.path={path!r}')
  logging.info('Initialised %d arrays from %s (%s).', len(merged), path, fmt)
  return pretrained.unflatten(merged)
