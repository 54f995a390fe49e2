"""Muon (optax.contrib.muon) on the hidden weight matrices, AdamW on the rest.

Muon orthogonalises each matrix's momentum with Newton-Schulz iterations
(Jordan 2024; Liu et al. 2025). As in those recipes, only the hidden layers'
kernels take it: the input side (patch embedding, stem, token embeddings)
and the classifier head (optimizer.py's `muon_adamw_only`), biases, norms
and position embeddings stay with AdamW.
Updates are scaled to AdamW's RMS (`consistent_rms=0.2`, Liu et al.), so an
AdamW recipe's learning rate and weight decay carry over as a start.

Kernels of more than two axes are orthogonalised as matrices:
  Dense [in, out]; DenseGeneral q/k/v [in, heads, head_dim] -> [in, heads *
  head_dim]; attention out [heads, head_dim, out] -> [heads * head_dim, out];
  Conv [kh, kw, in, out] -> [kh * kw * in, out].
The heads of a multi-task model (aisci/models/heads.py, named after their
tasks) count as hidden layers.

Matrices of one shape are stacked, [n, fan_in, fan_out], and Muon runs on
the stacks (its state, too, is kept per stack): a few batched matrix
products per Newton-Schulz iteration instead of a few per matrix. Given the
training mesh, each stack is split over its batch axes (data, fsdp) when
their size divides it, so that each of D data-parallel devices
orthogonalises n / D of the matrices instead of all of them; XLA gathers
the updates after. Measured on 2 CPU cores: benchmarks/README.md, "Muon's
share of the step".
"""

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import optax

from aisci.train import sharding as sharding_lib

# path (as jax.tree_util gives it) -> True for parameters kept on AdamW even
# if they are matrices: optimizer.py passes the input side and the head.
AdamwOnly = Callable[[tuple], bool]

# A stack [n, fan_in, fan_out]: one batch axis, then the matrix.
_STACK_DIMENSIONS = optax.contrib.MuonDimensionNumbers(reduction_axis=1,
                                                       output_axis=2)


def _fan_in_axes(adamw_only: AdamwOnly, path, x) -> Optional[int]:
  """How many leading axes of a parameter make its matrix's rows (the rest
  its columns); None if it is not a matrix for Muon."""
  keys = [getattr(k, 'key', None) for k in path]
  if keys[-1] != 'kernel' or x.ndim < 2 or adamw_only(path):
    return None
  # nn.MultiHeadDotProductAttention's DenseGeneral kernels.
  if x.ndim == 3 and len(keys) > 1 and keys[-2] == 'out':
    return 2
  if x.ndim == 3 and len(keys) > 1 and keys[-2] in ('query', 'key', 'value'):
    return 1
  return x.ndim - 1


def labels(params: Any, adamw_only: AdamwOnly) -> Any:
  """'muon' or 'adamw' for each parameter."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: 'adamw' if _fan_in_axes(adamw_only, path, x) is None
      else 'muon', params)


def _matrix_shapes(tree: Any, adamw_only: AdamwOnly) -> list[tuple[int, int]]:
  """(fan_in, fan_out) of each leaf of `tree` (Muon's matrices only)."""
  shapes = []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    fan_in_axes = _fan_in_axes(adamw_only, path, x)
    if fan_in_axes is None:
      raise ValueError(f'{jax.tree_util.keystr(path)} {x.shape} is not one '
                       "of Muon's matrices (labels(): 'adamw').")
    rows = math.prod(x.shape[:fan_in_axes])
    shapes.append((rows, x.size // rows))
  return shapes


def stack(tree: Any, adamw_only: AdamwOnly) -> dict[str, jax.Array]:
  """{'FAN_INxFAN_OUT': [n, fan_in, fan_out]}: the matrices of `tree`
  grouped by shape, in leaf order."""
  stacks = {}
  for shape, x in zip(_matrix_shapes(tree, adamw_only), jax.tree.leaves(tree)):
    stacks.setdefault('%dx%d' % shape, []).append(x.reshape(shape))
  return {key: jnp.stack(matrices) for key, matrices in stacks.items()}


def unstack(stacks: dict[str, jax.Array], like: Any,
            adamw_only: AdamwOnly) -> Any:
  """The inverse of `stack`: a tree shaped as `like`."""
  leaves, treedef = jax.tree.flatten(like)
  taken = dict.fromkeys(stacks, 0)
  out = []
  for shape, x in zip(_matrix_shapes(like, adamw_only), leaves):
    key = '%dx%d' % shape
    out.append(stacks[key][taken[key]].reshape(x.shape))
    taken[key] += 1
  return jax.tree.unflatten(treedef, out)


def _split_over_devices(mesh: Optional[Mesh]
                        ) -> Callable[[dict[str, jax.Array]], dict]:
  """Constrains each stack to be split along its first axis over the mesh's
  batch axes (when they divide it); the identity without a mesh or on one
  device."""
  axes = sharding_lib.batch_axes(mesh) if mesh is not None else ()
  devices = math.prod(mesh.shape[a] for a in axes)
  if devices == 1:
    return lambda stacks: stacks
  split = NamedSharding(mesh, P(axes))

  def constrain(stacks):
    return {key: (jax.lax.with_sharding_constraint(s, split)
                  if len(s) % devices == 0 else s)
            for key, s in stacks.items()}
  return constrain


def _on_stacks(inner: optax.GradientTransformation, adamw_only: AdamwOnly,
               mesh: Optional[Mesh]) -> optax.GradientTransformation:
  """`inner` applied to the stacks of the matrices (`stack`)."""
  split = _split_over_devices(mesh)

  def init_fn(params):
    return inner.init(stack(params, adamw_only))

  def update_fn(updates, state, params=None):
    stacked_params = None if params is None else stack(params, adamw_only)
    stacked, state = inner.update(split(stack(updates, adamw_only)), state,
                                  stacked_params)
    return unstack(split(stacked), updates, adamw_only), state

  return optax.GradientTransformation(init_fn, update_fn)


def muon(learning_rate: optax.ScalarOrSchedule, *, momentum: float,
         weight_decay: float, b1: float, b2: float, weight_decay_mask: Any,
         adamw_only: AdamwOnly, mesh: Optional[Mesh] = None
         ) -> optax.GradientTransformation:
  """Muon (Nesterov momentum `momentum`, decoupled weight decay) on the
  matrices of `labels`, AdamW (b1, b2, weight decay where
  `weight_decay_mask` is True) on the rest, both at `learning_rate`.
  mesh: the training mesh, to split the orthogonalisation over its batch
  axes (None: every device does all of it)."""
  muon_on_stacks = optax.contrib.muon(
      learning_rate, beta=momentum, nesterov=True, weight_decay=weight_decay,
      consistent_rms=0.2,
      muon_weight_dimension_numbers=lambda stacks: jax.tree.map(
          lambda _: _STACK_DIMENSIONS, stacks))
  return optax.multi_transform({
      'muon': _on_stacks(muon_on_stacks, adamw_only, mesh),
      'adamw': optax.adamw(learning_rate, b1=b1, b2=b2,
                           weight_decay=weight_decay, mask=weight_decay_mask),
  }, functools.partial(labels, adamw_only=adamw_only))
