"""The whole `python -m aisci.predict` command: wall and CPU seconds and peak
memory, from launch to exit, with an empty and with a filled compilation
cache ($XDG_CACHE_HOME, here a scratch folder per checkout and setting).

  python -m benchmarks.predict_command --workdir=runs/vit_cifar_tiny \\
      .cache/data/cifar10-jpeg/test/airplane .cache/data/cifar10-jpeg/test/automobile
  # against another checkout (a git worktree of an older commit), and with
  # each AISCI_MALLOC setting (older checkouts ignore the variable):
  python -m benchmarks.predict_command --workdir=$PWD/runs/vit_cifar_tiny \\
      --checkouts=/tmp/old_checkout,. --mallocs=auto,/path/to/libtcmalloc_minimal.so.4 \\
      $PWD/.cache/data/cifar10-jpeg/test/airplane

Paths are passed as given: make them absolute when --checkouts names other
folders. Every run's printed predictions must be the same, or it stops.
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

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.',
                               required=True)
_CHECKOUTS = flags.DEFINE_list(
    'checkouts', ['.'], 'Folders to run `python -m aisci.predict` in (this '
    "checkout: '.'); runs alternate between them.")
_MALLOCS = flags.DEFINE_list(
    'mallocs', ['auto'], 'AISCI_MALLOC values to run each checkout with '
    "(aisci/allocator.py): 'auto', 'glibc' or a library's path.")
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Cold + warm pairs per setting.')


def predict(checkout: str, paths, cache_home: str, malloc: str
            ) -> tuple[float, float, float, str]:
  """(wall s, CPU s, peak RSS MB, stdout) of one fresh prediction."""
  command = [sys.executable, '-m', 'aisci.predict',
             f'--workdir={_WORKDIR.value}', *paths]
  env = dict(os.environ, XDG_CACHE_HOME=cache_home, AISCI_MALLOC=malloc)
  # Files, not pipes: os.wait4 gives the child's own CPU time and peak
  # memory, and a full pipe would stall the child meanwhile.
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=checkout, stdout=out, stderr=err,
                               env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    printed, stderr = out.read().decode(), err.read().decode(errors='replace')
  if process.returncode:
    raise RuntimeError(f'{command} failed in {checkout}:\n{stderr[-3000:]}')
  # ru_maxrss is in KB on Linux.
  return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, printed


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('Give the files or folders to predict.')
  common.header(f'python -m aisci.predict --workdir={_WORKDIR.value} '
                f'{" ".join(paths)}: launch to exit')
  rows, reference = [], None
  with tempfile.TemporaryDirectory(prefix='aisci_predict_') as scratch:
    for repeat in range(_REPEATS.value):
      for kind in ('empty cache', 'filled cache'):
        for i, checkout in enumerate(_CHECKOUTS.value):
          for j, malloc in enumerate(_MALLOCS.value):
            cache_home = os.path.join(scratch, f'cache{i}_{j}')
            if kind == 'empty cache':
              shutil.rmtree(cache_home, ignore_errors=True)
            wall, cpu, rss, printed = predict(os.path.abspath(checkout), paths,
                                              cache_home, malloc)
            reference = reference or printed
            if printed != reference:
              raise RuntimeError(f'{checkout} with AISCI_MALLOC={malloc} '
                                 'printed other predictions.')
            rows.append([checkout, os.path.basename(malloc), kind, repeat + 1,
                         f'{wall:.2f}', f'{cpu:.2f}', f'{rss:.0f}',
                         common.load().split()[0]])
            print('#  ', *rows[-1], flush=True)
  print()
  print(common.table(['checkout', 'AISCI_MALLOC', 'cache', 'run', 'wall s',
                      'CPU s', 'peak RSS MB', 'load'], rows))


if __name__ == '__main__':
  app.run(main)
