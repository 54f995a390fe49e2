"""Image (or sequence) classification: softmax cross-entropy and accuracy."""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aisci.metrics import classification as classification_metrics


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  """Labels `batch['label']` ([batch] int32) against logits [batch, classes]."""
  num_classes: int
  label_smoothing: float = 0.0
  input_key: str = 'image'  # unused: the data source names the model's input
  target: str = 'label'

  def loss(self, logits: jax.Array, batch: dict[str, jax.Array]
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean smoothed cross-entropy over the batch, and training metrics."""
    labels = batch[self.target]
    targets = optax.smooth_labels(
        jax.nn.one_hot(labels, self.num_classes), self.label_smoothing)
    loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
    accuracy = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return loss.mean(), {'accuracy': accuracy.mean()}

  def eval_sums(self, logits: jax.Array,
                batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Sums over the real (mask True) examples of one evaluation batch.

    The loss here is the plain cross-entropy (no label smoothing), so that
    evaluation loss compares across label-smoothing settings.
    """
    labels, mask = batch[self.target], batch['mask']
    weights = mask.astype(jnp.float32)
    predictions = jnp.argmax(logits, axis=-1)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
    # confusion[true, predicted]; padding rows have weight 0.
    confusion = jnp.einsum(
        'bt,bp->tp',
        jax.nn.one_hot(labels, self.num_classes) * weights[:, None],
        jax.nn.one_hot(predictions, self.num_classes)).astype(jnp.int32)
    return {'loss_sum': (loss * weights).sum(), 'count': weights.sum(),
            'confusion': confusion}

  def summarize(self, sums: dict[str, np.ndarray],
                class_names: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """Split-level scalars ({loss, accuracy}) and the full report."""
    confusion = np.rint(np.asarray(sums['confusion'])).astype(np.int64)
    report = classification_metrics.classification_report(confusion, class_names)
    count = max(float(sums['count']), 1.0)
    scalars = {'loss': float(sums['loss_sum']) / count,
               'accuracy': report['accuracy'],
               'macro_f1': report['macro avg']['f1']}
    return scalars, report

  def format_report(self, report: dict[str, Any]) -> str:
    return classification_metrics.format_report(report)
