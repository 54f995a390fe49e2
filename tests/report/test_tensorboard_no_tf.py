"""aisci.report.tensorboard writes event files without importing TensorFlow.

Read back with TensorBoard's own EventAccumulator. What a module imports can
only be seen in a fresh interpreter, hence the subprocesses.
"""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_accumulator

from aisci.report import tensorboard

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                        capture_output=True, text=True)


def _accumulator(logdir) -> event_accumulator.EventAccumulator:
  [path] = [p for p in os.listdir(logdir) if 'tfevents' in p]
  acc = event_accumulator.EventAccumulator(
      os.path.join(logdir, path), size_guidance={'tensors': 0})
  return acc.Reload()


def _scalars(acc, tag):
  assert acc.SummaryMetadata(tag).plugin_data.plugin_name == 'scalars'
  return [(e.step, e.tensor_proto.float_val[0]) for e in acc.Tensors(tag)]


def _images(acc, tag):
  """[(step, width, height, [decoded images])]."""
  assert acc.SummaryMetadata(tag).plugin_data.plugin_name == 'images'
  found = []
  for e in acc.Tensors(tag):
    width, height, *pngs = e.tensor_proto.string_val
    found.append((e.step, int(width), int(height),
                  [np.asarray(Image.open(io.BytesIO(png))) for png in pngs]))
  return found


def test_writes_without_importing_tensorflow(tmp_path):
  out = _run(f'''
import json, sys
import numpy as np
from aisci.report import tensorboard
writer = tensorboard.TensorBoardWriter({str(tmp_path)!r})
writer.write_scalars(1, {{'loss': 0.5}})
writer.write_images(1, {{'pic': np.zeros((1, 3, 2, 3), np.uint8)}})
writer.close()
print(json.dumps([m for m in sys.modules
                  if m == 'tensorflow' or m.startswith('tensorflow.')
                  or m == 'tensorboard.compat.tf']))
''').stdout
  assert json.loads(out) == []
  acc = _accumulator(tmp_path)
  assert _scalars(acc, 'loss') == [(1, 0.5)]
  assert [(s, w, h) for s, w, h, _ in _images(acc, 'pic')] == [(1, 2, 3)]


def test_round_trip_through_event_accumulator(tmp_path):
  writer = tensorboard.TensorBoardWriter(str(tmp_path / 'tb'))
  writer.write_scalars(3, {'train/loss': np.float64(0.25), 'lr': 1e-3})
  writer.write_scalars(7, {'train/loss': np.float32(0.125)})
  rgb = np.zeros((2, 5, 4, 3), np.uint8)
  rgb[1, 0, 0] = (255, 10, 20)
  gray = np.array([0.0, 0.5, 1.0, 2.0, -1.0, 0.999], np.float32).reshape(
      1, 2, 3, 1)
  writer.write_images(9, {'report/rgb': rgb, 'report/gray': gray})
  writer.close()

  [name] = os.listdir(tmp_path / 'tb')
  assert name.startswith('events.out.tfevents.')
  acc = _accumulator(tmp_path / 'tb')
  assert acc.file_version == 2.0
  assert _scalars(acc, 'train/loss') == [(3, 0.25), (7, 0.125)]
  assert _scalars(acc, 'lr') == [(3, np.float32(1e-3))]
  [(step, width, height, decoded)] = _images(acc, 'report/rgb')
  assert (step, width, height) == (9, 4, 5)
  np.testing.assert_array_equal(np.stack(decoded), rgb)
  [(step, width, height, [decoded])] = _images(acc, 'report/gray')
  assert (step, width, height) == (9, 3, 2)
  # tf.image.convert_image_dtype(saturate=True): x * 255.5, clipped, truncated.
  np.testing.assert_array_equal(decoded, [[0, 127, 255], [255, 0, 255]])


def test_each_write_is_on_disk_before_close(tmp_path):
  writer = tensorboard.TensorBoardWriter(str(tmp_path))
  writer.write_scalars(1, {'loss': 2.0})
  try:
    assert _scalars(_accumulator(tmp_path), 'loss') == [(1, 2.0)]
  finally:
    writer.close()
  with pytest.raises(ValueError, match='closed'):
    writer.write_scalars(2, {'loss': 1.0})


def test_two_writers_in_one_logdir_keep_both_files(tmp_path):
  # The metrics' writer stays open while the report writes its pictures.
  metrics = tensorboard.TensorBoardWriter(str(tmp_path))
  report = tensorboard.TensorBoardWriter(str(tmp_path))
  metrics.write_scalars(1, {'loss': 1.0})
  report.write_images(1, {'pic': np.zeros((1, 2, 2, 1), np.uint8)})
  report.close()
  metrics.close()
  tags = set()
  for name in sorted(os.listdir(tmp_path)):
    acc = event_accumulator.EventAccumulator(str(tmp_path / name)).Reload()
    tags.update(acc.Tags()['tensors'])
  assert len(os.listdir(tmp_path)) == 2 and tags == {'loss', 'pic'}


def test_bad_images_are_refused(tmp_path):
  writer = tensorboard.TensorBoardWriter(str(tmp_path))
  with pytest.raises(ValueError, match='height, width'):
    writer.write_images(0, {'pic': np.zeros((2, 2, 3), np.uint8)})
  with pytest.raises(TypeError, match='uint8 or floats'):
    writer.write_images(0, {'pic': np.zeros((1, 2, 2, 3), np.int32)})
  writer.close()


def test_without_tensorboard_it_warns_once_and_writes_nothing(tmp_path):
  proc = _run(f'''
import os, sys
sys.modules['tensorboard'] = None
from aisci.report import tensorboard
from aisci.train import metrics_log
logdir = os.path.join({str(tmp_path)!r}, 'tb')
writer = tensorboard.TensorBoardWriter(logdir)
writer.write_scalars(1, {{'loss': 0.5}})
writer.write_images(1, {{'pic': [[[[0]]]]}})
writer.close()
writer = metrics_log.create_writer({str(tmp_path)!r})
writer.write_scalars(2, {{'loss': 0.25}})
writer.close()
print('ok', os.path.exists(logdir), 'tensorflow' in sys.modules)
''')
  assert proc.stdout.split() == ['ok', 'False', 'False']
  assert proc.stderr.count('TensorBoard event files are off') == 1, proc.stderr
  assert 'pip install tensorboard' in proc.stderr
  assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl']
  assert '"loss": 0.25' in (tmp_path / 'metrics.jsonl').read_text()


@pytest.mark.parametrize('data', [b'', b'a', b'123456789', bytes(range(256)) * 3])
def test_record_checksums_are_tensorboards(data):
  # The record framing is aisci's own (tensorboard.summary costs ~0.13 s of
  # start-up); its masked CRC-32C must be the one TensorBoard's readers check.
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
  assert tensorboard._masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)
