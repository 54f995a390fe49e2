"""The report a finished run leaves in its workdir: report.md, PNGs that
show something, and the same pictures in TensorBoard."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from aisci import report
from aisci.report import plots
from aisci.report import report_md
from aisci.report import write
from aisci.train import steps

# name -> (width, height) in pixels: figure inches x plots.DPI.
EXPECTED_PNGS = {
    'curve_loss.png': (600, 400),
    'curve_accuracy.png': (600, 400),
    'confusion_matrix.png': (900, 765),  # 10 classes: 9 x 7.65 inches
    'misclassified.png': (960, 780),  # 24 cells: 6 x 4 of 1.6 x 1.95 inches
}


def assert_real_png(path, size):
  """Decodes, has the size, and is not one flat colour."""
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert image.size == size, (path, image.size)
    pixels = np.asarray(image.convert('RGB'))
  colours = np.unique(pixels.reshape(-1, 3), axis=0)
  assert len(colours) > 20, (path, len(colours))
  assert pixels.std() > 10, path


@pytest.mark.parametrize('name', sorted(EXPECTED_PNGS))
def test_training_writes_pngs_that_show_something(tiny_vit_run, name):
  assert_real_png(tiny_vit_run / name, EXPECTED_PNGS[name])


def test_report_md_holds_the_metrics_classes_and_pictures(tiny_vit_run):
  text = (tiny_vit_run / 'report.md').read_text()
  with open(tiny_vit_run / 'eval_report.json') as f:
    final = json.load(f)
  assert f'| accuracy | {final["accuracy"]:.4f} |' in text
  assert f'| loss | {final["loss"]:.4f} |' in text
  airplane = final['report']['per_class'][0]
  assert (f'| airplane | {airplane["precision"]:.4f} | {airplane["recall"]:.4f}'
          in text)
  assert 'step 40 on the `test` split (500 examples)' in text
  assert 'steps trained in this session: 40' in text
  for name in EXPECTED_PNGS:
    assert f']({name})' in text  # embedded picture
  assert '`checkpoints/`: checkpoints of steps 20, 40' in text


def test_tensorboard_has_the_pictures(tiny_vit_run):
  tags = {}
  for path in tf.io.gfile.glob(str(tiny_vit_run / 'tensorboard' / 'events*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags[value.tag] = tf.make_ndarray(value.tensor)
  for name in EXPECTED_PNGS:
    tag = f'report/{os.path.splitext(name)[0]}'
    assert tag in tags, sorted(tags)
    # tf.summary.image stores [width, height, encoded PNG...] as strings.
    width, height = (int(v) for v in tags[tag][:2])
    assert (width, height) == EXPECTED_PNGS[name]


def test_overlay_grid(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:48, :64]
  true_masks = np.stack([((yy - 24) ** 2 + (xx - c) ** 2 < 200).astype(int)
                         for c in (20, 32, 44)])
  pred_masks = np.roll(true_masks, 3, axis=2)
  path = report.overlay_grid(images, true_masks, pred_masks,
                             str(tmp_path / 'overlays.png'))
  assert_real_png(path, (800, 630))  # 4 panels of 2 x 2 inches per row
  with pytest.raises(ValueError, match=r'masks \[n, h, w\]'):
    report.overlay_grid(images, true_masks[:, :10], pred_masks, 'x.png')


def test_example_grid_without_errors_draws_nothing(tmp_path):
  images = np.zeros((4, 8, 8), np.float32)
  labels = np.asarray([0, 1, 0, 1])
  assert report.example_grid(images, labels, labels, ['a', 'b'],
                             str(tmp_path / 'x.png')) is None
  assert not (tmp_path / 'x.png').exists()
  path = report.example_grid(images + 0.5, labels, labels, ['a', 'b'],
                             str(tmp_path / 'all.png'), only_errors=False)
  with Image.open(path) as image:
    assert image.size == (640, 195)  # 4 cells of 1.6 x 1.95 inches


def test_read_metrics_keeps_the_last_value_of_a_repeated_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  records = [{'step': 10, 'time': 1.0, 'train/loss': 2.0},
             {'step': 20, 'time': 2.0, 'train/loss': 1.5},
             {'step': 10, 'time': 3.0, 'train/loss': 1.9},  # resumed run
             {'step': 20, 'time': 4.0, 'eval/accuracy': 0.5}]
  path.write_text(''.join(json.dumps(r) + '\n' for r in records))
  metrics = report.read_metrics(str(path))
  np.testing.assert_array_equal(metrics['train/loss'][0], [10, 20])
  np.testing.assert_array_equal(metrics['train/loss'][1], [1.9, 1.5])
  np.testing.assert_array_equal(metrics['eval/accuracy'][1], [0.5])


def test_render_takes_a_segmentation_report_without_confusion_names():
  text = report_md.render(
      workdir='runs/seg', config={'task': {'name': 'segmentation'}},
      scalars={'mean_dice': 0.75, 'loss': 0.3},
      report={'per_class': {'background': {'dice': 0.9, 'iou': 0.8},
                            'membrane': {'dice': 0.6, 'iou': 0.43}},
              'num_examples': 5},
      step=100, split='test', timings={}, figures={}, artefacts={})
  assert '| mean_dice | 0.7500 |' in text
  assert '| class | dice | iou |' in text
  assert '| membrane | 0.6000 | 0.4300 |' in text
  assert '## Timings' not in text and '## Pictures' not in text


def test_write_all_for_a_segmentation_run(tmp_path):
  """No per-class list, a pixel 'confusion', [n, h, w, classes] outputs."""
  records = [{'step': s, 'time': float(s), 'train/loss': 1.0 / s,
              'train/pixel_accuracy': 1 - 1.0 / s} for s in (1, 2, 3)]
  records.append({'step': 3, 'time': 4.0, 'eval/loss': 0.4,
                  'eval/mean_dice': 0.7})
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in records))
  seg_report = {'per_class': {'background': {'dice': 0.9, 'iou': 0.8},
                              'membrane': {'dice': 0.5, 'iou': 0.33}},
                'confusion': [[900, 100], [50, 150]], 'num_examples': 2}
  figures = report.write_all(
      str(tmp_path), config={'eval_split': 'test', 'task': {'name': 'seg'}},
      task=None, class_names=['background', 'membrane'],
      scalars={'loss': 0.4, 'mean_dice': 0.7}, report=seg_report, step=3)
  assert sorted(figures.values()) == [
      'confusion_matrix.png', 'curve_loss.png', 'curve_mean_dice.png',
      'curve_pixel_accuracy.png']
  assert_real_png(tmp_path / 'confusion_matrix.png', (500, 425))
  text = (tmp_path / 'report.md').read_text()
  assert '| membrane | 0.5000 | 0.3300 |' in text
  # The overlays, from examples with normalized images and per-pixel logits.
  rng = np.random.default_rng(1)
  labels = (rng.random((2, 32, 32)) > 0.7).astype(np.int32)
  logits = np.stack([1 - labels, labels], -1) + 0.6 * rng.random((2, 32, 32, 2))
  examples = {'image': rng.normal(size=(2, 32, 32, 1)).astype(np.float32),
              'label': labels, 'outputs': logits}
  found = write.example_figures(examples, 'image', 'label', ['bg', 'fg'],
                                {'input': {'mean': [0.5], 'std': [0.2]}},
                                str(tmp_path))
  assert found == {'Segmentation overlays': 'overlays.png'}
  assert_real_png(tmp_path / 'overlays.png', (800, 430))


def test_examples_are_spread_over_the_evaluation_batches():
  from aisci.report import examples  # pylint: disable=g-import-not-at-top

  x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
  outputs = x @ np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
  # 4 batches of 10, sorted by label as an imagefolder split is; the last
  # batch's final 4 rows are padding.
  labels, mask = np.repeat(np.arange(4), 10), np.arange(40) < 36
  batches = [(dict(x=x[i:i + 10], label=labels[i:i + 10], mask=mask[i:i + 10]),
              outputs[i:i + 10]) for i in range(0, 40, 10)]
  collector = examples.ExampleCollector(max_examples=8, num_batches=4)
  assert collector.result() is None
  for batch, batch_outputs in batches:
    collector.add(batch, batch_outputs)
  found = collector.result()
  np.testing.assert_array_equal(found['label'], [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(found['x'], x[[0, 1, 10, 11, 20, 21, 30, 31]])
  np.testing.assert_array_equal(found['outputs'],
                                outputs[[0, 1, 10, 11, 20, 21, 30, 31]])
  assert 'mask' in found and collector.full
  # Without the batch count: the first rows, padding (mask False) left out,
  # and nothing taken once full.
  collector = examples.ExampleCollector()
  for batch, batch_outputs in batches[3:] + batches[:1]:
    collector.add(batch, batch_outputs)
  np.testing.assert_array_equal(collector.result()['x'],
                                np.concatenate([x[30:36], x[0:10]]))
  collector = examples.ExampleCollector(max_examples=3)
  for batch, batch_outputs in batches:
    collector.add(batch, batch_outputs)
  np.testing.assert_array_equal(collector.result()['outputs'], outputs[:3])


def test_multi_task_names_and_outputs(tmp_path):
  """'<head>/<metric>' names and a dict of outputs (multi_head models)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from aisci.report import examples  # pylint: disable=g-import-not-at-top

  class TwoHeads(nn.Module):
    heads: dict  # not hashable, as in aisci.models.heads.MultiHead

    @nn.compact
    def __call__(self, x, train=False):
      return {name: nn.Dense(n, name=name)(x) for name, n in self.heads.items()}

  model = TwoHeads(heads={'kind': 3, 'area': 1})
  x = np.ones((6, 4), np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  collector = examples.ExampleCollector()
  collector.add(dict(x=x, mask=np.arange(6) < 5), model.apply(variables, x))
  found = collector.result()
  assert {k: v.shape for k, v in found['outputs'].items()} == {
      'kind': (5, 3), 'area': (5, 1)}
  assert write.example_figures(found, 'x', 'label', ['a', 'b', 'c'], {},
                               str(tmp_path)) == {}
  metrics = {'train/area/loss': (np.arange(1, 4), np.ones(3)),
             'eval/area/loss': (np.asarray([3]), np.ones(1))}
  assert write.curve_figures(metrics, str(tmp_path)) == {
      'area/loss (train and eval)': 'curve_area_loss.png'}
  assert_real_png(tmp_path / 'curve_area_loss.png', (600, 400))
