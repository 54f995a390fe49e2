"""aisci/data/decoded_cache.py: decoded image folders kept between runs."""

import os
import pathlib
import shutil
import tracemalloc

import numpy as np
import pytest

from aisci.data import decoded_cache
from aisci.data import imagefolder


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
  """An enabled cache that saves every split, however fast it decodes."""
  monkeypatch.setattr(decoded_cache, 'MIN_DECODE_SECS', 0.0)
  directory = tmp_path / 'decoded'
  assert decoded_cache.enable(str(directory)) == str(directory)
  yield directory
  decoded_cache.enable('')


@pytest.fixture
def folder(cifar10_small, tmp_path) -> pathlib.Path:
  """Real CIFAR-10 JPEGs: 20 training images of each of 3 classes."""
  root = tmp_path / 'images'
  for class_dir in sorted((cifar10_small / 'train').iterdir())[:3]:
    out = root / 'train' / class_dir.name
    out.mkdir(parents=True)
    for image in sorted(class_dir.iterdir())[:20]:
      shutil.copy(image, out / image.name)
  return root


def _no_decoding(monkeypatch):
  """Makes any decoding of image files fail the test."""
  def fail(*args, **kwargs):
    raise AssertionError(f'decoded again: {args[:1]}')
  monkeypatch.setattr(imagefolder, '_decoded', fail)


def _images(source) -> np.ndarray:
  return source.load_arrays()['image']


def test_a_second_run_reads_the_same_images_without_decoding(
    folder, cache_dir, monkeypatch):
  first = imagefolder.make_source(str(folder), 'train', image_size=32)
  assert len(list(cache_dir.iterdir())) == 1
  _no_decoding(monkeypatch)
  second = imagefolder.make_source(str(folder), 'train', image_size=32)
  np.testing.assert_array_equal(_images(second), _images(first))
  np.testing.assert_array_equal(second.load_arrays()['label'],
                                first.load_arrays()['label'])
  assert second.num_examples == 60
  assert second.class_names == first.class_names
  # And those are the pixels PIL decodes from the files.
  files = sorted((folder / 'train').rglob('*.jpg'))
  np.testing.assert_array_equal(_images(second)[0],
                                imagefolder.load_image(str(files[0]), 32))


def test_an_entry_is_read_without_a_second_copy_of_its_images(folder,
                                                              cache_dir):
  """The entry's array becomes the source's (Outcomes.images), not a stack
  of its rows: a warm read's peak memory stays near one copy."""
  # Large enough that numpy's read buffers (256 KB) are small beside it.
  first = imagefolder.make_source(str(folder), 'train', image_size=128)
  size = _images(first).nbytes  # 60 x 128 x 128 x 3 = 2.9 MB
  tracemalloc.start()
  try:
    second = imagefolder.make_source(str(folder), 'train', image_size=128)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  np.testing.assert_array_equal(_images(second), _images(first))
  assert size < peak < 1.5 * size, (peak, size)


def test_another_image_size_or_a_changed_file_decodes_again(
    folder, cache_dir, monkeypatch):
  imagefolder.make_source(str(folder), 'train', image_size=32)
  resized = imagefolder.make_source(str(folder), 'train', image_size=16)
  assert _images(resized).shape == (60, 16, 16, 3)
  assert len(list(cache_dir.iterdir())) == 2  # one entry per image size

  # Replace one image by another class's image (a different file size).
  files = sorted((folder / 'train').rglob('*.jpg'))
  replaced, other = files[0], files[-1]
  shutil.copy(other, replaced)
  changed = imagefolder.make_source(str(folder), 'train', image_size=32)
  np.testing.assert_array_equal(_images(changed)[0],
                                imagefolder.load_image(str(other), 32))
  # The entry of the old listing was replaced, the 16-pixel one is kept.
  assert len(list(cache_dir.iterdir())) == 2
  decode = imagefolder._decoded  # pylint: disable=protected-access
  _no_decoding(monkeypatch)
  again = imagefolder.make_source(str(folder), 'train', image_size=32)
  np.testing.assert_array_equal(_images(again), _images(changed))
  monkeypatch.setattr(imagefolder, '_decoded', decode)

  # An added image (sorted first) replaces the entry too.
  before = {entry.name for entry in cache_dir.iterdir()}
  shutil.copy(other, replaced.parent / '0000_added.jpg')
  added = imagefolder.make_source(str(folder), 'train', image_size=32)
  assert added.num_examples == 61
  after = {entry.name for entry in cache_dir.iterdir()}
  assert len(after) == 2 and len(after - before) == 1


def test_unreadable_files_are_remembered_for_skip_corrupt(
    folder, cache_dir, monkeypatch):
  broken = sorted((folder / 'train').rglob('*.jpg'))[5]
  broken.write_bytes(b'not a JPEG')
  with pytest.raises(ValueError, match=str(broken)):
    imagefolder.make_source(str(folder), 'train', image_size=32)
  first = imagefolder.make_source(str(folder), 'train', image_size=32,
                                  skip_corrupt=True)
  _no_decoding(monkeypatch)
  second = imagefolder.make_source(str(folder), 'train', image_size=32,
                                   skip_corrupt=True)
  assert second.num_examples == first.num_examples == 59
  assert second.description == first.description
  assert 'skipped 1 unreadable' in second.description
  np.testing.assert_array_equal(_images(second), _images(first))
  with pytest.raises(ValueError, match=str(broken)):  # still named
    imagefolder.make_source(str(folder), 'train', image_size=32)


