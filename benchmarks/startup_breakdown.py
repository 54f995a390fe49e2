"""Where a start-up's seconds go, phase by phase, in this process.

  python -m benchmarks.startup_breakdown --model=vit_tiny   # run twice: the
  # first fills the cache directory, the second shows a warm start

Imports (each library alone, in the order aisci.main loads them), then
building and jitting init and the train step (benchmarks/models.py, as
aisci/train/loop.py does) with JAX's persistent compilation cache in
--cache_dir (lowering always runs; compiling is a cache load when warm),
then the first and second executed steps; Python's garbage collector
paused until then, as aisci.main pauses it (aisci/gc_pause.py;
AISCI_GC_PAUSE=0: not). Complements
benchmarks/startup.py, which times whole fresh processes.
"""

import time

_MARKS = [('start', time.perf_counter(), time.process_time())]


def _mark(name):
  _MARKS.append((name, time.perf_counter(), time.process_time()))


# pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position
from aisci import gc_pause  # noqa: E402
gc_pause.pause()  # as aisci.main does (AISCI_GC_PAUSE=0: not)
import numpy  # noqa: E402,F401
_mark('import numpy')
import jax  # noqa: E402
_mark('import jax')
import flax.linen  # noqa: E402,F401
_mark('import flax')
import optax  # noqa: E402,F401
_mark('import optax')
import orbax.checkpoint  # noqa: E402,F401
_mark('import orbax')
from aisci import tf_import  # noqa: E402
tf_import.load()  # TensorFlow, as aisci imports it for tf.data
_mark('import tensorflow')
from aisci.train import loop  # noqa: E402,F401
_mark('import aisci (rest)')

import os  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from aisci import compile_cache  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import models as bench_models  # noqa: E402
# pylint: enable=g-import-not-at-top,g-bad-import-order,wrong-import-position

_MODEL = flags.DEFINE_string('model', 'vit_tiny', f'One of {list(bench_models.MODELS)}.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_DEVICES = flags.DEFINE_integer('devices', 8, 'CPU devices.')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', os.path.join('/tmp', 'aisci_startup_breakdown_cache'),
    'Compilation cache directory (kept between runs).')


def main(argv):
  del argv
  jax.config.update('jax_num_cpu_devices', _DEVICES.value)
  warm = os.path.isdir(_CACHE_DIR.value) and bool(os.listdir(_CACHE_DIR.value))
  compile_cache.enable(_CACHE_DIR.value)
  init, rng, train_step, batch = bench_models.aisci_jitted(_MODEL.value,
                                                           _BATCH.value)
  _mark('build model, optimizer, shardings, batch')
  lowered = init.lower(rng)
  _mark('init: trace + lower')
  compiled = lowered.compile()
  _mark('init: compile / cache load')
  state = jax.block_until_ready(compiled(rng))
  _mark('init: run')
  lowered = train_step.lower(state, batch)
  _mark('step: trace + lower')
  compiled = lowered.compile()
  _mark('step: compile / cache load')
  state, _ = jax.block_until_ready(compiled(state, batch))
  _mark('step: first run')
  jax.block_until_ready(compiled(state, batch))
  _mark('step: second run')
  gc_pause.resume()
  print(f'# {_MODEL.value}, batch {_BATCH.value}, {_DEVICES.value} CPU devices, '
        f'{"warm" if warm else "cold"} cache {_CACHE_DIR.value}; '
        f'{os.environ.get("GLIBC_TUNABLES", "default malloc")}')
  rows = [[name, f'{t1 - t0:.2f}', f'{c1 - c0:.2f}']
          for (_, t0, c0), (name, t1, c1) in zip(_MARKS, _MARKS[1:])]
  rows.append(['to the first step done', f'{_MARKS[-2][1] - _MARKS[0][1]:.2f}',
               f'{_MARKS[-2][2] - _MARKS[0][2]:.2f}'])
  print(common.table(['phase', 'wall s', 'CPU s'], rows))


if __name__ == '__main__':
  app.run(main)
