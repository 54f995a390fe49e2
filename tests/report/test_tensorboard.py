"""TensorBoard events and metrics.jsonl, read back with TensorFlow's own reader."""

import json

import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from aisci.report import tensorboard
from aisci.train import metrics_log


def _events(logdir):
  """{tag: [(step, ndarray), ...]} from every event file in `logdir`."""
  found = {}
  for path in tf.io.gfile.glob(f'{logdir}/events*'):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(
            (event.step, tf.make_ndarray(value.tensor)))
  return found


def test_scalars_and_images_round_trip(tmp_path):
  writer = tensorboard.TensorBoardWriter(str(tmp_path))
  writer.write_scalars(3, {'train/loss': jnp.float32(0.25), 'lr': 1e-3})
  writer.write_scalars(7, {'train/loss': np.float64(0.125)})
  images = np.zeros((2, 5, 4, 3), np.uint8)
  images[1, 0, 0] = 255
  writer.write_images(7, {'report/examples': images})
  writer.close()

  events = _events(tmp_path)
  assert [(s, float(v)) for s, v in events['train/loss']] == [(3, 0.25),
                                                               (7, 0.125)]
  assert [(s, float(v)) for s, v in events['lr']] == [(3, np.float32(1e-3))]
  [(step, encoded)] = events['report/examples']
  # tf.summary.image stores [width, height, one PNG per image].
  assert step == 7 and len(encoded) == 2 + 2
  assert (int(encoded[0]), int(encoded[1])) == (4, 5)
  decoded = [tf.io.decode_png(png).numpy() for png in encoded[2:]]
  np.testing.assert_array_equal(np.stack(decoded), images)


def test_create_writer_writes_tensorboard_and_jsonl(tmp_path):
  writer = metrics_log.create_writer(str(tmp_path))
  writer.write_scalars(10, {'eval/accuracy': jnp.float32(0.5)})
  writer.write_scalars(20, {'eval/accuracy': 0.75, 'eval/loss': 1.5})
  writer.close()

  lines = [json.loads(line) for line in
           (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [{k: v for k, v in line.items() if k != 'time'} for line in lines] == [
      {'step': 10, 'eval/accuracy': 0.5},
      {'step': 20, 'eval/accuracy': 0.75, 'eval/loss': 1.5}]
  events = _events(tmp_path / 'tensorboard')
  assert [(s, float(v)) for s, v in events['eval/accuracy']] == [(10, 0.5),
                                                                 (20, 0.75)]
