"""Decoding in one process per core (aisci/data/parallel_decode.py)."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aisci.data import imagefolder
from aisci.data import parallel_decode

REPO = pathlib.Path(__file__).resolve().parents[2]


def _folder_with_damage(cifar10_small, tmp_path):
  """40 real CIFAR images of two classes, a truncated JPEG and a text file
  named .jpg among them."""
  root = tmp_path / 'images'
  for name in ('cat', 'dog'):
    out = root / 'train' / name
    out.mkdir(parents=True)
    for image in sorted((cifar10_small / 'train' / name).iterdir())[:20]:
      shutil.copy(image, out / image.name)
  first = sorted((root / 'train' / 'cat').iterdir())[0]
  (root / 'train' / 'cat' / 'truncated.jpg').write_bytes(first.read_bytes()[:200])
  (root / 'train' / 'dog' / 'notes.jpg').write_text('not an image')
  return root


def test_processes_decode_what_one_process_decodes(cifar10_small, tmp_path):
  root = _folder_with_damage(cifar10_small, tmp_path)
  paths = sorted(str(p) for p in (root / 'train').glob('*/*.jpg'))
  expected = [imagefolder._outcome(lambda p: imagefolder.load_image(p, 24), p)
              for p in paths]
  got = parallel_decode.decode(paths, 24, workers=3)
  assert [ok for ok, _ in got] == [ok for ok, _ in expected]
  assert sum(not ok for ok, _ in got) == 2
  for (_, g), (_, e) in zip(got, expected):
    if isinstance(e, ValueError):
      assert isinstance(g, ValueError) and str(g) == str(e)
    else:
      assert g.dtype == np.uint8 and g.shape == (24, 24, 3)
      np.testing.assert_array_equal(g, e)


_SCRIPT_WITHOUT_MAIN_GUARD = '''
import sys
from aisci.data import imagefolder, parallel_decode
parallel_decode.MIN_IMAGES = int(sys.argv[2])
source = imagefolder.make_source(sys.argv[1], 'train', image_size=32,
                                 skip_corrupt=True)
arrays = source.load_arrays()
print(source.description, int(arrays['image'].astype(int).sum()),
      int(arrays['label'].sum()))
'''


def test_a_script_without_a_main_guard_decodes_in_processes(cifar10_small,
                                                             tmp_path):
  # multiprocessing's children would re-run this script; the workers are
  # fresh interpreters that do not. In parallel or not: the same images.
  root = _folder_with_damage(cifar10_small, tmp_path)
  script = tmp_path / 'decode.py'
  script.write_text(_SCRIPT_WITHOUT_MAIN_GUARD)
  outputs = []
  for min_images in (1, 10**9):  # in processes (one per core), then not
    result = subprocess.run(
        [sys.executable, str(script), str(root), str(min_images)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result.stdout.strip().splitlines()[-1])
  assert outputs[0] == outputs[1]
  assert 'skipped 2 unreadable' in outputs[0]


def test_small_folders_decode_in_the_calling_process(monkeypatch):
  monkeypatch.setattr(os, 'cpu_count', lambda: 16)
  assert parallel_decode.workers_for(parallel_decode.MIN_IMAGES - 1) == 1
  assert parallel_decode.workers_for(parallel_decode.MIN_IMAGES) == 8
  assert parallel_decode.workers_for(60_000) == 16
  monkeypatch.setattr(os, 'cpu_count', lambda: 1)
  assert parallel_decode.workers_for(60_000) == 1


def test_a_failed_worker_falls_back_to_decoding_here(cifar10_small, tmp_path,
                                                      monkeypatch):
  # Workers that cannot start (here: no interpreter at sys.executable)
  # cost the parallel decoding, not the run.
  root = _folder_with_damage(cifar10_small, tmp_path)
  monkeypatch.setattr(parallel_decode, 'MIN_IMAGES', 1)
  monkeypatch.setattr(parallel_decode.sys, 'executable',
                      str(tmp_path / 'no-python'))
  with pytest.raises(OSError):
    parallel_decode.decode([str(tmp_path)], 32, workers=2)
  source = imagefolder.make_source(str(root), 'train', image_size=32,
                                   skip_corrupt=True)
  assert source.num_examples == 40
  monkeypatch.setattr(parallel_decode, 'MIN_IMAGES', 10**9)
  reference = imagefolder.make_source(str(root), 'train', image_size=32,
                                      skip_corrupt=True)
  np.testing.assert_array_equal(source.load_arrays()['image'],
                                reference.load_arrays()['image'])
