"""Start-up: time to the first finished train step in a fresh process, without
and with JAX's persistent compilation cache (aisci/compile_cache.py, on by
default in `python -m aisci.main`).

  python -m benchmarks.startup
  python -m benchmarks.startup --models=vit_ti4 --devices=1
  python -m benchmarks.startup --on_device   # a run that imports no TensorFlow

Each run is a new Python process that does what `aisci.main` does before
its first step: import aisci and TensorFlow (which a tf.data input pipeline
imports when it is built; not with --on_device, as with
config.input.on_device=True), split the CPU into the config's
`cpu_devices` (or `--devices`), enable the cache, compile the initial
state's program on a worker thread while the train step is compiled (as
aisci/train/loop.py does, aisci/train/background_compile.py), initialise
the state and run one train step (synthetic batch, so that decoding data
does not hide compilation), with Python's garbage collector paused as
aisci.main pauses it (aisci/gc_pause.py; AISCI_GC_PAUSE=0: not). Three
runs per model: cache off; cache on but empty (compiles and writes it);
cache on and filled by the previous run (the second start-up of the same
experiment).
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

_MODELS = flags.DEFINE_list('models', ['vit_tiny', 'resnet18_tiny', 'vit_ti4'],
                            f'Any of {list(bench_models.MODELS)}.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_DEVICES = flags.DEFINE_integer(
    'devices', 0, "CPU devices, as aisci.main's --cpu_devices; 0: each "
    "model's config.cpu_devices, as aisci.main runs it.")
_ON_DEVICE = flags.DEFINE_bool(
    'on_device', False, 'Time a run whose batches are made on the devices '
    '(config.input.on_device=True): TensorFlow is not imported. Default: it '
    'is, as a tf.data pipeline imports it before the first step.')
_GRAD_ACCUM = flags.DEFINE_integer(
    'grad_accum_steps', None, "Micro-batches per step, as config."
    "grad_accum_steps (configs/vit_cifar.py suggests 4 for ViT-Ti/4 on a "
    "CPU); default: the model's config.")
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Runs of each kind (median).')
# Internal: one start-up, in this process.
_WORKER = flags.DEFINE_bool('worker', False, 'Internal.')
_MODEL = flags.DEFINE_string('model', None, 'Internal.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', '', 'Internal; \'\' = no cache.')


def worker() -> dict:
  """One start-up; wall and CPU seconds of each phase (CPU: all threads)."""
  marks = [(time.perf_counter(), common.cpu_seconds())]
  # pylint: disable=g-import-not-at-top
  from aisci import gc_pause  # as aisci.main: collector off until compiled
  gc_pause.pause()
  import jax
  jax.config.update('jax_num_cpu_devices', _DEVICES.value)
  from aisci import compile_cache
  from aisci import tf_import
  from aisci.train import background_compile
  from aisci.train import loop  # noqa: F401  (what aisci.main imports)
  from aisci.train import steps
  # pylint: enable=g-import-not-at-top
  if not _ON_DEVICE.value:
    tf_import.load()
  compile_cache.enable(_CACHE_DIR.value)
  marks.append((time.perf_counter(), common.cpu_seconds()))
  # As aisci/train/loop.py: init compiled on a worker thread (with the
  # loop's options) while the step is traced and compiled for the abstract
  # state, then init run.
  init, rng, train_step, batch = bench_models.aisci_jitted(
      _MODEL.value, _BATCH.value, _GRAD_ACCUM.value)
  init_compiled = background_compile.start(
      init, rng,
      compiler_options=steps.init_compiler_options(jax.default_backend()))
  train_step = train_step.lower(jax.eval_shape(init, rng), batch).compile()
  state = jax.block_until_ready(init_compiled.result()(rng))
  marks.append((time.perf_counter(), common.cpu_seconds()))
  jax.block_until_ready(train_step(state, batch))
  marks.append((time.perf_counter(), common.cpu_seconds()))
  gc_pause.resume()
  wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
  cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
  return dict(import_s=wall[0], compile_s=wall[1], first_step_s=wall[2],
              cpu_import_s=cpu[0], cpu_compile_s=cpu[1], cpu_first_step_s=cpu[2],
              # The whole process up to its first step, interpreter included.
              cpu_total_s=marks[-1][1], done_at=time.time())


def _devices(model: str) -> int:
  return _DEVICES.value or bench_models.cpu_devices(model)


def run(model: str, cache_dir: str) -> dict:
  """One fresh process; wall time from its launch to its first step done
  (not to its exit: tearing down TensorFlow's threads is no part of it)."""
  devices = _devices(model)
  start = time.time()
  result = common.run_worker('benchmarks.startup', [
      '--worker', f'--model={model}', f'--cache_dir={cache_dir}',
      f'--on_device={_ON_DEVICE.value}',
      f'--batch_size={_BATCH.value}', f'--devices={devices}',
      *([f'--grad_accum_steps={_GRAD_ACCUM.value}'] if _GRAD_ACCUM.value
        else [])],
                             env=common.main_env())  # as aisci.main runs
  result['wall_s'] = result['done_at'] - start
  return result


def main(argv):
  del argv
  if _WORKER.value:
    common.emit(worker())
    return
  common.header(f'start-up to the first train step, batch {_BATCH.value}, '
                + (f'{_DEVICES.value} CPU devices' if _DEVICES.value
                   else "each config's CPU devices") + '; TensorFlow '
                + ('not imported (--on_device)' if _ON_DEVICE.value
                   else 'imported (a tf.data run)')
                + (f'; {_GRAD_ACCUM.value} micro-batches per step'
                   if _GRAD_ACCUM.value else ''))
  rows = []
  for name in _MODELS.value:
    bench_models.config_for(name, _BATCH.value)  # fail fast on a bad name
    with tempfile.TemporaryDirectory(prefix='aisci_jax_cache_') as cache_dir:
      kinds = {}
      for kind, directory in (('no cache', ''), ('cold cache', cache_dir),
                              ('warm cache', cache_dir)):
        results = []
        for _ in range(_REPEATS.value):
          if kind == 'cold cache':  # empty it: every cold run compiles
            subprocess.run(['rm', '-rf', cache_dir], check=True)
            os.makedirs(cache_dir)
          results.append(run(name, directory))
        best = sorted(results, key=lambda r: r['wall_s'])[len(results) // 2]
        kinds[kind] = best
        print(f'#   {name} {kind}: wall {best["wall_s"]:.1f} s (imports '
              f'{best["import_s"]:.1f}, compile + init {best["compile_s"]:.1f}, first step '
              f'{best["first_step_s"]:.1f}); CPU {best["cpu_total_s"]:.1f} s '
              f'(imports {best["cpu_import_s"]:.1f}, compile + init '
              f'{best["cpu_compile_s"]:.1f}, first step '
              f'{best["cpu_first_step_s"]:.1f}); load {common.load()}',
              flush=True)
      entries = len(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else 0
    warm, cold, off = (kinds[k] for k in ('warm cache', 'cold cache',
                                           'no cache'))
    rows.append([f'{bench_models.MODELS[name][2]} [{_devices(name)} dev]',
                 f'{off["wall_s"]:.1f} / {off["cpu_total_s"]:.1f}',
                 f'{cold["wall_s"]:.1f} / {cold["cpu_total_s"]:.1f}',
                 f'{warm["wall_s"]:.1f} / {warm["cpu_total_s"]:.1f}',
                 f'{100 * warm["wall_s"] / off["wall_s"]:.0f} %',
                 f'{100 * warm["cpu_total_s"] / off["cpu_total_s"]:.0f} %',
                 entries, common.load().split()[0]])
  print()
  print(common.table(
      ['model', 'no cache s', 'cold cache s', 'warm cache s',
       'warm / no cache (wall)', 'warm / no cache (CPU)', 'cache entries',
       'load'], rows))
  print(f'\n(s: wall / CPU seconds of a fresh `{os.path.basename(sys.executable)}'
        ' -m ...` up to its first train step done, imports included)')


if __name__ == '__main__':
  app.run(main)
