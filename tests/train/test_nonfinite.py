"""config.optimizer.skip_nonfinite_updates: a NaN/Inf step keeps the old
state and is counted; without it the run stops (test_loop.py checks the
message and the last good checkpoint)."""

import functools
import json
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aisci import tasks
from aisci.train import loop
from aisci.train import nonfinite
from aisci.train import optimizer
from aisci.train import steps
from configs import vit_cifar


class TinyBatchNormNet(nn.Module):
  """Dense -> BatchNorm -> relu -> Dense: cheap to compile, with model state."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    return nn.Dense(10)(x)


@pytest.mark.parametrize('bad_value', [np.nan, np.inf])
def test_guarded_step_keeps_the_old_state_on_a_bad_batch(bad_value):
  config = vit_cifar.get_config('tiny')
  model = TinyBatchNormNet()
  task = tasks.build_task(config.task, num_classes=10)
  tx, schedule = optimizer.make_optimizer(config)
  state = steps.initial_state(jax.random.PRNGKey(0), model, tx,
                              jnp.zeros((1, 8, 8, 3)))
  step = functools.partial(steps.train_step, model=model, task=task, tx=tx,
                           schedule=schedule)
  guarded = jax.jit(nonfinite.guard(step))
  rng = np.random.default_rng(0)
  good = {'image': rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
          'label': rng.integers(0, 10, 8).astype(np.int32)}
  bad = dict(good, image=good['image'].copy())
  bad['image'][3, 5, 5, 1] = bad_value

  after_bad, metrics = guarded(state, bad)
  assert metrics[nonfinite.SKIPPED] == 1.0
  assert int(after_bad.step) == 1  # the data position moves on
  # Parameters, optimizer state, BatchNorm statistics and rng: unchanged.
  chex.assert_trees_all_equal(after_bad.replace(step=state.step), state)
  plain_bad, _ = jax.jit(step)(state, bad)  # what the guard kept out
  assert not all(np.isfinite(x).all() for x in jax.tree.leaves(plain_bad))

  after_good, metrics = guarded(state, good)
  plain, plain_metrics = jax.jit(step)(state, good)
  assert metrics[nonfinite.SKIPPED] == 0.0
  chex.assert_trees_all_equal(after_good, plain)  # bitwise the plain step
  assert metrics['loss'] == plain_metrics['loss']
  assert not np.array_equal(after_good.model_state['batch_stats']['BatchNorm_0']['mean'],
                            state.model_state['batch_stats']['BatchNorm_0']['mean'])


def test_interval_means_leave_out_skipped_steps_and_count_them():
  fetched = [dict(loss=2.0, grad_norm=1.0, skipped=0.0),
             dict(loss=float('nan'), grad_norm=float('nan'), skipped=1.0),
             dict(loss=4.0, grad_norm=3.0, skipped=0.0)]
  assert nonfinite.interval_means(fetched) == dict(loss=3.0, grad_norm=2.0,
                                                   skipped=1.0)
  assert nonfinite.interval_means([dict(loss=1.0), dict(loss=2.0)]) == dict(loss=1.5)


def small_config(dataset, **optimizer_fields):
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{dataset}'
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=250)
  # From the first update on, the weights are ~1e30 and every later loss
  # overflows: NaN from step 2.
  config.optimizer.update(learning_rate=1e30, **optimizer_fields)
  config.schedule.warmup_steps = 0
  config.update(total_steps=8, log_every_steps=4, eval_every_steps=1000,
                checkpoint_every_steps=4, keep_checkpoints=2)
  return config


def test_loop_stops_by_default_and_skips_with_the_option(cifar10_small, tmp_path):
  config = small_config(cifar10_small)
  with pytest.raises(FloatingPointError, match=r'at step 2\..*no checkpoint.*'
                     r'skip_nonfinite_updates=True'):
    loop.train_and_evaluate(config, str(tmp_path / 'stops'))

  workdir = str(tmp_path / 'skips')
  config = small_config(cifar10_small, skip_nonfinite_updates=True)
  metrics = loop.train_and_evaluate(config, workdir)
  assert metrics is not None  # ran to the end and evaluated
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [r for r in map(json.loads, f) if 'train/loss' in r]
  # Steps 1-4: step 1 applied, 2-4 skipped; steps 5-8 all skipped.
  assert [(r['step'], r['train/skipped']) for r in train] == [(4, 3.0), (8, 4.0)]
  assert np.isfinite(train[0]['train/loss'])  # the mean of step 1 alone
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  saved = {step: manager.restore(step) for step in (4, 8)}
  manager.close()
  assert int(saved[8]['step']) == 8
  # Nothing after step 1 was applied, and what was saved is finite.
  chex.assert_trees_all_equal(saved[8]['params'], saved[4]['params'])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved[8]['params']))
