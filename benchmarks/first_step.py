"""The whole `python -m aisci.main` start-up: seconds from launching it to
its first logged train step, with empty and with filled caches (JAX's
compilation cache, and the decoded images of aisci/data/decoded_cache.py,
both kept in $XDG_CACHE_HOME, here a scratch folder). Unlike benchmarks/startup.py (synthetic batch, the step alone), this
includes everything the entry point does first: flags, the huge-page
restart, listing and decoding the data, building the input pipeline.

  python -m benchmarks.first_step --dataset=imagefolder:.cache/data/cifar10-jpeg
  python -m benchmarks.first_step --config=configs/cifar_fast.py:cpu_airbench_opt \\
      --dataset=imagefolder:.cache/data/cifar10-jpeg --repeats=3
  # another checkout (e.g. an older commit in a git worktree), same data:
  python -m benchmarks.first_step --dataset=imagefolder:$PWD/.cache/data/cifar10-jpeg \\
      --checkouts=.,/tmp/old_checkout

Each run is killed once its first step is logged (log_every_steps=1).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import common

_CONFIG = flags.DEFINE_string('config', 'configs/vit_cifar.py:tiny',
                              'Config file[:variant], as aisci.main takes it.')
_DATASET = flags.DEFINE_string(
    'dataset', None, 'config.dataset, e.g. imagefolder:PATH (an absolute path '
    'when --checkouts names other folders).', required=True)
_CHECKOUTS = flags.DEFINE_list(
    'checkouts', ['.'], 'Folders to run `python -m aisci.main` in (this '
    "checkout: '.'); runs alternate between them.")
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Cold + warm pairs per checkout.')
_MAIN_FLAGS = flags.DEFINE_string(
    'main_flags', '', 'More flags for aisci.main, space-separated, e.g. '
    "'--config.model.width=64 --cpu_devices=2'.")
_MARKS = ('Train:', 'Training steps', 'step 1/')


def first_step(checkout: str, cache_dir: str, workdir: str) -> dict[str, float]:
  """Seconds from launch to each of _MARKS in the log of one fresh run.

  cache_dir: $XDG_CACHE_HOME for it (compiled programs, decoded images).
  """
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, '-m', 'aisci.main', f'--config={_CONFIG.value}',
             f'--config.dataset={_DATASET.value}', f'--workdir={workdir}',
             f'--compilation_cache_dir={os.path.join(cache_dir, "aisci", "jax")}',
             '--config.total_steps=1000', '--config.log_every_steps=1',
             *_MAIN_FLAGS.value.split()]
  start = time.perf_counter()
  # Checkouts older than the decoded-image cache just ignore this variable.
  env = dict(os.environ, XDG_CACHE_HOME=cache_dir)
  process = subprocess.Popen(command, cwd=checkout, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
  seen, log = {}, []
  for line in process.stderr:
    log.append(line)
    for mark in _MARKS:
      if mark in line and mark not in seen:
        seen[mark] = time.perf_counter() - start
    if _MARKS[-1] in seen:
      break
  process.kill()
  process.wait()
  if _MARKS[-1] not in seen:
    raise RuntimeError(f'No first step logged by {command} in {checkout}:\n'
                       + ''.join(log[-30:]))
  return seen


def main(argv):
  del argv
  common.header(f'python -m aisci.main --config={_CONFIG.value} '
                f'--config.dataset={_DATASET.value}: launch to the first '
                'logged step')
  rows = []
  with tempfile.TemporaryDirectory(prefix='aisci_first_step_') as scratch:
    for repeat in range(_REPEATS.value):
      for kind in ('cold caches', 'warm caches'):
        for i, checkout in enumerate(_CHECKOUTS.value):
          cache_dir = os.path.join(scratch, f'cache{i}')
          if kind == 'cold caches':
            shutil.rmtree(cache_dir, ignore_errors=True)
          marks = first_step(os.path.abspath(checkout), cache_dir,
                             os.path.join(scratch, 'workdir'))
          rows.append([checkout, kind, repeat + 1,
                       *(f'{marks.get(m, float("nan")):.1f}' for m in _MARKS),
                       common.load().split()[0]])
          print('#  ', *rows[-1], flush=True)
  print()
  print(common.table(['checkout', 'caches', 'run', 'data listed s',
                      'training begins s', 'first step logged s', 'load'],
                     rows))


if __name__ == '__main__':
  app.run(main)
