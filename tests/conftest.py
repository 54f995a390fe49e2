"""Shared fixtures: the real data sets of ../shared/data, extracted once.

The archives are extracted into the ignored folder .cache/data at the
repository root (the same place `make data` uses), so repeated test runs and
the documented commands share one copy.
"""

import fcntl
import os
import pathlib
import shutil
import tarfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get('AISCI_SHARED_DATA',
                                          REPO.parent / 'shared' / 'data'))
CACHE = REPO / '.cache' / 'data'


def extract_shared(name: str) -> pathlib.Path:
  """Extracts ../shared/data/NAME.tar.gz into .cache/data once; returns the folder."""
  target = CACHE / name
  if (target / '.extracted').exists():
    return target
  archive = SHARED_DATA / f'{name}.tar.gz'
  if not archive.exists():
    pytest.fail(f'Real data {archive} is missing: the tests read the shared '
                'data sets from ../shared/data (set AISCI_SHARED_DATA to '
                'another folder that holds the archives).')
  CACHE.mkdir(parents=True, exist_ok=True)
  with open(CACHE / f'.{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers extract once
    if not (target / '.extracted').exists():
      with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter='data')
      (target / '.extracted').touch()
  return target


@pytest.fixture(scope='session')
def cifar10_dir() -> pathlib.Path:
  """The full CIFAR-10 JPEG folder: {train,test}/<class>/NNNN.jpg."""
  return extract_shared('cifar10-jpeg')


@pytest.fixture(scope='session')
def cifar10_small(cifar10_dir, tmp_path_factory) -> pathlib.Path:
  """A real CIFAR-10 subset: 200 train and 50 test images per class."""
  root = tmp_path_factory.mktemp('cifar10_small')
  for split, count in (('train', 200), ('test', 50)):
    for class_dir in sorted((cifar10_dir / split).iterdir()):
      out = root / split / class_dir.name
      out.mkdir(parents=True)
      for image in sorted(class_dir.iterdir())[:count]:
        shutil.copy(image, out / image.name)
  return root
