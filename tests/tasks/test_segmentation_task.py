"""Segmentation task: Dice/IoU over the whole split against a direct count,
batch sums that add up, the soft Dice loss, padding masks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import tasks


def direct_scores(labels, predictions, c):
  """Dice and IoU per class from pixel sets, the textbook way."""
  dice, iou = [], []
  for k in range(c):
    t, p = labels == k, predictions == k
    dice.append(2 * (t & p).sum() / (t.sum() + p.sum()))
    iou.append((t & p).sum() / (t | p).sum())
  return np.array(dice), np.array(iou)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, (6, 8, 8))
  logits = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
  # Most pixels predicted right, so the scores are far from chance.
  logits += 3.0 * np.eye(3, dtype=np.float32)[labels] * (rng.random((6, 8, 8, 1)) < 0.7)
  return logits, labels


def test_split_scores_equal_a_direct_count_and_batches_add_up(batch):
  logits, labels = batch
  task = tasks.build_task(dict(name='segmentation', loss_type='ce'), num_classes=3)
  mask = np.array([True] * 5 + [False])  # the last image is padding
  whole = task.eval_sums(jnp.asarray(logits), dict(label=labels, mask=mask))
  halves = [task.eval_sums(jnp.asarray(logits[i:i + 3]),
                           dict(label=labels[i:i + 3], mask=mask[i:i + 3]))
            for i in (0, 3)]
  chex.assert_trees_all_close(whole, jax.tree.map(np.add, *halves))
  scalars, report = task.summarize(jax.device_get(whole), ['a', 'b', 'c'])
  predictions = logits.argmax(-1)
  dice, iou = direct_scores(labels[:5], predictions[:5], 3)
  np.testing.assert_allclose([report['per_class'][n]['dice'] for n in 'abc'], dice, rtol=1e-6)
  np.testing.assert_allclose(scalars['mean_iou'], iou.mean(), rtol=1e-6)
  np.testing.assert_allclose(scalars['pixel_accuracy'],
                             (labels[:5] == predictions[:5]).mean(), rtol=1e-6)
  assert report['num_pixels'] == 5 * 64 and report['num_examples'] == 5
  assert scalars['mean_dice'] > 0.6


def test_soft_dice_loss_matches_formula_and_perfect_prediction_is_zero(batch):
  logits, labels = batch
  task = tasks.build_task(dict(name='segmentation', loss_type='dice',
                               dice_smooth=0.0), num_classes=3)
  loss, _ = task.loss(jnp.asarray(logits), dict(label=labels))
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  y = np.eye(3)[labels]
  expected = 1 - np.mean(2 * (p * y).sum((0, 1, 2)) / (p.sum((0, 1, 2)) + y.sum((0, 1, 2))))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  perfect, _ = task.loss(jnp.asarray(100.0 * y), dict(label=labels))
  assert float(perfect) < 1e-6
  both = tasks.build_task(dict(name='segmentation', loss_type='ce+dice'), num_classes=3)
  total, metrics = both.loss(jnp.asarray(logits), dict(label=labels))
  np.testing.assert_allclose(total, metrics['ce'] + metrics['dice_loss'], rtol=1e-6)


def test_unknown_loss_is_a_clear_error():
  with pytest.raises(ValueError, match='loss_type must be one of'):
    tasks.build_task(dict(name='segmentation', loss_type='focal'), num_classes=2)
  with pytest.raises(ValueError, match=r"fields \['loss'\] that task"):
    tasks.build_task(dict(name='segmentation', loss='ce'), num_classes=2)