def test_a_damaged_entry_is_decoded_again_and_replaced(folder, cache_dir):
  first = imagefolder.make_source(str(folder), 'train', image_size=32)
  (entry,) = cache_dir.iterdir()
  whole = entry.read_bytes()
  entry.write_bytes(whole[:1000])  # cut short
  second = imagefolder.make_source(str(folder), 'train', image_size=32)
  np.testing.assert_array_equal(_images(second), _images(first))
  assert entry.stat().st_size == len(whole)  # written again, whole
  # A readable file whose contents do not match the listing.
  np.savez(entry, ok=np.ones(60, bool), messages='[]',
           images=np.zeros((59, 32, 32, 3), np.uint8))
  third = imagefolder.make_source(str(folder), 'train', image_size=32)
  np.testing.assert_array_equal(_images(third), _images(first))
  assert entry.stat().st_size == len(whole)


def test_a_killed_writes_leftover_is_removed_but_a_fresh_one_kept(
    folder, cache_dir):
  abandoned, writing = cache_dir / 'tmpabandoned.tmp', cache_dir / 'tmpnow.tmp'
  abandoned.write_bytes(b'half an entry')
  writing.write_bytes(b'another run writing now')
  two_hours_ago = os.path.getmtime(abandoned) - 7200
  os.utime(abandoned, (two_hours_ago, two_hours_ago))
  imagefolder.make_source(str(folder), 'train', image_size=32)
  names = sorted(entry.name for entry in cache_dir.iterdir())
  assert len(names) == 2 and 'tmpnow.tmp' in names, names
  assert names[0].endswith('.npz')


def test_off_or_fast_splits_write_nothing(folder, tmp_path, monkeypatch):
  directory = tmp_path / 'decoded'
  assert decoded_cache.enable('') is None
  imagefolder.make_source(str(folder), 'train', image_size=32)
  assert not directory.exists()
  try:
    decoded_cache.enable(str(directory))
    monkeypatch.setattr(decoded_cache, 'MIN_DECODE_SECS', 1e9)
    imagefolder.make_source(str(folder), 'train', image_size=32)
    assert directory.is_dir() and not list(directory.iterdir())
  finally:
    decoded_cache.enable('')


def test_default_dir_and_an_unusable_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert decoded_cache.default_dir() == os.path.join(str(tmp_path), 'aisci',
                                                     'images')
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(ValueError, match='--data_cache_dir'):
    decoded_cache.enable(str(blocker / 'images'))


def _split(root, name, count, jpegs):
  """root/NAME/train/<2 classes>/ with `count` real JPEGs each."""
  for c in ('a', 'b'):
    out = root / name / 'train' / c
    out.mkdir(parents=True)
    for i in range(count):
      shutil.copy(jpegs[i % len(jpegs)], out / f'{i}.jpg')
  return str(root / name)


def test_the_folder_keeps_under_its_limit_deleting_the_least_recently_used(
    folder, tmp_path, monkeypatch):
  monkeypatch.setattr(decoded_cache, 'MIN_DECODE_SECS', 0.0)
  jpegs = sorted((folder / 'train').rglob('*.jpg'))
  roots = {n: _split(tmp_path, n, 10, jpegs) for n in ('one', 'two', 'three')}
  entry = 20 * 32 * 32 * 3  # bytes of images per split, plus a small header
  directory = tmp_path / 'decoded'
  # Room for two entries, not three.
  decoded_cache.enable(str(directory), max_gb=2.5 * entry / 1e9)
  try:
    def entries():
      return {p.name for p in directory.glob('*.npz')}

    imagefolder.make_source(roots['one'], 'train', image_size=32)
    first = entries()
    imagefolder.make_source(roots['two'], 'train', image_size=32)
    second = entries() - first
    assert len(first) == len(second) == 1
    os.utime(directory / next(iter(first)), (1, 1))  # long unused ...
    imagefolder.make_source(roots['one'], 'train', image_size=32)  # ... read
    imagefolder.make_source(roots['three'], 'train', image_size=32)
    # 'one' was read after 'two' was written: 'two' goes.
    assert first <= entries() and not second & entries()
    assert len(entries()) == 2
    # A split larger than the whole limit is not saved; the others stay.
    decoded_cache.enable(str(directory), max_gb=0.5 * entry / 1e9)
    before = entries()
    imagefolder.make_source(_split(tmp_path, 'four', 10, jpegs), 'train',
                            image_size=32)
    assert entries() == before
  finally:
    decoded_cache.enable('')


def test_a_negative_limit_is_an_error_naming_the_flag(tmp_path):
  with pytest.raises(ValueError, match='--data_cache_max_gb=-1.0 must be'):
    decoded_cache.enable(str(tmp_path), max_gb=-1.0)
