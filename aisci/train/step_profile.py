"""A trace of chosen training steps (config.profile), for seeing where a
run's time goes.

  python -m aisci.main ... --config.profile.num_steps=5   # steps 11-15
  python -m aisci.main ... --config.profile.start_step=200 --config.profile.num_steps=3

`jax.profiler` records the steps after the first `start_step` ones (the
default 10 leaves out compilation and each executable's first, slower
executions): every XLA operation on every device thread, the host's input
pipeline and the loop, into WORKDIR/profile/plugins/profile/<time>/. Open
its perfetto_trace.json.gz at https://ui.perfetto.dev, or run
`tensorboard --logdir WORKDIR/profile` with `pip install
tensorboard-plugin-profile` (its .xplane.pb). On a CPU, ops.md beside
them sums the trace per kind of XLA operation (matrix-product fusions,
elementwise fusions, reductions, collectives, ...) and per model layer,
every block's same layer in one row (aisci/train/op_profile.py): XLA:CPU
names each trace event after its HLO instruction. GPU traces name kernels
after the libraries that run them (cuBLAS, cuDNN), which that join would
miss, so there the trace itself is the summary. The loop waits for the
step before the first traced one, so the trace starts clean; the traced
steps run as any other, with tracing's own small overhead.
"""

import glob
import os
import time
from typing import Any, Callable, Mapping, Optional

from absl import logging
import jax

from aisci.report import report_md
from aisci.train import op_profile

SUBDIR = 'profile'
SUMMARY_FILE = 'ops.md'
_TOP = 15  # layers listed in ops.md


class StepProfiler:
  """Starts jax.profiler before step `start_step` of the loop and stops it
  after `num_steps` steps (config.profile); inactive when num_steps is 0."""

  def __init__(self, options: Optional[Mapping[str, Any]], workdir: str,
               first_step: int, end_step: int,
               hlo_text: Optional[Callable[[], str]] = None):
    """options: config.profile (None: off); the loop runs steps
    first_step..end_step - 1 (0-based; a resumed run starts later);
    hlo_text: the compiled train step's HLO text, for ops.md."""
    self._hlo_text = hlo_text
    options = dict(options or {})
    self.start = int(options.get('start_step', 10))
    num_steps = int(options.get('num_steps', 0))
    if num_steps < 0 or self.start < 0:
      raise ValueError(
          f'config.profile.start_step={self.start} and num_steps={num_steps} '
          'must be >= 0 (num_steps=0: no profile).')
    self.stop = min(self.start + num_steps, end_step)
    self.directory = os.path.join(workdir, SUBDIR)
    self.active = num_steps > 0 and first_step <= self.start < end_step
    self._began = None
    if num_steps > 0 and not self.active:
      logging.info(
          'config.profile: steps %d-%d are not among the steps this run '
          'trains (%d-%d); no profile.', self.start + 1,
          self.start + num_steps, first_step + 1, end_step)

  def before_step(self, step: int, state: Any) -> None:
    """Call before running 0-based step `step`, with the state it reads."""
    if not self.active or step != self.start:
      return
    jax.block_until_ready(state)
    jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
    self._began = time.perf_counter()

  def after_step(self, done: int, outputs: Any) -> Optional[str]:
    """Call after dispatching the step that makes `done` steps; returns the
    trace's folder once the last traced step has finished."""
    if self._began is None or done != self.stop:
      return None
    jax.block_until_ready(outputs)
    seconds = (time.perf_counter() - self._began) / (self.stop - self.start)
    jax.profiler.stop_trace()
    self._began, self.active = None, False
    runs = sorted(glob.glob(os.path.join(self.directory, 'plugins', 'profile',
                                         '*')), key=os.path.getmtime)
    folder = runs[-1] if runs else self.directory
    logging.info(
        'Profile of steps %d-%d (%.3f s per step, traced): %s. Open its '
        'perfetto_trace.json.gz at https://ui.perfetto.dev, or run '
        '`tensorboard --logdir %s` (pip install tensorboard-plugin-profile).',
        self.start + 1, self.stop, seconds, folder, self.directory)
    self._write_summary(folder, seconds)
    return folder

  def _write_summary(self, folder: str, seconds: float) -> None:
    """ops.md in `folder`: the trace summed per kind of operation and per
    layer; a log line with the three costliest kinds."""
    if self._hlo_text is None or jax.default_backend() != 'cpu':
      return
    try:
      summary = op_profile.summarize(
          op_profile.parse_hlo(self._hlo_text()),
          op_profile.trace_events(folder), self.stop - self.start)
    except (RuntimeError, FileNotFoundError, ValueError) as e:
      logging.info('No per-operation summary of the profile: %s', e)
      return
    share = lambda fraction: f'{100 * fraction:.1f} %'
    lines = [
        f'# Steps {self.start + 1}-{self.stop}: where the time goes', '',
        f'{seconds:.3f} s per step (wall, traced); the operations below add '
        f'up to {summary.total:.0f} ms per step of device-thread time, which '
        'exceeds the wall time when several devices or threads run at once. '
        'A collective (all-reduce, ...) also counts the time a device waits '
        'in it for the others (aisci/train/step_profile.py).', '',
        '## Per kind of operation', '']
    lines += report_md.table(
        ['kind', 'thread-ms / step', 'share'],
        [(kind, f'{ms:.1f}', share(part))
         for kind, ms, part in summary.costliest(summary.by_kind)])
    lines += ['', f'## The {_TOP} costliest layers (every block\'s same layer '
              'in one row)', '']
    lines += report_md.table(
        ['kind', 'thread-ms / step', 'share', 'from (op_name)'],
        [(kind, f'{ms:.1f}', share(part),
          f'`{op_profile.short_op_name(source, width=100)}`')
         for (kind, source), ms, part in summary.costliest(summary.by_source,
                                                           _TOP)])
    path = os.path.join(folder, SUMMARY_FILE)
    with open(path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
    logging.info('Profile summary: %s; per layer in %s.', ', '.join(
        f'{kind} {share(part)}'
        for kind, _, part in summary.costliest(summary.by_kind, 3)), path)

  def close(self) -> None:
    """Stops a trace that is still running (the loop left early)."""
    if self._began is not None:
      self._began = None
      jax.profiler.stop_trace()
