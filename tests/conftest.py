"""Shared fixtures: the real data sets of ../shared/data, extracted once.

The archives are extracted into the ignored folder .cache/data at the
repository root (the same place `make data` uses), so repeated test runs and
the documented commands share one copy.
"""

import collections
import fcntl
import functools
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
def isbi() -> pathlib.Path:
  """ISBI 2012 membrane slices: {train,test}/{images,masks}/*.png."""
  return extract_shared('isbi2012-membrane')


@pytest.fixture(scope='session')
def sst2() -> pathlib.Path:
  """SST-2 sentences: train.tsv, dev.tsv (sentence, label)."""
  return extract_shared('sst2')


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


@pytest.fixture(scope='session')
def tiny_vit_run(cifar10_small, tmp_path_factory) -> pathlib.Path:
  """Workdir of a tiny ViT (width 32, 1 block, patch 8) trained 40 steps on
  `cifar10_small`: checkpoints at steps 20 and 40. For tests of what uses a
  finished run (prediction, export); about 10 s on 2 CPU cores."""
  from aisci.train import loop  # pylint: disable=g-import-not-at-top
  from configs import vit_cifar  # pylint: disable=g-import-not-at-top
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{cifar10_small}'
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=100)
  config.optimizer.learning_rate = 2e-3
  config.schedule.warmup_steps = 2
  config.update(total_steps=40, log_every_steps=20, eval_every_steps=1000,
                checkpoint_every_steps=20, keep_checkpoints=2)
  workdir = tmp_path_factory.mktemp('tiny_vit_run')
  loop.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='session')
def small_text(sst2):
  """A factory of transformer_text.py:sst2 shrunk for tests (vocabulary
  2,000, 32 tokens, one block of width 32): each call a fresh config.
  test_tasks_train.py's trained text run and test_predict_tasks.py's
  text_run are this config for 80 steps, so whichever runs second loads the
  other's compiled programs from the session's compilation cache."""
  from configs import transformer_text  # pylint: disable=g-import-not-at-top

  def make():
    config = transformer_text.get_config('sst2')
    config.dataset = f'tsv:{sst2}'
    config.input.update(vocab_size=2000, max_length=32, batch_size=64)
    config.model.update(width=32, depth=1, num_heads=2, mlp_dim=64,
                        dropout=0.0, attention_dropout=0.0)
    config.schedule.warmup_steps = 5
    config.update(log_every_steps=20, eval_every_steps=40,
                  checkpoint_every_steps=40)
    return config
  return make


@functools.cache
def _jitted_apply():
  import jax  # pylint: disable=g-import-not-at-top

  @functools.partial(jax.jit, static_argnames=('model', 'train', 'mutable'))
  def jitted(model, variables, inputs, train, rngs, mutable):
    return model.apply(variables, inputs, train=train, rngs=rngs,
                       mutable=mutable)
  return jitted


def _apply(model, variables, inputs, train=False, rngs=None, mutable=False):
  import jax  # pylint: disable=g-import-not-at-top
  try:
    hash(model)
  except TypeError:  # dict fields (MultiHead): compiled for this call only
    return jax.jit(lambda v, x, r: model.apply(
        v, x, train=train, rngs=r, mutable=mutable))(variables, inputs, rngs)
  return _jitted_apply()(model, variables, inputs, train, rngs, mutable)


@pytest.fixture
def apply():
  """apply(model, variables, inputs, train=False, rngs=None, mutable=False)
  (mutable a tuple of collections, if given): model.apply as one compiled
  program, kept for the next call with the same model and shapes. Op by
  op, each of a model's primitives compiles on its own (52-65 programs,
  4.6-5.0 s, for a forward pass of the small ViTs of tests/models); the
  ViT, fast CNN, U-Net, heads and transformer files took 160 s that way,
  106 s this way."""
  return _apply


def pytest_configure(config):
  """One JAX compilation cache for the whole test session, shared by the
  xdist workers (they inherit the variable) and removed at its end: the many
  runs of the same small programs (a run and its resumption, a trained and
  an untrained model) compile once. A fresh folder each session, so a
  session's times are what CI sees."""
  if os.environ.get('AISCI_TEST_COMPILE_CACHE') is None:
    import tempfile  # pylint: disable=g-import-not-at-top
    directory = tempfile.mkdtemp(prefix='aisci_test_jax_cache_')
    os.environ['AISCI_TEST_COMPILE_CACHE'] = directory
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
  if os.environ.get('AISCI_TEST_CACHE_HOME') is None:
    # What `python -m aisci.main` keeps in $XDG_CACHE_HOME (compiled
    # programs, decoded image folders) goes there too when tests launch it,
    # not into the user's ~/.cache.
    import tempfile  # pylint: disable=g-import-not-at-top
    home = tempfile.mkdtemp(prefix='aisci_test_cache_home_')
    os.environ['AISCI_TEST_CACHE_HOME'] = os.environ['XDG_CACHE_HOME'] = home
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
  if os.environ['AISCI_TEST_COMPILE_CACHE']:
    from aisci import compile_cache  # pylint: disable=g-import-not-at-top
    compile_cache.enable(os.environ['AISCI_TEST_COMPILE_CACHE'])


# The test files that take longest, most of them for a few long tests
# (end-to-end runs, benchmark scripts), longest first (their wall time in
# `make test` runs of 2026-12-07 on 2 cores: 221 s down to 15 s).
# `make test` hands whole files to its two workers in collection order
# (--dist loadfile --no-loadscope-reorder); pytest-xdist would otherwise
# order them by their number of tests, which put the files of one or two
# long tests last: one worker ran them alone for the final ~1.5 minutes. A
# file missing here still runs, only later.
LONG_FILES = (
    'tests/test_benchmarks.py', 'tests/train/test_tasks_train.py',
    'tests/test_benchmarks_torch_cifar.py', 'tests/train/test_loop.py',
    'tests/train/test_multiprocess.py', 'tests/models/test_remat.py',
    'tests/test_benchmarks_gpu.py', 'tests/train/test_device_input.py',
    'tests/test_predict_tasks.py', 'tests/train/test_init_from.py',
    'tests/models/test_vit.py', 'tests/train/test_kill_resume.py',
    'tests/test_export.py', 'tests/models/test_resnet.py',
    'tests/train/test_sharding.py', 'tests/models/test_winograd.py',
    'tests/train/test_muon.py', 'tests/train/test_nonfinite.py',
    'tests/train/test_background_compile.py', 'tests/train/test_preemption.py',
    'tests/train/test_init_variables.py', 'tests/train/test_run_ahead.py',
    'tests/train/test_prune.py', 'tests/train/test_precision.py',
    'tests/train/test_whiten.py', 'tests/test_predict.py',
    'tests/train/test_grad_accum.py',
    'tests/tasks/test_regression_and_multi_task.py',
)


def file_order(nodeids) -> dict[str, tuple]:
  """Each test file's sort key: LONG_FILES in their order, then the other
  files by their number of tests, most first, then by name."""
  counts = collections.Counter(nodeid.split('::')[0] for nodeid in nodeids)
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  return {name: ((0, rank[name]) if name in rank else (1, -count, name))
          for name, count in counts.items()}


def pytest_collection_modifyitems(items):
  # A stable sort on the file alone keeps each file's tests together and
  # in their order; every worker sorts the same collection the same way.
  order = file_order(item.nodeid for item in items)
  items.sort(key=lambda item: order[item.nodeid.split('::')[0]])
