"""The predict command on real images, run as users run it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aisci import cpu_devices
from aisci import inference
from aisci import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_predict(*args, **environ):
  result = subprocess.run(
      [sys.executable, '-m', 'aisci.predict', *args], cwd=REPO,
      capture_output=True, text=True, timeout=120, check=False,
      env={**os.environ, **environ})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def parse(stdout):
  """{path: [(class, probability), ...]} from the printed report."""
  report, path = {}, None
  for line in stdout.splitlines():
    if line.startswith('  '):
      name, probability = line.split()
      report[path].append((name, float(probability)))
    else:
      path = line
      report[path] = []
  return report


def test_prints_top_k_of_files_and_folders(tiny_vit_run, cifar10_small,
                                           tmp_path):
  single = str(cifar10_small / 'test' / 'dog' / '0000.jpg')
  folder = cifar10_small / 'test' / 'ship'
  output = tmp_path / 'preds.jsonl'
  report = parse(run_predict(f'--workdir={tiny_vit_run}', '--top_k=3',
                             '--batch_size=16', f'--output={output}', single,
                             str(folder)))
  ships = sorted(str(folder / f) for f in os.listdir(folder))
  assert list(report) == [single] + ships  # 51 files, folder sorted
  for lines in report.values():
    assert len(lines) == 3
    probabilities = [p for _, p in lines]
    assert probabilities == sorted(probabilities, reverse=True)
  # The printed top-1 is the library's prediction for the same files.
  trained = inference.load_trained(str(tiny_vit_run))
  logits = inference.predict_logits(trained, trained.preprocess(list(report)))
  assert [lines[0][0] for lines in report.values()] == [
      trained.class_names[i] for i in logits.argmax(-1)]
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r['path'] for r in records] == list(report)
  np.testing.assert_allclose(records[0]['logits'], logits[0], atol=1e-5)
  assert [e['class'] for e in records[0]['top_k']] == [
      c for c, _ in report[single]]


def test_probabilities_of_all_classes_sum_to_one(tiny_vit_run, cifar10_small):
  report = parse(run_predict(f'--workdir={tiny_vit_run}', '--top_k=10',
                             str(cifar10_small / 'test' / 'cat')))
  assert len(report) == 50
  for lines in report.values():
    assert sorted(c for c, _ in lines) == sorted(os.listdir(
        cifar10_small / 'test'))
    assert sum(p for _, p in lines) == pytest.approx(1.0, abs=1e-3)


def test_second_prediction_loads_the_compiled_forward_pass(
    tiny_vit_run, cifar10_small, tmp_path):
  images = str(cifar10_small / 'test' / 'cat')
  cache = tmp_path / 'jax'
  first = run_predict(f'--workdir={tiny_vit_run}', images,
                      f'--compilation_cache_dir={cache}')
  entries = set(os.listdir(cache))
  assert entries  # the forward pass, saved by the first run
  second = run_predict(f'--workdir={tiny_vit_run}', images,
                       f'--compilation_cache_dir={cache}')
  assert second == first
  assert set(os.listdir(cache)) == entries  # loaded, nothing compiled anew
  # '' turns it off: the default folder (XDG_CACHE_HOME) stays untouched.
  run_predict(f'--workdir={tiny_vit_run}', images, '--compilation_cache_dir=',
              XDG_CACHE_HOME=str(tmp_path / 'xdg'))
  assert not (tmp_path / 'xdg').exists()


def test_predict_starts_like_aisci_main(tiny_vit_run, cifar10_small):
  """The allocator choice (aisci/allocator.py) applies: a bad AISCI_MALLOC
  stops it with the fix; the collector, paused at start, runs again once
  the forward pass is compiled."""
  result = subprocess.run(
      [sys.executable, '-m', 'aisci.predict', f'--workdir={tiny_vit_run}',
       str(cifar10_small / 'test' / 'cat')], cwd=REPO, capture_output=True,
      text=True, timeout=60, env={**os.environ, 'AISCI_MALLOC': '/no/such.so'})
  assert result.returncode != 0
  assert "AISCI_MALLOC='/no/such.so' is not a file" in result.stderr
  assert 'Traceback' not in result.stderr
  program = f"""
import gc
from aisci import gc_pause, inference
gc_pause.pause()
trained = inference.load_trained({str(tiny_vit_run)!r})
before = gc.isenabled()
inference.predict_logits(trained, trained.preprocess({
    [str(cifar10_small / 'test' / 'cat' / '0000.jpg')]!r}))
print(before, gc.isenabled(), gc.get_freeze_count() > 10000)
"""
  result = subprocess.run([sys.executable, '-c', program], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['False', 'True', 'True']


def test_many_images_are_read_in_worker_processes_with_the_same_result(
    tiny_vit_run, cifar10_small, tmp_path, monkeypatch):
  from aisci import predict_inputs  # pylint: disable=g-import-not-at-top
  from aisci.data import parallel_decode  # pylint: disable=g-import-not-at-top
  trained = inference.load_trained(str(tiny_vit_run))
  folder = [str(cifar10_small / 'test' / 'cat')]
  alone = predict_inputs.read(trained, folder)
  calls = []
  decode = parallel_decode.decode
  monkeypatch.setattr(parallel_decode, 'MIN_IMAGES', 2)
  monkeypatch.setattr(parallel_decode, 'decode',
                      lambda *a: calls.append(a[2]) or decode(*a))
  shared = predict_inputs.read(trained, folder)
  assert calls == [2]  # two processes on this machine's 2 cores or more
  assert [e.name for e in shared] == [e.name for e in alone]
  for a, b in zip(alone, shared):
    np.testing.assert_array_equal(a.input, b.input)
    np.testing.assert_array_equal(a.display, b.display)
  # An unreadable file is the same error, naming it, either way.
  (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg')
  messages = []
  for minimum in (2, 1 << 30):
    monkeypatch.setattr(parallel_decode, 'MIN_IMAGES', minimum)
    with pytest.raises(ValueError, match='broken.jpg') as error:
      predict_inputs.read(trained, folder + [str(tmp_path / 'broken.jpg')])
    messages.append(str(error.value))
  assert messages[0] == messages[1]


def test_expand_paths_finds_images_in_folders_recursively(tmp_path):
  (tmp_path / 'a' / 'deep').mkdir(parents=True)
  for name in ('a/2.png', 'a/deep/1.JPG', 'a/notes.txt', 'b.jpg'):
    (tmp_path / name).touch()
  assert inference.expand_paths([str(tmp_path / 'b.jpg'), str(tmp_path / 'a')]
                              ) == [str(tmp_path / n) for n in
                                    ('b.jpg', 'a/2.png', 'a/deep/1.JPG')]
  with pytest.raises(FileNotFoundError, match='neither a file nor a folder'):
    inference.expand_paths([str(tmp_path / 'missing.jpg')])
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no image files'):
    inference.expand_paths([str(tmp_path / 'empty')])


def test_cpu_device_count_defaults_to_the_runs_config(tmp_path):
  def count():
    return cpu_devices.choose(None, predict._run_config(str(tmp_path)))[0]
  assert count() == 8  # no config.json
  (tmp_path / 'config.json').write_text(json.dumps({'cpu_devices': 2}))
  assert count() == 2
  (tmp_path / 'config.json').write_text(json.dumps({'model': {}}))
  assert count() == 8  # runs before the field
  assert cpu_devices.choose(4, predict._run_config(str(tmp_path)))[0] == 4
  (tmp_path / 'config.json').write_text(json.dumps({'cpu_devices': 0}))
  with pytest.raises(ValueError, match='config.cpu_devices must be a positive'):
    count()
