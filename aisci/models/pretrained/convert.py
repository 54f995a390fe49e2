"""Checkpoint arrays -> aisci variable trees, checked name by name against the model.

A source format is a list of rules `(regex on the source module name, aisci
module path (or a function of the match), kind)`; `kind` says how the
module's tensors map (PyTorch layouts to flax: Linear [out, in] -> Dense
[in, out], Conv [out, in, h, w] -> [h, w, in, out], attention projections
split into heads). `load` reads a file, applies the rules and checks the
result against the model's template.
"""

import os
import re
from typing import Any, Callable, Mapping, Sequence, Union

import jax
import numpy as np

Source = Union[str, os.PathLike, Mapping[str, Any]]
Rule = tuple[str, Union[str, Callable[[re.Match], str]], str]

# Kinds: 'tensor' (the whole name matches; the array is taken as it is),
# 'drop' (the whole name matches; not a weight), and per-module kinds whose
# tensors are named `<module>.<suffix>`: 'dense', 'conv', 'qkv' (Dense to
# [in, heads, head_dim]), 'out' (Dense from [heads, head_dim, out]), 'ln',
# 'bn' (scale/bias to params, running statistics to batch_stats), 'embed'.


def read_safetensors(path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return load_file(os.fspath(path))


def read_npz(path) -> dict[str, np.ndarray]:
  with np.load(os.fspath(path), allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def flatten(tree: Mapping[str, Any], sep: str = '/') -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update({f'{key}{sep}{k}': v for k, v in flatten(value, sep).items()})
    else:
      flat[key] = value
  return flat


def unflatten(flat: Mapping[str, Any], sep: str = '/') -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split(sep)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def resize_posemb(posemb, new_grid: tuple[int, int], *,
                  num_prefix_tokens: int = 1, old_grid=None) -> np.ndarray:
  """Resizes ViT position embeddings to a new patch grid (new image size).

  Bilinear on the grid, with half-pixel centres and no antialiasing, as
  PyTorch's `interpolate(mode='bilinear', align_corners=False)`; the class
  token's embedding is kept as it is.

  Args:
    posemb: `[1, num_prefix_tokens + gh * gw, width]`.
    new_grid: `(gh', gw')`, e.g. (24, 24) for 384x384 images and 16x16
      patches.
    num_prefix_tokens: 1 for aisci ViT with `pool='token'`, 0 with 'gap'.
    old_grid: `(gh, gw)`; None assumes a square grid.

  Returns:
    `[1, num_prefix_tokens + gh' * gw', width]` float32.
  """
  posemb = np.asarray(posemb, np.float32)
  prefix, grid = (posemb[:, :num_prefix_tokens],
                  posemb[:, num_prefix_tokens:])
  n, width = grid.shape[1:]
  if old_grid is None:
    side = int(round(np.sqrt(n)))
    if side * side != n:
      raise ValueError(f'{n} position embeddings are not a square grid: '
                       'pass old_grid=(height, width).')
    old_grid = (side, side)
  grid = grid.reshape(1, *old_grid, width)
  grid = jax.image.resize(grid, (1, *new_grid, width), method='bilinear',
                          antialias=False)
  grid = np.asarray(grid).reshape(1, new_grid[0] * new_grid[1], width)
  return np.concatenate([prefix, grid], axis=1)


def _tensors(kind: str, suffix: str, x: np.ndarray, heads: int):
  """A source tensor -> (collection, aisci leaf name, array), or None (drop)."""
  if kind in ('dense', 'conv', 'qkv', 'out'):
    if suffix == 'bias':
      return 'params', 'bias', x.reshape(heads, -1) if kind == 'qkv' else x
    if suffix != 'weight':
      raise KeyError(suffix)
    if kind == 'conv':  # PyTorch [out, in, h, w] -> flax [h, w, in, out].
      return 'params', 'kernel', x.transpose(2, 3, 1, 0)
    x = x.T  # PyTorch Linear [out, in] -> flax Dense [in, out].
    if kind == 'qkv':  # [in, heads * head_dim] -> [in, heads, head_dim].
      x = x.reshape(x.shape[0], heads, -1)
    elif kind == 'out':  # [heads * head_dim, out] -> [heads, head_dim, out].
      x = x.reshape(heads, -1, x.shape[-1])
    return 'params', 'kernel', x
  if kind == 'ln':
    name = {'weight': 'scale', 'gamma': 'scale', 'bias': 'bias',
            'beta': 'bias'}[suffix]
    return 'params', name, x
  if kind == 'bn':
    if suffix == 'num_batches_tracked':
      return None
    return {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
            'running_mean': ('batch_stats', 'mean'),
            'running_var': ('batch_stats', 'var')}[suffix] + (x,)
  if kind == 'embed':
    if suffix != 'weight':
      raise KeyError(suffix)
    return 'params', 'embedding', x
  raise ValueError(f'Unknown kind {kind!r}.')


def _convert(tensors: Mapping[str, np.ndarray], rules: Sequence[Rule], *,
             heads: int = 0):
  """Source names -> ({'collection/aisci/name': array}, [unconverted names])."""
  converted, unconverted = {}, []
  for key, x in tensors.items():
    x = np.asarray(x)
    for pattern, target, kind in rules:
      whole = kind in ('tensor', 'drop')
      module, _, suffix = key.rpartition('.')
      m = re.fullmatch(pattern, key if whole else module)
      if not m:
        continue
      path = target(m) if callable(target) else m.expand(target)
      if kind == 'drop':
        break
      if kind == 'tensor':
        converted[f'params/{path}'] = x
        break
      try:
        out = _tensors(kind, suffix, x, heads)
      except KeyError:
        continue
      if out is not None:
        converted[f'{out[0]}/{path}/{out[1]}'] = out[2]
      break
    else:
      unconverted.append(key)
  return converted, unconverted


def load(source: Source, template, rules: Sequence[Rule], *, what: str,
         strip_prefix: str = '', rename: Sequence[tuple[str, str]] = (),
         ignore: Sequence[str] = (), keep_init: Sequence[str] = (),
         hint: str = '') -> dict[str, Any]:
  """Reads, renames and converts `source`; checks it against `template`.

  Args:
    source: a `.safetensors` or `.npz` path, or a mapping name -> array.
    template: the model's variables, or their shapes (`jax.eval_shape`).
    rules: the source format's rules (see the module docstring).
    what: the source, for error messages.
    strip_prefix: removed from source names that start with it.
    rename: (regex, replacement) applied to source names before the rules.
    ignore: prefixes of source or aisci names to drop from the file.
    keep_init: prefixes of aisci names to take from `template` (which must
      then hold arrays) instead of the file, e.g. ('head',).
    hint: appended to the error message.

  Returns:
    Variables shaped like `template` ({'params': ..., ...}), numpy arrays
    in the template's dtypes.
  """
  if isinstance(source, Mapping):
    tensors = dict(source)
  elif os.fspath(source).endswith('.npz'):
    tensors = read_npz(source)
  else:
    tensors = read_safetensors(source)
  tensors = {k.removeprefix(strip_prefix) if strip_prefix else k: v
             for k, v in tensors.items()}
  for pattern, replacement in rename:
    tensors = {re.sub(pattern, replacement, k): v for k, v in tensors.items()}
  ignored = lambda name: any(name.startswith(p) for p in ignore)
  tensors = {k: v for k, v in tensors.items() if not ignored(k)}

  expected = flatten(template)
  heads = next((v.shape[-2] for k, v in expected.items()
                if k.endswith('/query/kernel')), 0)
  converted, unconverted = _convert(tensors, rules, heads=heads)
  name_of = lambda key: key.partition('/')[2]  # Drops the collection.
  converted = {k: v for k, v in converted.items() if not ignored(name_of(k))}
  kept = {k for k in expected
          if any(name_of(k).startswith(p) for p in keep_init)}
  if any(not isinstance(expected[k], (np.ndarray, jax.Array)) for k in kept):
    raise ValueError(f'keep_init={tuple(keep_init)} needs a template of '
                     'initialised variables (model.init), not shapes.')
  converted = {k: v for k, v in converted.items() if k not in kept}

  missing = sorted(set(expected) - set(converted) - kept)
  unexpected = sorted(set(converted) - set(expected)) + [
      f'{k} (source name, not converted)' for k in sorted(unconverted)]
  misshaped = sorted(
      f'{k}: file {converted[k].shape} vs model {tuple(expected[k].shape)}'
      for k in set(converted) & set(expected)
      if converted[k].shape != tuple(expected[k].shape))
  if missing or unexpected or misshaped:
    lines = [f'{what} does not fit the model:']
    for title, names in (('missing', missing), ('unexpected', unexpected),
                         ('mis-shaped', misshaped)):
      if names:
        lines.append(f'  {title} ({len(names)}):')
        lines += [f'    {n}' for n in names]
    if any('pos_embedding' in m for m in misshaped):
      lines.append('  Another image size changes pos_embedding: resize it '
                   'with aisci.models.pretrained.resize_posemb.')
    lines.append('  Check the model config against the checkpoint\'s; '
                 'ignore=(...) drops file entries, keep_init=(...) keeps '
                 'model entries (e.g. a new head) at their initial values.'
                 + hint)
    raise ValueError('\n'.join(lines))
  flat = {k: np.asarray(v, expected[k].dtype) for k, v in converted.items()}
  flat.update({k: expected[k] for k in kept})
  return unflatten(flat)
