"""Semantic segmentation: a class per pixel, judged by Dice and IoU."""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aisci.metrics import segmentation as segmentation_metrics

LOSSES = ('ce', 'dice', 'ce+dice')


def soft_dice_loss(logits: jax.Array, labels: jax.Array, num_classes: int,
                   smooth: float = 1.0) -> jax.Array:
  """1 - mean over classes of soft Dice, pooled over the batch's pixels.

  logits: [batch, height, width, classes]; labels: [batch, height, width].
  """
  probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  axes = tuple(range(logits.ndim - 1))
  intersection = (probabilities * one_hot).sum(axes)
  sizes = probabilities.sum(axes) + one_hot.sum(axes)
  return 1.0 - ((2.0 * intersection + smooth) / (sizes + smooth)).mean()


@dataclasses.dataclass(frozen=True)
class SegmentationTask:
  """Labels `batch[target]` ([batch, h, w] int32) against logits [batch, h, w, classes].

  loss_type: 'ce' (pixel cross-entropy), 'dice' (soft Dice) or 'ce+dice'
  (their sum; the usual choice when a class is thin, like cell membranes).
  """
  num_classes: int
  loss_type: str = 'ce+dice'
  dice_smooth: float = 1.0
  target: str = 'label'

  def __post_init__(self):
    if self.loss_type not in LOSSES:
      raise ValueError(f'config.task.loss_type must be one of {LOSSES}, not '
                       f'{self.loss_type!r}.')

  def loss(self, logits: jax.Array, batch: dict[str, jax.Array]
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss over the batch's pixels, and training metrics."""
    labels = batch[self.target]
    logits = logits.astype(jnp.float32)
    terms = {}
    if 'ce' in self.loss_type.split('+'):
      terms['ce'] = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    if 'dice' in self.loss_type.split('+'):
      terms['dice_loss'] = soft_dice_loss(logits, labels, self.num_classes,
                                          self.dice_smooth)
    total = sum(terms.values())
    accuracy = (jnp.argmax(logits, -1) == labels).astype(jnp.float32).mean()
    return total, dict(terms, pixel_accuracy=accuracy)

  def eval_sums(self, logits: jax.Array,
                batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Pixel confusion [true, predicted] and cross-entropy over real images."""
    labels, mask = batch[self.target], batch['mask']
    c = self.num_classes
    predictions = jnp.argmax(logits, axis=-1)
    weights = jnp.broadcast_to(mask[:, None, None], labels.shape).astype(jnp.int32)
    confusion = jnp.zeros((c * c,), jnp.int32).at[
        (labels * c + predictions).ravel()].add(weights.ravel()).reshape(c, c)
    per_image = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels).mean(axis=(1, 2))
    weights_f = mask.astype(jnp.float32)
    return {'loss_sum': (per_image * weights_f).sum(), 'count': weights_f.sum(),
            'confusion': confusion}

  def summarize(self, sums: dict[str, np.ndarray], class_names: Sequence[str]
                ) -> tuple[dict[str, float], dict[str, Any]]:
    report = segmentation_metrics.segmentation_report(
        np.asarray(sums['confusion']), class_names)
    report['num_examples'] = int(round(float(sums['count'])))
    scalars = {'loss': float(sums['loss_sum']) / max(float(sums['count']), 1.0),
               'mean_dice': report['mean_dice'], 'mean_iou': report['mean_iou'],
               'pixel_accuracy': report['pixel_accuracy']}
    for name, r in report['per_class'].items():
      scalars[f'dice_{name}'] = r['dice']
    return scalars, report

  def format_report(self, report: dict[str, Any]) -> str:
    return segmentation_metrics.format_report(report)
