"""Page faults of XLA:CPU steps, with glibc malloc as it comes and with the
huge-page tunable that `python -m aisci.main` sets where no tcmalloc or
jemalloc is installed (aisci/huge_pages.py; with those:
benchmarks/allocators.py).

  python -m benchmarks.huge_pages
  python -m benchmarks.huge_pages --models=fastcnn_cpu:512 --rounds=3

XLA:CPU allocates each step's temporaries anew; past glibc's mmap threshold
(32 MiB at most) that is a fresh mapping, faulted in page by page. Each
model:batch runs aisci's real train step (benchmarks/train_step.py's
worker, 8 CPU devices) in fresh processes, alternating the two settings for
--rounds rounds; the table gives the best round of each: step time, minor
page faults and kernel (system) CPU seconds per step.
"""

import os

from absl import app
from absl import flags

from aisci import huge_pages
from benchmarks import common
from benchmarks import models as bench_models

_MODELS = flags.DEFINE_list(
    'models', ['fastcnn_cpu:512', 'vit_tiny:128', 'resnet18_tiny:128'],
    f'MODEL:BATCH, MODEL one of {list(bench_models.MODELS)}.')
_DEVICES = flags.DEFINE_integer('devices', 8, 'CPU devices.')
_REPEATS = flags.DEFINE_integer('repeats', 8, 'Timed steps per run.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')


def main(argv):
  del argv
  mode = huge_pages.thp_mode()
  common.header(f'page faults per train step, {_DEVICES.value} CPU devices; '
                f'kernel THP mode: {mode}')
  settings = {'glibc default': {}, huge_pages.TUNABLE: {
      'GLIBC_TUNABLES': huge_pages.with_tunable(os.environ)['GLIBC_TUNABLES']}}
  rows = []
  for entry in _MODELS.value:
    name, _, batch = entry.partition(':')
    batch = int(batch or 128)
    best = {}
    for _ in range(_ROUNDS.value):
      for setting, env in settings.items():
        result = common.run_worker('benchmarks.train_step', [
            '--worker=jax', f'--model={name}', f'--num_devices={_DEVICES.value}',
            f'--batch_size={batch}', '--warmup=2', f'--repeats={_REPEATS.value}'],
                                   env=env)
        print(f'#   {name} batch {batch}, {setting}: {result["median_s"]:.3f} '
              f's/step, {result["minor_faults"]:,.0f} faults/step, system '
              f'{result["system_s"]:.3f} s/step, load {common.load()}',
              flush=True)
        if setting not in best or result['median_s'] < best[setting]['median_s']:
          best[setting] = result
    default, tuned = best['glibc default'], best[huge_pages.TUNABLE]
    rows.append([bench_models.MODELS[name][2], batch,
                 f'{batch / default["median_s"]:.1f}',
                 f'{batch / tuned["median_s"]:.1f}',
                 f'{default["median_s"] / tuned["median_s"]:.2f}',
                 f'{default["minor_faults"]:,.0f} -> {tuned["minor_faults"]:,.0f}',
                 f'{default["system_s"]:.3f} -> {tuned["system_s"]:.3f}'])
  print()
  print(common.table(['model', 'batch', 'img/s glibc default', 'img/s huge pages',
                      'speed-up', 'page faults / step', 'system CPU s / step'],
                     rows))


if __name__ == '__main__':
  app.run(main)
