"""Regression metrics against numpy; multi-task weighted sums, and a task of
weight 0 leaves the shared backbone's gradient unchanged."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aisci import models
from aisci import tasks
from aisci.train import steps


def test_regression_split_metrics_equal_numpy():
  rng = np.random.default_rng(1)
  targets = rng.normal(size=(10, 2)).astype(np.float32)
  outputs = targets + rng.normal(scale=0.3, size=(10, 2)).astype(np.float32)
  mask = np.arange(10) < 8
  task = tasks.build_task(dict(name='regression', target='y'))
  sums = [task.eval_sums(jnp.asarray(outputs[i:i + 5]),
                         dict(y=targets[i:i + 5], mask=mask[i:i + 5])) for i in (0, 5)]
  scalars, report = task.summarize(jax.device_get(jax.tree.map(np.add, *sums)))
  t, o = targets[:8].astype(np.float64), outputs[:8].astype(np.float64)
  mse = ((o - t) ** 2).mean(0)
  r2 = 1 - ((o - t) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)
  np.testing.assert_allclose(report['mse'], mse, rtol=1e-5)
  np.testing.assert_allclose(report['r2'], r2, rtol=1e-4)
  np.testing.assert_allclose(scalars['mae'], np.abs(o - t).mean(), rtol=1e-5)


def test_target_index_picks_one_column():
  task = tasks.build_task(dict(name='regression', target='class_fractions',
                               target_index=0))
  batch = dict(class_fractions=np.array([[0.2, 0.8], [0.6, 0.4]], np.float32))
  loss, _ = task.loss(jnp.array([[0.2], [0.5]]), batch)
  np.testing.assert_allclose(loss, (0.1 ** 2) / 2, rtol=1e-5)


def multi_config(area_weight):
  return dict(name='multi', tasks=dict(
      mask=dict(name='segmentation', weight=1.0, loss_type='ce+dice'),
      area=dict(name='regression', weight=area_weight,
                target='class_fractions', target_index=0)))


def test_weighted_sum_and_zero_weight_leaves_backbone_gradient_unchanged():
  model = models.build_model(dict(
      name='multi_head', backbone=dict(name='unet', depth=2, base_width=4,
                                       norm='group'),
      heads=dict(mask=dict(kind='segmentation', num_outputs=2),
                 area=dict(kind='regression', num_outputs=1))), num_classes=2)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
  labels = rng.integers(0, 2, (2, 16, 16))
  batch = dict(label=labels, class_fractions=np.stack(
      [(labels == 0).mean((1, 2)), (labels == 1).mean((1, 2))], -1).astype(np.float32))
  params = steps.init_variables(model, jax.random.PRNGKey(0), images)['params']
  multi = tasks.build_task(multi_config(0.5), num_classes=2)
  zero_weight = tasks.build_task(multi_config(0.0), num_classes=2)
  seg_only = tasks.build_task(dict(name='segmentation', loss_type='ce+dice'),
                              num_classes=2)

  # One program for the loss and all three gradients: op by op, each of the
  # U-Net's ~400 primitives would compile on its own.
  @jax.jit
  def losses_and_grads(p):
    def grads(loss_of_outputs):
      return jax.grad(lambda q: loss_of_outputs(model.apply({'params': q},
                                                            images)))(p)
    return (multi.loss(model.apply({'params': p}, images), batch),
            grads(lambda out: zero_weight.loss(out, batch)[0]),
            grads(lambda out: seg_only.loss(out['mask'], batch)[0]),
            grads(lambda out: multi.loss(out, batch)[0]))

  (total, metrics), zero, reference, half = losses_and_grads(params)
  np.testing.assert_allclose(total, metrics['mask/loss'] + 0.5 * metrics['area/loss'],
                             rtol=1e-6)
  chex.assert_trees_all_close(zero['backbone'], reference['backbone'], atol=0, rtol=0)
  # With a positive weight the regression does reach the backbone.
  assert not np.allclose(
      jax.tree.leaves(half['backbone'])[0], jax.tree.leaves(reference['backbone'])[0])
