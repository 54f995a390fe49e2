"""A few evaluation examples with the model's outputs, for the pictures.

The report needs examples with their predictions (misclassified images,
segmentation overlays). The final evaluation computes those outputs anyway:
the loop hands each of process 0's evaluation batches and the outputs for
its rows to an `ExampleCollector`, so the model does not run a second time
(a U-Net with 8-view test-time augmentation on 512x512 slices spent ~18 s
on that alone).
"""

from typing import Any, Mapping, Optional

import jax
import numpy as np


class ExampleCollector:
  """Keeps up to `max_examples` real (mask True) rows of evaluation batches
  with the model's outputs for them.

  With `num_batches` (the split's batch count) it keeps the first
  max_examples / num_batches rows of every batch: an evaluation split sorted
  by class then gives every class. Without it, the first rows.
  """

  def __init__(self, max_examples: int = 1000,
               num_batches: Optional[int] = None):
    self.max_examples = max_examples
    self.rows_per_batch = (-(-max_examples // num_batches)
                           if num_batches and num_batches > 0 else max_examples)
    self._parts = []
    self._count = 0

  @property
  def full(self) -> bool:
    return self._count >= self.max_examples

  def add(self, batch: Mapping[str, Any], outputs: Any) -> None:
    """batch: this process's rows of one evaluation batch (numpy; 'mask'
    marks real rows); outputs: the model's outputs for those rows, an array
    [rows, ...] or {head: array}."""
    if self.full:
      return
    rows = self.rows_per_batch
    batch = {k: np.asarray(v)[:rows] for k, v in batch.items()}
    any_value = next(iter(batch.values()))
    real = np.asarray(batch.get('mask', np.ones(len(any_value), bool)), bool)
    part = {k: v[real] for k, v in batch.items()}
    part['outputs'] = jax.tree.map(lambda x: np.asarray(x)[:rows][real],
                                   outputs)
    self._parts.append(part)
    self._count += int(real.sum())

  def result(self) -> Optional[dict[str, Any]]:
    """The kept rows' arrays, concatenated, plus 'outputs'; None if none."""
    if not self._count:
      return None
    return jax.tree.map(
        lambda *xs: np.concatenate(xs)[:self.max_examples], *self._parts)
