"""Where a train step's time goes: aisci's step under `jax.profiler`, its
time summed per XLA operation.

  python -m benchmarks.profile_step --model=vit_ti4
  python -m benchmarks.profile_step --model=resnet18 --devices=1 --top=40

Runs benchmark model `--model`'s real train step (benchmarks/models.py:
the config's optimizer and task, donated state, batch sharded over the
mesh) `--steps` times under `jax.profiler.trace` and reads the Perfetto JSON
that the profiler writes. Every XLA:CPU operation the step executes (a
fusion, a dot, a convolution, a copy, ...) is a trace event named after its
HLO instruction; the script sums their durations over all threads and
prints, per step, a summary per kind (fusions split by what they contain:
a dot, a convolution, a reduction or only elementwise work), the operations
that cost most, and the same summed over repeated blocks (the MLP's first
dense layer of all 12 ViT blocks in one row). Thread-ms add up the
devices' threads, so with 8 devices on 2 cores they exceed the step's wall
time.

The trace stays in `--trace_dir` for TensorBoard's profile plugin or
ui.perfetto.dev; `--hlo_out` writes the compiled module's text, whose
instruction names the table uses.
"""

import tempfile
import time

from absl import app
from absl import flags

from aisci.train import op_profile
from benchmarks import common
from benchmarks import models as bench_models

_MODEL = flags.DEFINE_string('model', 'vit_ti4', f'One of {list(bench_models.MODELS)}.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_DEVICES = flags.DEFINE_integer(
    'devices', 8, "CPU devices (aisci.main's default until configs named "
    'their own, config.cpu_devices).')
_STEPS = flags.DEFINE_integer('steps', 3, 'Profiled steps (after 2 warm-up steps).')
_TOP = flags.DEFINE_integer('top', 25, 'Operations listed.')
_TRACE_DIR = flags.DEFINE_string('trace_dir', '', 'Where the trace goes; '
                                 "'' = a temporary directory.")
_HLO_OUT = flags.DEFINE_string('hlo_out', '', 'File for the compiled HLO text.')


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', _DEVICES.value)
  common.header(f'profile of the {_MODEL.value} train step, batch '
                f'{_BATCH.value}, {_DEVICES.value} CPU devices')
  init, rng, train_step, batch = bench_models.aisci_jitted(_MODEL.value,
                                                           _BATCH.value)
  state = init(rng)
  compiled = train_step.lower(state, batch).compile()
  hlo_text = compiled.as_text()
  if _HLO_OUT.value:
    with open(_HLO_OUT.value, 'w', encoding='utf-8') as f:
      f.write(hlo_text)
  instructions = op_profile.parse_hlo(hlo_text)
  steps = _STEPS.value
  # Run the executable compiled above: calling `train_step` would compile
  # the same program a second time (lower().compile() fills no jit cache).
  for _ in range(2):
    state, _ = jax.block_until_ready(compiled(state, batch))
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix='aisci_profile_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = jax.block_until_ready(compiled(state, batch))
    wall_ms = 1e3 * (time.perf_counter() - start) / steps
  summary = op_profile.summarize(
      instructions, op_profile.trace_events(trace_dir), steps)

  def costliest(times, limit=None):
    """(key, 'ms', 'share') rows, largest first."""
    return [(key, f'{ms:.1f}', f'{100 * share:.1f} %')
            for key, ms, share in summary.costliest(times, limit)]

  print(f'# step: {wall_ms:.0f} ms wall (profiled); operations: '
        f'{summary.total:.0f} thread-ms; trace in {trace_dir}\n')
  print(common.table(['kind', 'thread-ms / step', 'share'],
                     [list(row) for row in costliest(summary.by_kind)]))
  print()
  print(common.table(
      ['operation', 'kind', 'thread-ms / step', 'share', 'runs / step',
       'from (op_name)'],
      [[name, instructions[name]['kind'], ms, share, summary.calls[name],
        op_profile.short_op_name(instructions[name]['op_name'])]
       for name, ms, share in costliest(summary.by_op, _TOP.value)]))
  print()
  print(common.table(
      ['kind', 'thread-ms / step', 'share', 'from (op_name, blocks folded)'],
      [[kind, ms, share, op_profile.short_op_name(source, width=90)]
       for (kind, source), ms, share in costliest(summary.by_source,
                                                  _TOP.value)]))


if __name__ == '__main__':
  app.run(main)
