"""Gradient accumulation: k micro-batches give the update of one k-times
larger batch, in less memory; BatchNorm statistics are threaded through."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models, tasks
from aisci.train import grad_accum, optimizer, steps
from configs import resnet_cifar, vit_cifar


def _setup(config, model=None):
  model = model or models.build_model(config.model, num_classes=10)
  task = tasks.build_task(config.task, num_classes=10)
  tx, schedule = optimizer.make_optimizer(config)
  state = steps.initial_state(jax.random.PRNGKey(0), model, tx,
                              jnp.zeros((1, 16, 16, 3)))
  return model, task, tx, schedule, state


def _batch(n, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, size, size, 3)).astype(np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def test_micro_batches_are_strided_rows():
  x = jnp.arange(12).reshape(12, 1)
  micro = grad_accum.split_micro_batches({'x': x}, 3)['x']
  chex.assert_shape(micro, (3, 4, 1))
  np.testing.assert_array_equal(micro[1, :, 0], [1, 4, 7, 10])
  with pytest.raises(ValueError, match='grad_accum_steps=5'):
    grad_accum.split_micro_batches({'x': x}, 5)


def test_accumulated_step_equals_big_batch_step_in_less_memory():
  config = vit_cifar.get_config('tiny')
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2,
                      patch_size=4, head_zero_init=False)
  # Plain SGD: the update is the gradient times the rate, so comparing
  # updates compares gradients (Adam's first step is ~sign(g)).
  config.optimizer.update(name='sgd', momentum=0.0, learning_rate=1.0)
  config.schedule.warmup_steps = 0
  model, task, tx, schedule, state = _setup(config)
  batch = _batch(32)
  results = {}
  for k in (1, 4):
    step = jax.jit(functools.partial(
        steps.train_step, model=model, task=task, tx=tx, schedule=schedule,
        grad_accum_steps=k))
    compiled = step.lower(state, batch).compile()
    new_state, metrics = compiled(state, batch)
    updates = jax.tree.map(jnp.subtract, new_state.params, state.params)
    memory = compiled.memory_analysis()
    results[k] = (updates, metrics,
                  memory.temp_size_in_bytes if memory else None)
  chex.assert_trees_all_close(results[4][0], results[1][0], atol=1e-6, rtol=1e-4)
  for key in ('loss', 'grad_norm', 'accuracy'):
    np.testing.assert_allclose(results[4][1][key], results[1][1][key], rtol=1e-5)
  assert float(results[1][1]['grad_norm']) > 0.1  # a real gradient
  if results[1][2] is not None:  # XLA's own count of the step's scratch memory
    assert results[4][2] < 0.6 * results[1][2], (results[4][2], results[1][2])


class TinyBatchNormNet(nn.Module):
  """Conv -> BatchNorm -> mean pool -> Dense: the smallest model with
  batch statistics."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(10)(nn.relu(x).mean(axis=(1, 2)))


def test_batchnorm_statistics_are_threaded_through_micro_batches():
  config = resnet_cifar.get_config('tiny')
  config.schedule.warmup_steps = 0
  model, task, tx, schedule, state = _setup(config, TinyBatchNormNet())
  batch = _batch(8)
  new_state, _ = jax.jit(functools.partial(
      steps.train_step, model=model, task=task, tx=tx, schedule=schedule,
      grad_accum_steps=2))(state, batch)
  # Independently: the model applied in training mode to micro-batch 0
  # (rows 0, 2, 4, 6), then to micro-batch 1, updating the statistics.
  variables = {'params': state.params, **state.model_state}
  for i in (0, 1):
    _, updated = model.apply(variables, batch['image'][i::2], train=True,
                             mutable=['batch_stats'])
    variables = {'params': state.params, **updated}
  chex.assert_trees_all_close(new_state.model_state['batch_stats'],
                              variables['batch_stats'], atol=1e-6, rtol=1e-5)
  # ... which differ from one update with the statistics of the whole batch.
  _, whole = model.apply({'params': state.params, **state.model_state},
                         batch['image'], train=True, mutable=['batch_stats'])
  assert not np.allclose(whole['batch_stats']['BatchNorm_0']['mean'],
                         variables['batch_stats']['BatchNorm_0']['mean'])
