"""Weak scaling of the train step over 1, 2, 4, 8 emulated CPU devices.

  python -m benchmarks.scaling                        # ViT tiny, 16 images per device
  python -m benchmarks.scaling --devices=1,8 --per_device_batch=32 --axis=fsdp

Each device count runs in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=N, and times aisci's real
jitted train step (aisci/train/steps.py, the config's optimizer and task,
state sharded by aisci/train/sharding.py, donated, as loop.py jits it) on a
synthetic batch of N x per_device_batch images: the median over --repeats
steps after compilation and --warmup steps, each waited for.

On one CPU the emulated devices share the same cores, so images/s cannot
grow with the device count: the table shows that splitting the batch and
the cross-device collectives cost little (relative throughput near 1), not
a speed-up. On N real accelerators the same program gives up to N times
the throughput.
"""

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = 'SCALING_RESULT '

_CONFIG = flags.DEFINE_string('config', 'vit_cifar:tiny',
                              'configs/<file>.py:<variant> as FILE:VARIANT.')
_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4', '8'],
                             'Emulated CPU device counts.')
_PER_DEVICE = flags.DEFINE_integer('per_device_batch', 16,
                                   'Images per device (global = devices x this).')
_AXIS = flags.DEFINE_enum('axis', 'data', ['data', 'fsdp'],
                          'Mesh axis the devices form: data parallel, or '
                          'fsdp (parameters and optimizer state sharded too).')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed steps (median taken).')
_WORKER = flags.DEFINE_integer('worker', 0, 'Internal: measure N devices.')


def measure(num_devices: int) -> dict:
  """Median train-step time on `num_devices` devices (this process's)."""
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from aisci import models, tasks  # pylint: disable=g-import-not-at-top
  from aisci.train import optimizer, sharding, steps  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == num_devices, jax.devices()
  module, variant = _CONFIG.value.split(':')
  config = importlib.import_module(f'configs.{module}').get_config(variant)
  size, batch_size = config.input.image_size, num_devices * _PER_DEVICE.value
  model = models.build_model(config.model, num_classes=10,
                             dtype=jnp.dtype(config.dtype))
  task = tasks.build_task(config.task, num_classes=10)
  mesh = sharding.make_mesh({'data': -1} if _AXIS.value == 'data'
                            else {'data': 1, 'fsdp': -1})
  tx, schedule = optimizer.make_optimizer(config, mesh)
  init = functools.partial(steps.init_state, model=model, tx=tx,
                           example_input=jnp.zeros((1, size, size, 3)))
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  state_sharding = sharding.state_sharding(abstract, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = sharding.to_global({
      'image': rng.normal(size=(batch_size, size, size, 3)).astype(np.float32),
      'label': rng.integers(0, 10, batch_size).astype(np.int32)},
                             batch_sharding)
  train_step = jax.jit(
      functools.partial(steps.train_step, model=model, task=task, tx=tx,
                        schedule=schedule),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(_WARMUP.value + _REPEATS.value):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= _WARMUP.value:
      times.append(time.perf_counter() - start)
  return dict(devices=num_devices, batch=batch_size,
              step_s=statistics.median(times), compile_s=compile_s,
              mesh=dict(mesh.shape))


def run_worker(num_devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}')
  args = [f'--worker={num_devices}'] + [a for a in sys.argv[1:]
                                        if not a.startswith('--worker')]
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.scaling', *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT):
      return json.loads(line[len(RESULT):])
  raise RuntimeError(f'The {num_devices}-device worker failed (exit '
                     f'{proc.returncode}):\n{proc.stderr[-3000:]}')


def _machine() -> str:
  name = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      name = next(l.split(':', 1)[1].strip() for l in f
                  if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{name}, {os.cpu_count()} CPUs'


def _load() -> str:
  return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def main(argv):
  del argv
  if _WORKER.value:
    print(RESULT + json.dumps(measure(_WORKER.value)), flush=True)
    return
  print(f'# Weak scaling of the train step: {_CONFIG.value}, '
        f'{_PER_DEVICE.value} images per device, mesh axis {_AXIS.value!r}\n'
        f'# machine: {_machine()}; load average (1, 5, 15 min) at start: '
        f'{_load()}', flush=True)
  results = [run_worker(int(n)) for n in _DEVICES.value]
  base = results[0]['batch'] / results[0]['step_s']
  rows = [(r['devices'], r['batch'], f"{1000 * r['step_s']:.1f}",
           f"{r['batch'] / r['step_s']:.0f}",
           f"{r['batch'] / r['step_s'] / base:.2f}", f"{r['compile_s']:.1f}")
          for r in results]
  headers = ('devices', 'global batch', 'ms/step', 'images/s',
             f"images/s vs {results[0]['devices']} device(s)", 'compile s')
  widths = [max(len(h), *(len(str(r[i])) for r in rows))
            for i, h in enumerate(headers)]
  line = lambda cells: '| ' + ' | '.join(
      str(c).rjust(w) for c, w in zip(cells, widths)) + ' |'
  print('\n'.join([line(headers), line(['-' * w for w in widths])]
                  + [line(r) for r in rows]))
  print(f'# load average at end: {_load()}')


if __name__ == '__main__':
  app.run(main)
