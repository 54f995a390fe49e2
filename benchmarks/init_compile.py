"""Compiling the initial state: XLA's default options against the ones the
loop uses on a CPU (aisci/train/steps.py, INIT_CPU_COMPILER_OPTIONS); and
outside the loop, `model.init` op by op against steps.init_variables.

  python -m benchmarks.init_compile
  python -m benchmarks.init_compile --models=unet,resnet18 --rounds=3

Each model's init_state (parameters and optimizer state, on one example
shaped as the loop shapes it) is lowered and compiled in a fresh process,
alternating the two settings for --rounds rounds; the table gives each
setting's median compile seconds and whether both computed the same bits.
A second table times the model's variables alone, from the call to the
arrays (compiling included): `model.init` op by op, which compiles each
random draw of a new shape on its own, against steps.init_variables (one
program, the init options), and gives their largest difference in ulps.
No compilation cache.
"""

import hashlib
import os
import statistics
import tempfile
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
MODEL_INIT = ('op by op', 'init_variables')

_MODELS = flags.DEFINE_list('models', list(MODELS), f'Of {list(MODELS)}.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternating rounds.')
_MODEL_INIT = flags.DEFINE_bool(
    'model_init', True, 'Also time model.init op by op against '
    'steps.init_variables (the second table).')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: MODEL:SETTING.')


def _worker(name: str, setting: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from aisci.train import steps  # pylint: disable=g-import-not-at-top

  spec, classes, shape = MODELS[name]
  parts = bench_models.aisci_parts_for(bench_models.load_config(spec), classes,
                                       example_shape=shape)
  rng = jax.random.PRNGKey(0)
  if setting in MODEL_INIT:
    images = np.zeros(shape, np.float32)
    start = time.perf_counter()
    if setting == 'op by op':
      variables = parts['model'].init(rng, images, train=False)
    else:
      variables = steps.init_variables(parts['model'], rng, images, train=False)
    variables = jax.block_until_ready(variables)
    seconds = time.perf_counter() - start
    # The values go to the parent through a file: millions of parameters.
    with tempfile.NamedTemporaryFile(suffix='.npz', delete=False) as f:
      np.savez(f, *jax.tree.leaves(variables))
    common.emit({'seconds': seconds, 'values': f.name})
    return
  init = parts['init']  # jitted as aisci/train/loop.py jits it
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


def _run_alternating(settings: tuple[str, ...], describe) -> dict:
  """{(model, setting): [worker results]}: each model under each setting in
  a fresh process, the settings alternating, for --rounds rounds.
  describe(setting, result): the progress line's text."""
  results = {}
  for _ in range(_ROUNDS.value):
    for name in _MODELS.value:
      for setting in settings:
        result = common.run_worker('benchmarks.init_compile',
                                   [f'--worker={name}:{setting}'])
        print(f'#   {name}, {describe(setting, result)}, '
              f'load {common.load()}', flush=True)
        results.setdefault((name, setting), []).append(result)
  return results


def _compile_table() -> str:
  """init_state's compile seconds with XLA's defaults and the loop's
  options, and whether both gave the same bits."""
  results = _run_alternating(
      SETTINGS, lambda s, r: f'{s}: compile {r["compile_s"]:.2f} s')
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
  return common.table(['model', 'params', 'default compile s',
                       'init options compile s', 'speed-up', 'same bits'],
                      rows)


def _max_ulps(path_a: str, path_b: str) -> int:
  """Largest difference in ulps between the float32 arrays of two files."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with np.load(path_a) as a, np.load(path_b) as b:
    return max((int(np.abs(a[k].view(np.int32).astype(np.int64)
                           - b[k].view(np.int32)).max(initial=0))
                for k in a.files), default=0)


def _model_init_table() -> str:
  """model.init op by op against steps.init_variables: seconds, and the
  largest difference between any two of a model's runs."""
  results = _run_alternating(
      MODEL_INIT, lambda s, r: f'model.init {s}: {r["seconds"]:.2f} s')
  rows = []
  for name in _MODELS.value:
    median = {s: statistics.median(r['seconds'] for r in results[name, s])
              for s in MODEL_INIT}
    files = [r['values'] for s in MODEL_INIT for r in results[name, s]]
    ulps = max(_max_ulps(files[0], other) for other in files[1:])
    for path in files:
      os.remove(path)
    rows.append([name, f'{median["op by op"]:.2f}',
                 f'{median["init_variables"]:.2f}',
                 f'{median["op by op"] / median["init_variables"]:.2f}',
                 str(ulps)])
  return common.table(['model', 'model.init op by op s', 'init_variables s',
                       'speed-up', 'largest difference (ulps)'], rows)


def main(argv):
  del argv
  if _WORKER.value:
    _worker(*_WORKER.value.split(':'))
    return
  common.header('compiling init_state: XLA defaults vs the loop\'s CPU '
                'options (aisci/train/steps.py)')
  print(_compile_table())
  if _MODEL_INIT.value:
    print()
    print(_model_init_table())


if __name__ == '__main__':
  app.run(main)
