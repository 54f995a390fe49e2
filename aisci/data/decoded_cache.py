"""Decoded images kept on disk between runs (imagefolder, config.input.cache).

With config.input.cache=True every run starts by decoding its image folders
into memory: CIFAR-10's 60,000 JPEGs take ~4 s on 2 cores, at every start,
for the same pixels. Once decoded, a split is saved here as one
uncompressed .npz (CIFAR-10's training split: 150 MB) and the next run with
the same files and image size reads it back instead, as tensorflow-datasets
reads a prepared dataset instead of preparing it again.

An entry is found by what made it: the folder and split, the image size,
this process's share of the files, each file's path, size and modification
time, and the Pillow version that decoded it. Changing, adding or removing
a file therefore decodes the split again, and the entry it replaces is
deleted, as are temporary files that a killed run left mid-write. The
folder is kept under a size (--data_cache_max_gb, default 20 GB): after
each save, the entries used longest ago (a read counts as a use) are
deleted until the rest fit, and a split larger than the whole limit is not
saved. Splits that decode in under MIN_DECODE_SECS are not saved.
Unreadable files are recorded too, so config.input.skip_corrupt behaves as
on a first run.

Off unless enable() is called: `python -m aisci.main` does, in
--data_cache_dir (default $XDG_CACHE_HOME/aisci/images or
~/.cache/aisci/images; '' turns it off).
"""

import hashlib
import json
import os
import tempfile
import time
import zipfile
from typing import Optional, Sequence

from absl import logging
import numpy as np
import PIL

from aisci import user_cache

# Raised when what an entry holds changes, so older entries are not read.
_FORMAT = 1
# Splits that decode faster than this are not worth a disk entry (~2,000
# CIFAR-sized images), like the compilation cache's minimum compile time.
# CIFAR-10's test split (0.7 s in 2 processes) is worth one.
MIN_DECODE_SECS = 0.5
# Temporary files older than this are what a killed run left mid-write
# (writing CIFAR-10's training split takes well under a second).
_ABANDONED_SECS = 3600
DEFAULT_MAX_GB = 20.0
_directory: Optional[str] = None
_max_bytes: Optional[float] = None  # None: no limit


def default_dir() -> str:
  """$XDG_CACHE_HOME/aisci/images, else ~/.cache/aisci/images."""
  return user_cache.default_dir('images')


def enable(directory: Optional[str] = None,
           max_gb: float = DEFAULT_MAX_GB) -> Optional[str]:
  """Keeps decoded splits in `directory` (None: default_dir(); '': off),
  at most `max_gb` GB of them (0: no limit).

  Returns the directory used, or None.
  """
  global _directory, _max_bytes
  if max_gb < 0:
    raise ValueError(f'--data_cache_max_gb={max_gb} must be >= 0 (0: no '
                     'limit).')
  _directory = user_cache.prepare(directory, 'images', 'data_cache_dir',
                                  'decoded-image cache')
  _max_bytes = max_gb * 1e9 if max_gb else None
  return _directory


