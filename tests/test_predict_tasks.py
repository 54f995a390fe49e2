"""aisci.predict beyond image classification, on real inputs: ISBI slices
through a multi-task U-Net (masks, overlays, a regressed membrane share),
SST-2 sentences through a text transformer, and .npz signals through a
regression transformer; and the choice of the best or latest checkpoint."""

import io
import json

import chex
import numpy as np
from PIL import Image
import pytest

from aisci import inference
from aisci import predict
from aisci import predict_inputs
from aisci import predict_outputs
from aisci.train import loop
from configs import transformer_text
from configs import unet_membrane




@pytest.fixture(scope='module')
def unet_run(isbi, tmp_path_factory):
  """Multi-task U-Net (mask + membrane share), 20 steps; evaluations at 10
  and 20 keep the better one as the best checkpoint."""
  config = unet_membrane.get_config('multitask')
  config.dataset = f'segfolder:{isbi}'
  config.model.backbone.update(depth=2, base_width=8)
  config.model.backbone.tta = 'none'
  config.input.update(crop_size=64, batch_size=8)
  config.optimizer.learning_rate = 5e-3
  # tests/train/test_tasks_train.py's multi-task run has these settings
  # too: the same programs, compiled once per session (the test cache).
  config.schedule.warmup_steps = 5
  config.update(total_steps=20, log_every_steps=10, eval_every_steps=10,
                checkpoint_every_steps=10)
  workdir = tmp_path_factory.mktemp('unet_run')
  loop.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='module')
def text_run(small_text, tmp_path_factory):
  # test_tasks_train.py's trained text run (80 steps): one set of programs.
  config = small_text()
  config.total_steps = 80
  workdir = tmp_path_factory.mktemp('text_run')
  loop.train_and_evaluate(config, str(workdir))
  return workdir


def run(workdir, paths, **kwargs):
  out = io.StringIO()
  records = predict.run(str(workdir), [str(p) for p in paths], out=out,
                        **kwargs)
  return records, out.getvalue()


