"""A few evaluation examples with the model's outputs, for the pictures.

The report needs examples with their predictions (misclassified images,
segmentation overlays). They are computed here, on process 0's share of the
evaluation split, with one local copy of the parameters: no collective
runs, so the other processes need not take part.
"""

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np


def predict_fn(model: nn.Module):
  """Jitted (variables, inputs) -> the model's outputs in evaluation mode
  (logits [batch, classes], or a dict of them for a multi-head model).

  A closure rather than a static argument: not every module hashes (a
  multi_head model holds a dict of heads)."""
  return jax.jit(lambda variables, inputs: model.apply(variables, inputs,
                                                       train=False))


def _local_copy(x: Any) -> Any:
  """A replicated (or single-process) global array -> one device's copy."""
  if isinstance(x, jax.Array) and x.is_fully_replicated:
    return x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def collect(model: nn.Module, params: Any, model_state: Mapping[str, Any],
            batches: Any, input_key: str, *,
            max_examples: int = 1000) -> Optional[dict[str, np.ndarray]]:
  """Up to `max_examples` real (mask True) examples with their 'outputs'.

  Args:
    model: the Flax module (called with train=False).
    params, model_state: the trained variables (global arrays).
    batches: evaluation batches (dicts of arrays with a 'mask' of real rows):
      a tf.data.Dataset, whose length spreads the examples over the split
      (the first max_examples / length rows of every batch: an evaluation
      split sorted by class gives every class), or any iterable (its first
      rows).
    input_key: the model's input in a batch (task.input_key).
    max_examples: at most this many.
  Returns:
    The chosen rows' arrays, concatenated, padding rows dropped, plus
    'outputs': the model's outputs for them; None if there are none.
  """
  rows = max_examples
  if hasattr(batches, 'cardinality'):  # tf.data.Dataset
    length = int(batches.cardinality())
    rows = -(-max_examples // length) if length > 0 else max_examples
    batches = batches.as_numpy_iterator()
  variables = jax.tree.map(_local_copy, {'params': params, **model_state})
  predict = predict_fn(model)
  parts, count = [], 0
  for batch in batches:
    batch = {k: np.asarray(v)[:rows] for k, v in batch.items()}
    real = np.asarray(batch.get('mask', np.ones(len(batch[input_key]), bool)),
                      bool)
    outputs = predict(variables, batch[input_key])
    part = {k: np.asarray(v)[real] for k, v in batch.items()}
    part['outputs'] = jax.tree.map(lambda x: np.asarray(x)[real], outputs)
    parts.append(part)
    count += int(real.sum())
    if count >= max_examples:
      break
  if not count:
    return None
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:max_examples], *parts)