def _entry(root: str, split: str, image_size: int, share: tuple[int, int],
           paths: Sequence[str]) -> tuple[str, str]:
  """(the file-name prefix of this process's share of the split at this
  size, whatever its files; the full file name of this listing)."""
  where = hashlib.sha256(json.dumps(
      [os.path.abspath(root), split, image_size, *share]).encode()
                         ).hexdigest()[:16]
  what = hashlib.sha256(f'{_FORMAT}\0{PIL.__version__}\n'.encode())
  for path in paths:
    stat = os.stat(path)
    what.update(f'{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return f'{where}-', f'{where}-{what.hexdigest()[:32]}.npz'


class Outcomes(list):
  """decoded()'s outcomes, with `images`: the readable ones' images stacked,
  [readable, size, size, 3] uint8, in order. Callers take that array as it
  is instead of stacking the rows again (150 MB for CIFAR-10's training
  split)."""

  def __init__(self, outcomes, images: np.ndarray):
    super().__init__(outcomes)
    self.images = images


def _read(file: str, count: int, image_size: int) -> Optional[Outcomes]:
  """The outcomes saved in `file`, or None (logged) if it does not hold
  `count` of them with images of `image_size`."""
  try:
    with np.load(file, allow_pickle=False) as saved:
      images, ok = saved['images'], saved['ok'].astype(bool)
      messages = json.loads(str(saved['messages']))
    if (len(ok) != count or len(images) != ok.sum()
        or len(messages) != count - ok.sum() or images.dtype != np.uint8
        or images.shape[1:] != (image_size, image_size, 3)):
      raise ValueError('it does not match the listing')
  except (OSError, ValueError, KeyError, EOFError,
          zipfile.BadZipFile) as e:  # a damaged or foreign file
    logging.warning('Ignoring the unreadable decoded-image cache entry %s '
                    '(%s); decoding the images again.', file, e)
    return None
  rows, messages = iter(images), iter(messages)
  return Outcomes([(True, next(rows)) if good
                   else (False, ValueError(next(messages))) for good in ok],
                  images)


def _stacked(outcomes: Sequence[tuple[bool, object]], image_size: int
             ) -> np.ndarray:
  images = [value for good, value in outcomes if good]
  return (np.stack(images) if images else
          np.zeros((0, image_size, image_size, 3), np.uint8))


def _write(directory: str, prefix: str, name: str, outcomes: Outcomes
           ) -> None:
  if _max_bytes is not None and outcomes.images.nbytes > _max_bytes:
    logging.info('Not saving %d decoded images (%.1f GB): over the cache\'s '
                 'limit, --data_cache_max_gb=%g.', len(outcomes.images),
                 outcomes.images.nbytes / 1e9, _max_bytes / 1e9)
    return
  # Written under a temporary name and renamed: a run that is killed, or
  # another run writing the same entry, never leaves half a file to read.
  handle, temporary = tempfile.mkstemp(dir=directory, suffix='.tmp')
  try:
    with os.fdopen(handle, 'wb') as f:
      np.savez(f, ok=np.asarray([good for good, _ in outcomes], bool),
               images=outcomes.images,
               messages=json.dumps([str(value) for good, value in outcomes
                                    if not good]))
    os.replace(temporary, os.path.join(directory, name))
  except OSError as e:  # e.g. a full disk: the run goes on without it
    logging.warning('Could not save decoded images in %s (%s); the next run '
                    'decodes them again.', directory, e)
    if os.path.exists(temporary):
      os.remove(temporary)
    return
  logging.info('Saved %d decoded images (%.0f MB) in %s; the next run with '
               'the same files reads them from there.', len(outcomes.images),
               os.path.getsize(os.path.join(directory, name)) / 1e6,
               os.path.join(directory, name))
  now = time.time()
  for stale in os.listdir(directory):
    path = os.path.join(directory, stale)
    try:
      if ((stale.startswith(prefix) and stale != name)  # an older listing
          or (stale.endswith('.tmp')
              and now - os.path.getmtime(path) > _ABANDONED_SECS)):
        os.remove(path)
    except OSError:
      pass  # another run removed it first
  _evict(directory, keep=name)


def _evict(directory: str, keep: str) -> None:
  """Deletes the entries used longest ago (not `keep`) until the folder's
  entries fit in the limit."""
  if _max_bytes is None:
    return
  entries = []
  for name in os.listdir(directory):
    if name.endswith('.npz'):
      try:
        stat = os.stat(os.path.join(directory, name))
      except OSError:
        continue  # another run removed it
      entries.append((stat.st_mtime, stat.st_size, name))
  total = sum(size for _, size, _ in entries)
  for _, size, name in sorted(entries):  # least recently used first
    if total <= _max_bytes:
      break
    if name == keep:
      continue
    try:
      os.remove(os.path.join(directory, name))
    except OSError:
      continue
    total -= size
    logging.info('Deleted the decoded-image cache entry %s (%.0f MB, used '
                 'least recently) to keep %s under --data_cache_max_gb=%g.',
                 name, size / 1e6, directory, _max_bytes / 1e9)


def _decode(decode, paths: Sequence[str], image_size: int
            ) -> tuple[Outcomes, float]:
  """(decode(paths) as Outcomes, the seconds decoding took)."""
  start = time.perf_counter()
  outcomes = list(decode(paths))
  seconds = time.perf_counter() - start
  return Outcomes(outcomes, _stacked(outcomes, image_size)), seconds


def decoded(root: str, split: str, image_size: int, paths: Sequence[str],
            decode, share: tuple[int, int] = (0, 1)) -> Outcomes:
  """decode(paths): (True, image) or (False, ValueError) for each path; or
  the saved outcomes of an earlier run with the same files (module
  docstring). share: (process index, process count) that chose `paths`."""
  if _directory is None or not paths:
    return _decode(decode, paths, image_size)[0]
  prefix, name = _entry(root, split, image_size, share, paths)
  file = os.path.join(_directory, name)
  if os.path.exists(file):
    outcomes = _read(file, len(paths), image_size)
    if outcomes is not None:
      logging.info('Read %d decoded images of %s/%s from %s.', len(paths),
                   root, split, file)
      try:
        os.utime(file)  # used now: the size limit deletes others first
      except OSError:
        pass  # a read-only cache is still read
      return outcomes
  outcomes, seconds = _decode(decode, paths, image_size)
  if seconds >= MIN_DECODE_SECS:
    _write(_directory, prefix, name, outcomes)
  return outcomes