def test_segmentation_writes_masks_overlays_and_regressed_values(
    unet_run, isbi, tmp_path):
  slices = [isbi / 'test' / 'images' / f'{i}.png' for i in (0, 1, 2)]
  # A slice of another size (not a multiple of the U-Net's 2**depth).
  odd = tmp_path / 'odd.png'
  Image.open(slices[0]).crop((10, 20, 310, 270)).save(odd)
  records, printed = run(unet_run, slices + [odd], output_dir=tmp_path / 'out',
                         batch_size=2)
  assert [r['path'] for r in records] == [str(p) for p in slices + [odd]]
  trained = inference.load_trained(str(unet_run), checkpoint='auto')
  examples = predict_inputs.read(trained, [str(p) for p in slices])
  expected = inference.predict_outputs(trained, [e.input for e in examples])
  for i, record in enumerate(records):
    size = Image.open(record['path']).size
    mask = np.asarray(Image.open(record['mask']['mask']))
    chex.assert_shape(mask, size[::-1])
    assert set(np.unique(mask)) <= {0, 255}  # as the training masks store it
    overlay = np.asarray(Image.open(record['mask']['overlay']))
    chex.assert_shape(overlay, size[::-1] + (3,))
    assert overlay.std() > 5  # not one flat colour
    fractions = record['mask']['class_fractions']
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert fractions['membrane'] == pytest.approx((mask == 0).mean())
    (area,) = record['area']['values']
    if i < len(slices):  # the library's outputs for the same slices
      np.testing.assert_array_equal(
          mask // 255, expected['mask'][i].argmax(-1))
      assert area == pytest.approx(float(expected['area'][i, 0]), abs=1e-5)
  assert f'  area  {records[0]["area"]["values"][0]:.6g}' in printed
  assert printed.count('_overlay.png') == 0 and printed.count('_mask.png') == 4


def test_text_lines_and_tsv_columns(text_run, small_text, sst2, tmp_path):
  rows = (sst2 / 'dev.tsv').read_text().splitlines()[1:6]
  sentences = [row.split('\t')[0] for row in rows]
  lines = tmp_path / 'reviews.txt'
  lines.write_text('\n'.join(sentences[:3]) + '\n\n' + '\n'.join(sentences[3:]))
  records, printed = run(text_run, [lines], top_k=2)
  assert [r['path'] for r in records] == [
      f'{lines}:{n}' for n in (1, 2, 3, 5, 6)]  # the empty line 4 is skipped
  trained = inference.load_trained(str(text_run))
  from aisci.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizer_lib.load(str(text_run / 'tokenizer.json'))
  logits = inference.predict_outputs(
      trained, tokenizer_lib.encode(tokenizer, sentences,
                                    small_text().input.max_length))
  for record, z in zip(records, logits):
    np.testing.assert_allclose(record['logits'], z, atol=1e-5)
    probabilities = [e['probability'] for e in record['top_k']]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert record['top_k'][0]['class'] == trained.class_names[z.argmax()]
  assert printed.splitlines()[0] == f'{lines}:1'
  # A .tsv with the run's text column: that column, every row.
  records, _ = run(text_run, [sst2 / 'dev.tsv'])
  assert len(records) == 872
  np.testing.assert_allclose(records[0]['logits'], logits[0], atol=1e-5)


def test_npz_regression_values(tmp_path):
  # Generated signals (shape-and-maths data, not a claimed result): the
  # target is the amplitude of a noisy sine wave.
  rng = np.random.default_rng(0)

  def signals(n):
    amplitude = rng.uniform(0.5, 3.0, n)
    t = np.arange(32)
    x = amplitude[:, None] * np.sin(2 * np.pi * t / 16 + rng.uniform(0, 6, (n, 1)))
    return (x + rng.normal(0, 0.1, x.shape)).astype(np.float32), amplitude.astype(np.float32)

  x, y = signals(512)
  x_test, y_test = signals(64)
  np.savez(tmp_path / 'signals.npz', x=x, y=y, x_test=x_test, y_test=y_test)
  config = transformer_text.get_config()
  config.dataset = f'npz:{tmp_path / "signals.npz"}'
  config.task = dict(name='regression', target='label', loss_type='mse')
  config.best_metric, config.best_metric_mode = 'mae', 'min'
  config.model.update(width=32, depth=1, num_heads=2, mlp_dim=64)
  config.optimizer.learning_rate = 3e-3
  config.schedule.warmup_steps = 5
  config.update(total_steps=200, log_every_steps=50, eval_every_steps=200,
                checkpoint_every_steps=200)
  workdir = tmp_path / 'workdir'
  scalars = loop.train_and_evaluate(config, str(workdir))
  # Learnt: far better than predicting the mean amplitude.
  assert scalars['r2'] > 0.6, scalars
  assert scalars['mae'] < 0.6 * np.abs(y_test - y.mean()).mean(), scalars
  np.savez(tmp_path / 'new.npz', x=x_test[:5])
  records, printed = run(workdir, [tmp_path / 'new.npz'])
  values = np.array([r['values'][0] for r in records])
  assert [r['path'] for r in records] == [f'{tmp_path / "new.npz"}[{i}]'
                                          for i in range(5)]
  assert np.abs(values - y_test[:5]).mean() < 2 * scalars['mae'] + 0.1
  assert printed.splitlines()[1] == f'  value  {values[0]:.6g}'
  with pytest.raises(ValueError, match='do not fit this run'):
    np.savez(tmp_path / 'ids.npz', x=np.zeros((2, 32), np.int32))
    run(workdir, [tmp_path / 'ids.npz'])


def test_best_or_latest_checkpoint(unet_run, tmp_path):
  best = json.loads((unet_run / 'best.json').read_text())
  best_step = max(best['history'], key=lambda sv: sv[1])[0]
  assert inference.load_trained(str(unet_run), checkpoint='auto'
                                ).checkpoint == f'best_checkpoint/{best_step}'
  assert inference.load_trained(str(unet_run), checkpoint='latest'
                                ).checkpoint == 'checkpoints/20'
  # A run that kept no best checkpoint: auto falls back to the latest.
  (tmp_path / 'checkpoints').mkdir()
  assert inference.checkpoint_dir(str(tmp_path), 'auto') == str(
      tmp_path / 'checkpoints')
  (tmp_path / 'best_checkpoint').mkdir()  # empty: a run killed before saving
  with pytest.raises(FileNotFoundError, match='--checkpoint=latest'):
    inference.checkpoint_dir(str(tmp_path), 'best')
  (tmp_path / 'best_checkpoint' / '7').mkdir()
  assert inference.checkpoint_dir(str(tmp_path), 'auto') == str(
      tmp_path / 'best_checkpoint')
  with pytest.raises(ValueError, match='checkpoint must be one of'):
    inference.checkpoint_dir(str(tmp_path), 'newest')


def test_overlay_blends_mask_colours_into_the_image():
  pixels = np.full((4, 6, 1), 200, np.uint8)
  mask = np.zeros((4, 6), np.uint8)
  mask[:, 3:] = 1
  blended = predict_outputs.overlay(pixels, mask)
  chex.assert_shape(blended, (4, 6, 3))
  assert (blended[:, :3] == blended[0, 0]).all()  # one class, one colour
  assert not (blended[:, 3:] == blended[:, :3]).all()
