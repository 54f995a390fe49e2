"""End to end on real CIFAR-10 images: train, evaluate, report, checkpoint,
resume to the same parameters."""

import json
import os
import re

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aisci.train import loop
from configs import vit_cifar


def small_config(dataset, **overrides):
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{dataset}'
  config.model.update(width=48, depth=2, mlp_dim=96, num_heads=3, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=200)
  config.optimizer.learning_rate = 2e-3
  config.update(total_steps=12, log_every_steps=4, eval_every_steps=8,
                checkpoint_every_steps=4, keep_checkpoints=2)
  config.schedule.warmup_steps = 2
  config.update(overrides)
  return config


def final_params(workdir):
  checkpoints = os.path.join(workdir, 'checkpoints')
  manager = ocp.CheckpointManager(checkpoints)
  state = manager.restore(manager.latest_step())
  manager.close()
  return state['params']


def test_resumed_run_ends_with_the_same_parameters(cifar10_small, tmp_path):
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  config = small_config(cifar10_small)
  # dropout makes the test cover the per-step rng as well.
  config.model.dropout = 0.1
  loop.train_and_evaluate(config, straight)
  assert loop.train_and_evaluate(config, resumed, stop_at_step=6) is None
  assert sorted(os.listdir(os.path.join(resumed, 'checkpoints')))[-1] == '6'
  loop.train_and_evaluate(config, resumed)
  chex.assert_trees_all_close(final_params(straight), final_params(resumed),
                              rtol=0, atol=0)
  logs = {}
  for workdir in (straight, resumed):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      logs[workdir] = [r for r in map(json.loads, f) if 'train/loss' in r]
  # Logged before the stop and after the resume, nothing twice, and the
  # training loss of the last steps is that of the uninterrupted run.
  assert [r['step'] for r in logs[resumed]] == [4, 8, 12]
  assert logs[resumed][-1]['train/loss'] == logs[straight][-1]['train/loss']


def test_training_on_real_images_learns_and_writes_reports(cifar10_small, tmp_path):
  workdir = str(tmp_path / 'run')
  config = small_config(cifar10_small, total_steps=150, log_every_steps=50,
                        eval_every_steps=100, checkpoint_every_steps=50)
  config.input.batch_size = 64
  config.peak_tflops = 0.005  # per device: the report gives MFU against it
  metrics = loop.train_and_evaluate(config, workdir)
  # 10 balanced classes: chance is 10 %. 150 steps on 2,000 real images.
  assert metrics['accuracy'] >= 0.25, metrics
  with open(os.path.join(workdir, 'eval_report.json')) as f:
    report = json.load(f)
  assert report['step'] == 150
  assert report['report']['num_examples'] == 500
  assert np.sum(report['report']['confusion_matrix']) == 500
  assert [c['support'] for c in report['report']['per_class']] == [50] * 10
  np.testing.assert_allclose(report['accuracy'], metrics['accuracy'])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in train] == [50, 100, 150]
  assert train[-1]['train/loss'] < train[0]['train/loss']
  assert any('eval/accuracy' in r and r['step'] == 100 for r in records)
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(e.startswith('events.out.tfevents') for e in events)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['total_steps'] == 150
  # Misclassified examples, drawn from the final evaluation's outputs.
  with open(os.path.join(workdir, 'report.md')) as f:
    report_md = f.read()
  assert 'misclassified.png' in report_md
  # The session's FLOP rate, and MFU = that rate / (0.005 TFLOP/s x devices)
  # (both rounded in the report).
  tflops, mfu = re.search(r'steps/s, ([\d.]+) TFLOP/s, MFU ([\d.]+)%',
                          report_md).groups()
  assert float(tflops) > 0
  np.testing.assert_allclose(
      float(mfu), 100 * float(tflops) / (0.005 * jax.device_count()),
      rtol=0.005, atol=0.06)
  assert os.path.getsize(os.path.join(workdir, 'misclassified.png')) > 10_000
  # Rerunning a finished run trains nothing and reports the same figures.
  again = loop.train_and_evaluate(config, workdir)
  np.testing.assert_allclose(again['accuracy'], metrics['accuracy'])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    cifar10_small, tmp_path):
  workdir = str(tmp_path / 'nan')
  config = small_config(cifar10_small, total_steps=12, log_every_steps=4,
                        checkpoint_every_steps=4)
  loop.train_and_evaluate(config, workdir, stop_at_step=4)
  # An absurd learning rate from step 4 on overflows the weights.
  config.optimizer.learning_rate = 1e30
  with pytest.raises(FloatingPointError,
                     match=r'Non-finite .* at step [5-8]\..*last good checkpoint '
                           r'is step 4'):
    loop.train_and_evaluate(config, workdir, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']
  assert final_params(workdir) is not None


def test_checkpoint_of_another_optimizer_is_a_clear_error(cifar10_small, tmp_path):
  workdir = str(tmp_path / 'other')
  # The first run's programs are those of the non-finite test's first run
  # (the session's compile cache has them).
  config = small_config(cifar10_small)
  loop.train_and_evaluate(config, workdir, stop_at_step=4)
  config.optimizer.name = 'sgd'
  # Refused as a changed config, and past that (overridden), as a checkpoint
  # that does not fit.
  with pytest.raises(ValueError, match=r'optimizer.name: "adamw" -> "sgd"'):
    loop.train_and_evaluate(config, workdir)
  with pytest.raises(ValueError,
                     match=r'Checkpoint 4 in .*checkpoints does not fit.*--workdir'):
    loop.train_and_evaluate(config, workdir, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']


def test_alternating_flip_with_a_flipping_augmentation_is_a_clear_error(
    cifar10_small, tmp_path):
  config = small_config(cifar10_small)
  config.input.augment = 'flip'
  config.input.alternating_flip = True
  with pytest.raises(ValueError, match=r"augment in \['crop_pad2', 'none'\]"):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))


def test_slow_closing_steps_are_named_in_the_log(monkeypatch):
  lines = []
  monkeypatch.setattr(loop.logging, 'info',
                      lambda message, *args: lines.append(message % args))
  assert loop._timed('Quick', lambda: 3) == 3
  assert not lines
  monkeypatch.setattr(loop, '_SLOW_END_S', 0.0)
  assert loop._timed('Finishing the checkpoint saves', lambda: 4) == 4
  assert lines == ['Finishing the checkpoint saves took 0 s.']
