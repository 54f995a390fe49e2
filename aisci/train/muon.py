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
"""

import functools
from typing import Any, Callable

import jax
import optax

# path (as jax.tree_util gives it) -> True for parameters kept on AdamW even
# if they are matrices: optimizer.py passes the input side and the head.
AdamwOnly = Callable[[tuple], bool]


def _dimension_numbers(adamw_only: AdamwOnly, path, x
                       ) -> optax.contrib.MuonDimensionNumbers | None:
  """How a parameter is read as a matrix, None if it is not one for Muon."""
  keys = [getattr(k, 'key', None) for k in path]
  if keys[-1] != 'kernel' or x.ndim < 2 or adamw_only(path):
    return None
  # nn.MultiHeadDotProductAttention's DenseGeneral kernels.
  if x.ndim == 3 and len(keys) > 1 and keys[-2] == 'out':
    return optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1),
                                              output_axis=2)
  if x.ndim == 3 and len(keys) > 1 and keys[-2] in ('query', 'key', 'value'):
    return optax.contrib.MuonDimensionNumbers(reduction_axis=0,
                                              output_axis=(1, 2))
  return optax.contrib.MuonDimensionNumbers(
      reduction_axis=tuple(range(x.ndim - 1)), output_axis=x.ndim - 1)


def labels(params: Any, adamw_only: AdamwOnly) -> Any:
  """'muon' or 'adamw' for each parameter."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: 'adamw' if _dimension_numbers(adamw_only, path, x) is None
      else 'muon', params)


def muon(learning_rate: optax.ScalarOrSchedule, *, momentum: float,
         weight_decay: float, b1: float, b2: float, weight_decay_mask: Any,
         adamw_only: AdamwOnly) -> optax.GradientTransformation:
  """Muon (Nesterov momentum `momentum`, decoupled weight decay) on the
  matrices of `labels`, AdamW (b1, b2, weight decay where
  `weight_decay_mask` is True) on the rest, both at `learning_rate`."""

  def dimension_numbers(params):
    # Called on the Muon part only: the other leaves are masked away.
    return jax.tree_util.tree_map_with_path(
        functools.partial(_dimension_numbers, adamw_only), params)

  return optax.multi_transform({
      'muon': optax.contrib.muon(
          learning_rate, beta=momentum, nesterov=True,
          weight_decay=weight_decay, consistent_rms=0.2,
          muon_weight_dimension_numbers=dimension_numbers),
      'adamw': optax.adamw(learning_rate, b1=b1, b2=b2,
                           weight_decay=weight_decay, mask=weight_decay_mask),
  }, functools.partial(labels, adamw_only=adamw_only))
