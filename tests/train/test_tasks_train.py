"""Each task trains on real data (ISBI membranes, SST-2 sentences) and beats
the untrained model; an .npz of sequences trains with the text config
unchanged; best checkpoint and early stopping."""

import json

import numpy as np
import pytest

from aisci.train import loop
from configs import transformer_text
from configs import unet_membrane


def run(config, workdir, steps):
  config.total_steps = steps
  return loop.train_and_evaluate(config, str(workdir))


def small_unet(isbi, variant='default'):
  config = unet_membrane.get_config(variant)
  config.dataset = f'segfolder:{isbi}'
  backbone = dict(depth=2, base_width=8)
  if variant == 'default':
    # The 8-view TTA has its own test (tests/models/test_unet.py); here it
    # would only make each evaluation 8x longer.
    config.model.update(backbone, tta='none')
  else:
    config.model.backbone.update(backbone)
  config.input.update(crop_size=64, batch_size=8)
  config.optimizer.learning_rate = 5e-3
  config.schedule.warmup_steps = 5
  config.update(log_every_steps=20, eval_every_steps=40,
                checkpoint_every_steps=40)
  return config


def test_unet_segmentation_beats_the_untrained_model(isbi, tmp_path):
  untrained = run(small_unet(isbi), tmp_path / 'untrained', 0)
  trained = run(small_unet(isbi), tmp_path / 'trained', 40)
  assert trained['mean_dice'] > untrained['mean_dice'] + 0.1, (untrained, trained)
  assert trained['dice_membrane'] > 0.5
  report = json.loads((tmp_path / 'trained' / 'eval_report.json').read_text())
  assert report['report']['num_pixels'] == 5 * 512 * 512  # whole val slices
  assert report['best']['metric'] == 'mean_dice'
  assert (tmp_path / 'trained' / 'best_checkpoint' / str(report['best']['step'])).is_dir()


def test_multitask_reports_each_task(isbi, tmp_path):
  scalars = run(small_unet(isbi, 'multitask'), tmp_path / 'multi', 20)
  assert {'mask/mean_dice', 'area/mae', 'area/r2', 'loss'} <= set(scalars)
  # Membrane fractions of crops lie in [0, 1]; a trained head is off by far less.
  assert scalars['area/mae'] < 0.3


def test_text_classification_beats_the_untrained_model(small_text, tmp_path):
  # 80 steps: tests/test_predict_tasks.py's text_run is this run.
  untrained = run(small_text(), tmp_path / 'untrained', 0)
  trained = run(small_text(), tmp_path / 'trained', 80)
  assert trained['accuracy'] > max(untrained['accuracy'], 0.6) + 0.05, (untrained, trained)
  info = json.loads((tmp_path / 'trained' / 'dataset_info.json').read_text())
  assert info['kind'] == 'text' and info['tokenizer'] == 'tokenizer.json'


def test_early_stopping_stops_and_stays_stopped(small_text, tmp_path):
  config = small_text()
  config.optimizer.learning_rate = 0.0  # the metric can never improve
  config.schedule.warmup_steps = 0
  config.update(eval_every_steps=10, checkpoint_every_steps=100,
                early_stopping_patience=2)
  run(config, tmp_path, 100)
  report = json.loads((tmp_path / 'eval_report.json').read_text())
  assert report['step'] == 30 and report['best']['stopped_early_at'] == 30
  assert report['best']['step'] == 10
  run(config, tmp_path, 100)  # rerun: stays stopped, no more training
  assert json.loads((tmp_path / 'eval_report.json').read_text())['step'] == 30


def test_npz_sequences_train_with_the_text_config_unchanged(tmp_path):
  # Generated signals, a set this project never saw: the class is the
  # frequency of a noisy sine wave.
  rng = np.random.default_rng(0)

  def signals(n):
    labels = rng.integers(0, 3, n)
    t = np.arange(48)
    x = np.sin(2 * np.pi * (labels[:, None] + 1) * t / 24 + rng.uniform(0, 6, (n, 1)))
    return (5.0 + 3.0 * x + rng.normal(0, 0.5, x.shape)).astype(np.float32), labels

  x, y = signals(1024)
  x_test, y_test = signals(256)
  np.savez(tmp_path / 'signals.npz', x=x, y=y, x_test=x_test, y_test=y_test)
  config = transformer_text.get_config()
  config.dataset = f'npz:{tmp_path / "signals.npz"}'
  config.schedule.warmup_steps = 10
  config.update(log_every_steps=20, eval_every_steps=1000)
  scalars = run(config, tmp_path / 'workdir', 100)
  assert scalars['accuracy'] > 0.8, scalars
