"""Train steps under each memory allocator: glibc malloc as it comes, glibc
on transparent huge pages (aisci/huge_pages.py), and the malloc libraries
that `python -m aisci.main` preloads where they are installed
(aisci/allocator.py: tcmalloc, jemalloc).

  python -m benchmarks.allocators
  python -m benchmarks.allocators --libraries=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
      --models=vit_ti4:128:2 --rounds=3
  # glibc alone, with and without huge pages (what benchmarks/huge_pages.py
  # measured until 2026-12-05):
  python -m benchmarks.allocators --libraries=none --models=fastcnn_cpu:512:8,vit_tiny:128:8

Each MODEL:BATCH:DEVICES runs aisci's real train step (benchmarks/
train_step.py's worker) in fresh processes, one per setting, alternating
the settings for --rounds rounds; the table gives each setting's best round:
images/s, the ratio to glibc on huge pages (what aisci.main used where no
library is installed), minor page faults and kernel (system) CPU seconds
per step.
"""

import os

from absl import app
from absl import flags

from aisci import allocator
from aisci import huge_pages
from benchmarks import common
from benchmarks import models as bench_models

_MODELS = flags.DEFINE_list(
    'models', ['vit_tiny:128:8', 'resnet18_tiny:128:2', 'vit_ti4:128:2',
               'fastcnn_airbench:512:8'],
    'MODEL:BATCH:DEVICES, MODEL one of '
    f'{list(bench_models.MODELS)} (devices: as each config sets cpu_devices).')
_LIBRARIES = flags.DEFINE_list(
    'libraries', None, "Malloc libraries to preload ('none': glibc only); "
    'default: each of aisci/allocator.py LIBRARIES installed here.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed steps per run.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')

_REFERENCE = 'glibc, huge pages'


def _settings() -> dict[str, dict[str, str]]:
  base = {k: v for k, v in os.environ.items()
          if k not in ('LD_PRELOAD', 'GLIBC_TUNABLES', 'MALLOC_CONF')}
  settings = {'glibc': dict(base),
              _REFERENCE: huge_pages.with_tunable(base)}
  libraries = _LIBRARIES.value or allocator.installed(os.environ)
  for path in (libraries if libraries != ['none'] else []):
    settings[os.path.basename(path)] = allocator.with_library(base, path)
  return settings


def main(argv):
  del argv
  settings = _settings()
  common.header(f'train steps per allocator; kernel THP mode '
                f'{huge_pages.thp_mode()}; settings: {list(settings)}')
  if len(settings) == 2:
    print('# no malloc library installed or given (--libraries): glibc only')
  rows = []
  for entry in _MODELS.value:
    name, batch, devices = (entry.split(':') + ['128', '8'])[:3]
    best = {}
    for _ in range(_ROUNDS.value):
      for setting, env in settings.items():
        result = common.run_worker('benchmarks.train_step', [
            '--worker=jax', f'--model={name}', f'--num_devices={devices}',
            f'--batch_size={batch}', '--warmup=3',
            f'--repeats={_REPEATS.value}'], env=env, inherit_env=False)
        print(f'#   {name} batch {batch}, {devices} dev, {setting}: '
              f'{int(batch) / result["median_s"]:.1f} img/s, system '
              f'{result["system_s"]:.3f} s/step, {result["minor_faults"]:,.0f} '
              f'faults/step, load {common.load()}', flush=True)
        if setting not in best or result['median_s'] < best[setting]['median_s']:
          best[setting] = result
    reference = best[_REFERENCE]['median_s']
    for setting, result in best.items():
      rows.append([bench_models.MODELS[name][2], f'{batch} / {devices}',
                   setting, f'{int(batch) / result["median_s"]:.1f}',
                   f'{reference / result["median_s"]:.2f}',
                   f'{result["minor_faults"]:,.0f}',
                   f'{result["system_s"]:.3f}'])
  print()
  print(common.table(['model', 'batch / devices', 'allocator', 'img/s',
                      f'vs {_REFERENCE}', 'page faults / step',
                      'system CPU s / step'], rows))


if __name__ == '__main__':
  app.run(main)
