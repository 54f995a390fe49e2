"""aisci/train/step_profile.py: config.profile traces the chosen steps of a
real run into WORKDIR/profile with a per-operation summary, and the run
trains exactly as it would without it."""

import glob
import gzip
import json
import os

import chex
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from aisci.train import loop
from aisci.train import step_profile
from configs import vit_cifar


def _config(dataset, **profile):
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{dataset}'
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=250)
  config.update(total_steps=6, log_every_steps=3, eval_every_steps=1000,
                checkpoint_every_steps=6)
  config.profile.update(profile)
  return config


def _params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  params = manager.restore(manager.latest_step())['params']
  manager.close()
  return params


def test_profiled_steps_are_traced_and_train_the_same(cifar10_small, tmp_path,
                                                      caplog):
  caplog.set_level('INFO', logger='absl')  # whatever absl's verbosity
  plain, profiled = str(tmp_path / 'plain'), str(tmp_path / 'profiled')
  loop.train_and_evaluate(_config(cifar10_small), plain)
  loop.train_and_evaluate(
      _config(cifar10_small, start_step=2, num_steps=3), profiled)
  chex.assert_trees_all_close(_params(profiled), _params(plain), rtol=0, atol=0)
  assert not os.path.exists(os.path.join(plain, step_profile.SUBDIR))
  (folder,) = glob.glob(os.path.join(profiled, 'profile', 'plugins',
                                     'profile', '*'))
  with gzip.open(os.path.join(folder, 'perfetto_trace.json.gz'), 'rt') as f:
    events = json.load(f)['traceEvents']
  # Three train steps ran while tracing: their executions are in it.
  executions = [e for e in events if e.get('ph') == 'X'
                and 'train_step' in e.get('name', '')]
  assert len(executions) >= 3, sorted({e.get('name') for e in events})[:50]
  assert glob.glob(os.path.join(folder, '*.xplane.pb'))
  with open(os.path.join(folder, step_profile.SUMMARY_FILE)) as f:
    summary = f.read()
  assert summary.startswith('# Steps 3-5: where the time goes')
  shares = [float(line.split('|')[3].strip(' %'))
            for line in summary.split('## The')[0].splitlines()
            if line.startswith('| fusion') or line.startswith('| dot')]
  assert shares and 0 < sum(shares) <= 100.1
  # Layers are named by the model's module path (the conv stem leads in
  # this small ViT; the optimizer's update has rows too).
  layers = [line for line in summary.split('## The')[1].splitlines()
            if line.startswith('| ') and '`' in line]
  assert len(layers) == 15
  assert sum('/ViT._encode/' in line for line in layers) >= 8, layers
  messages = [r.getMessage() for r in caplog.records]
  assert any(m.startswith('Profile of steps 3-5') and folder in m
             for m in messages), messages


def test_a_window_outside_the_run_traces_nothing(tmp_path, caplog):
  caplog.set_level('INFO', logger='absl')  # whatever absl's verbosity
  profiler = step_profile.StepProfiler(
      {'start_step': 10, 'num_steps': 2}, str(tmp_path), first_step=12,
      end_step=20)  # a run resumed after the window
  assert not profiler.active
  assert any('steps 11-12 are not among the steps this run trains (13-20)'
             in r.getMessage() for r in caplog.records)
  assert not step_profile.StepProfiler(None, str(tmp_path), 0, 20).active
  assert not step_profile.StepProfiler(
      {'start_step': 10, 'num_steps': 0}, str(tmp_path), 0, 20).active


@pytest.mark.parametrize('start_step,num_steps', [(-1, 2), (3, -2)])
def test_negative_settings_are_a_clear_error(tmp_path, start_step, num_steps):
  with pytest.raises(ValueError, match='config.profile.start_step=.* must be '
                     '>= 0'):
    step_profile.StepProfiler({'start_step': start_step,
                               'num_steps': num_steps}, str(tmp_path), 0, 20)


def test_a_run_that_stops_inside_the_window_ends_the_trace(tmp_path):
  step = jax.jit(lambda x: jnp.sin(x) * 2)
  state = jnp.ones(8)
  profiler = step_profile.StepProfiler({'start_step': 1, 'num_steps': 5},
                                       str(tmp_path), 0, 10)
  for i in range(3):  # the loop leaves (an exception, preemption) at step 3
    profiler.before_step(i, state)
    state = step(state)
    assert profiler.after_step(i + 1, state) is None
  profiler.close()
  # Closed: a new trace can start (jax refuses a second one otherwise).
  jax.profiler.start_trace(str(tmp_path / 'again'))
  jax.profiler.stop_trace()
