"""XLA:CPU flags, measured: aisci's train step under each set of XLA_FLAGS.

  python -m benchmarks.xla_flags --models=vit_tiny,resnet18_tiny
  python -m benchmarks.xla_flags --flags='--xla_cpu_use_thunk_runtime=false'

Each flag set runs in a fresh process (XLA reads XLA_FLAGS once); the table
gives images/s (median wall) and CPU seconds per step, both relative to no
flags. Rounds alternate over the flag sets (--rounds), so that a change in
the machine's load hits them all alike; each cell is the best round.
"""

import os

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

# Candidates of this jaxlib's XLA:CPU (`strings jaxlib/*.so | grep xla_cpu_`).
CANDIDATES = (
    '--xla_cpu_use_thunk_runtime=false',
    '--xla_cpu_multi_thread_eigen=false',
    '--xla_cpu_enable_fast_math=true',
    '--xla_cpu_prefer_vector_width=512',
    '--xla_cpu_use_xnnpack=true',
    '--xla_cpu_use_onednn=true',
    '--xla_cpu_experimental_onednn_custom_call=true',
    '--xla_cpu_experimental_ynn_fusion_type=individual_convolution',
    '--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
)

_MODELS = flags.DEFINE_list('models', ['vit_tiny', 'resnet18_tiny'],
                            f'Any of {list(bench_models.MODELS)}.')
_FLAGS = flags.DEFINE_multi_string(
    'flags', list(CANDIDATES), 'XLA_FLAGS values to try (each separately).')
_DEVICES = flags.DEFINE_integer('devices', 8, 'CPU devices.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 8, 'Timed steps per run.')
_ROUNDS = flags.DEFINE_integer('rounds', 1, 'Alternating rounds.')


def main(argv):
  del argv
  common.header(f'XLA flags, batch {_BATCH.value}, {_DEVICES.value} CPU devices')
  base_flags = os.environ.get('XLA_FLAGS', '')
  rows = []
  for name in _MODELS.value:
    results = {}
    for _ in range(_ROUNDS.value):
      for flag in ['', *_FLAGS.value]:
        try:
          result = common.run_worker('benchmarks.train_step', [
              '--worker=jax', f'--model={name}',
              f'--num_devices={_DEVICES.value}',
              f'--batch_size={_BATCH.value}', '--warmup=2',
              f'--repeats={_REPEATS.value}'],
                                     env=dict(common.main_env(), XLA_FLAGS=f"{base_flags} {flag}".strip()))
        except RuntimeError as e:
          print(f'#   {name} {flag or "(none)"}: failed: {str(e)[-300:]}')
          continue
        cpu = sorted(result['cpu'])[len(result['cpu']) // 2]
        best = results.get(flag)
        if best is None or result['median_s'] < best[0]:
          results[flag] = (result['median_s'], cpu)
        print(f'#   {name} {flag or "(none)"}: '
              f'{_BATCH.value / result["median_s"]:.1f} img/s, CPU '
              f'{cpu:.3f} s/step, load {common.load()}', flush=True)
    if '' not in results:
      continue
    base_wall, base_cpu = results['']
    for flag, (wall, cpu) in results.items():
      rows.append([name, flag or '(none)', f'{_BATCH.value / wall:.1f}',
                   f'{base_wall / wall:.2f}', f'{cpu:.3f}',
                   f'{base_cpu / cpu:.2f}'])
  print()
  print(common.table(['model', 'XLA_FLAGS', 'img/s', 'speed-up', 'CPU s/step',
                      'CPU speed-up'], rows))


if __name__ == '__main__':
  app.run(main)
