"""Compiling the initial state: XLA's default options against the ones the
loop uses on a CPU (aisci/train/steps.py, INIT_CPU_COMPILER_OPTIONS).

  python -m benchmarks.init_compile
  python -m benchmarks.init_compile --models=unet,resnet18 --rounds=3

Each model's init_state (parameters and optimizer state, on one example
shaped as the loop shapes it) is lowered and compiled in a fresh process,
alternating the two settings for --rounds rounds; the table gives each
setting's median compile seconds and whether both computed the same bits.
No compilation cache.
"""

import hashlib
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

# name -> (config file:variant, classes, init's example input [1, h, w, c]).
MODELS = {
    'vit_tiny': ('configs/vit_cifar.py:tiny', 10, (1, 32, 32, 3)),
    'vit_ti4': ('configs/vit_cifar.py', 10, (1, 32, 32, 3)),
    'resnet18': ('configs/resnet_cifar.py', 10, (1, 32, 32, 3)),
    'fastcnn': ('configs/cifar_fast.py:cpu_airbench_opt', 10, (1, 32, 32, 3)),
    'unet': ('configs/unet_membrane.py:multitask', 2, (1, 512, 512, 1)),
}
SETTINGS = ('default', 'init options')

_MODELS = flags.DEFINE_list('models', list(MODELS), f'Of {list(MODELS)}.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: MODEL:SETTING.')


def _worker(name: str, setting: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from aisci.train import steps  # pylint: disable=g-import-not-at-top

  spec, classes, shape = MODELS[name]
  # The jitted init as aisci/train/loop.py builds it.
  init = bench_models.aisci_parts_for(bench_models.load_config(spec), classes,
                                      example_shape=shape)['init']
  rng = jax.random.PRNGKey(0)
  options = (steps.init_compiler_options(jax.default_backend())
             if setting == 'init options' else None)
  start = time.perf_counter()
  compiled = init.lower(rng).compile(compiler_options=options)
  compile_s = time.perf_counter() - start
  state = jax.block_until_ready(compiled(rng))
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    digest.update(np.asarray(leaf).tobytes())
  common.emit({'compile_s': compile_s, 'digest': digest.hexdigest(),
               'params': sum(x.size for x in jax.tree.leaves(state.params))})


def main(argv):
  del argv
  if _WORKER.value:
    _worker(*_WORKER.value.split(':'))
    return
  common.header('compiling init_state: XLA defaults vs the loop\'s CPU '
                'options (aisci/train/steps.py)')
  results = {}
  for _ in range(_ROUNDS.value):
    for name in _MODELS.value:
      for setting in SETTINGS:
        result = common.run_worker('benchmarks.init_compile',
                                   [f'--worker={name}:{setting}'])
        print(f'#   {name}, {setting}: compile {result["compile_s"]:.2f} s, '
              f'load {common.load()}', flush=True)
        results.setdefault((name, setting), []).append(result)
  rows = []
  for name in _MODELS.value:
    default, fast = (results[name, s] for s in SETTINGS)
    median = {s: statistics.median(r['compile_s'] for r in results[name, s])
              for s in SETTINGS}
    digests = {r['digest'] for r in default + fast}
    rows.append([name, f'{default[0]["params"]:,}',
                 f'{median["default"]:.2f}', f'{median["init options"]:.2f}',
                 f'{median["default"] / median["init options"]:.2f}',
                 'yes' if len(digests) == 1 else 'NO'])
  print(common.table(['model', 'params', 'default compile s',
                      'init options compile s', 'speed-up', 'same bits'],
                     rows))


if __name__ == '__main__':
  app.run(main)
