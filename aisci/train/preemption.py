"""Leaving a run cleanly: SIGTERM/SIGINT requests, and one run per workdir.

A cluster pre-empts a job with SIGTERM (then SIGKILL after a grace period);
a person stops one with Ctrl-C. Both only set a flag here: the loop finishes
the step in flight, saves a checkpoint and raises `Preempted`, and the
command exits with status `EXIT_PREEMPTED` so a job script can requeue it.
"""

import contextlib
import fcntl
import os
import signal

# EX_TEMPFAIL of sysexits.h: a temporary failure, worth retrying.
EXIT_PREEMPTED = 75


class Preempted(Exception):
  """The run stopped at a signal after saving a checkpoint at `step`."""

  def __init__(self, step: int, signal_name: str, workdir: str):
    super().__init__(
        f'Stopped by {signal_name} after step {step}; checkpoint {step} is '
        f'saved. Rerun the same command (same --workdir={workdir}) to resume.')
    self.step = step


class StopRequest:
  """Records SIGTERM/SIGINT while installed (a context manager)."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop at once.
    self.signal_name = signal.Signals(signum).name

  @property
  def requested(self) -> bool:
    return self.signal_name is not None


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds WORKDIR/.lock for the run; a second run on it is refused.

  flock is released by the kernel when the process dies, even by SIGKILL,
  so a crashed run never leaves a stale lock behind.
  """
  path = os.path.join(workdir, '.lock')
  with open(path, 'a+', encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      raise RuntimeError(
          f'Workdir {workdir} is in use by a running job ({holder}). Wait for '
          'it to finish or stop it, or use another --workdir.') from None
    f.seek(0)
    f.truncate()
    f.write(f'pid {os.getpid()} on {os.uname().nodename}\n')
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
