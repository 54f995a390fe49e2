"""What every benchmark script shares: the machine's description and load,
robust timing, workers in fresh processes, and plain-text tables."""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = 'BENCHMARK_RESULT '


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load() -> str:
  """`uptime`'s load averages (1, 5, 15 min): other work competing for the cores."""
  return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def machine() -> str:
  return (f'{cpu_model()}, {os.cpu_count()} CPUs (nproc), python '
          f'{platform.python_version()}')


def header(title: str) -> None:
  print(f'# {title}\n# machine: {machine()}\n# load average at start: {load()}',
        flush=True)


def cpu_seconds() -> float:
  """CPU time (user + system) of this process and its threads so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def median_seconds(fn: Callable[[], Any], *, warmup: int, repeats: int
                   ) -> tuple[float, list[float], list[float]]:
  """Median wall time of `fn()` over `repeats` calls after `warmup` calls.

  `fn` must block until its work is done (block_until_ready for JAX).
  Returns (median wall s, wall s of each call, CPU s of each call): on a
  machine shared with other work, CPU time varies less than wall time.
  """
  for _ in range(warmup):
    fn()
  times, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), cpu_seconds()
    fn()
    times.append(time.perf_counter() - start)
    cpu.append(cpu_seconds() - start_cpu)
  return statistics.median(times), times, cpu


def emit(result: dict[str, Any]) -> None:
  """A worker's result, on one line the parent picks out of the output."""
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(module: str, args: Sequence[str], *, env: dict[str, str] | None = None,
               timeout: float = 1800, inherit_env: bool = True) -> dict[str, Any]:
  """Runs `python -m module args` in a fresh process; returns what it emitted.

  Fresh processes keep JAX's and PyTorch's thread pools from competing, and
  let each JAX measurement choose its own CPU device count. env: added to
  this process's environment, or the whole environment (inherit_env=False).
  """
  full_env = dict(os.environ if inherit_env else {}, **(env or {}))
  full_env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        env=full_env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  raise RuntimeError(
      f'Benchmark worker `python -m {module} {" ".join(args)}` failed '
      f'(exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')


def main_env(huge_pages: bool = True) -> dict[str, str]:
  """Extra environment of a process as `python -m aisci.main` runs it: its
  restart with a malloc library preloaded where one is installed, else with
  glibc's huge-page tunable where the machine gains from it
  (aisci/allocator.py); {} otherwise or with huge_pages=False."""
  from aisci import allocator  # pylint: disable=g-import-not-at-top
  from aisci import huge_pages as huge_pages_lib  # pylint: disable=g-import-not-at-top
  environ = (allocator.restart_environment(os.environ,
                                           huge_pages_lib.thp_mode())
             if huge_pages else None)
  if environ is None:
    return {}
  return {k: v for k, v in environ.items() if os.environ.get(k) != v}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table (readable as text, pastes into benchmarks/README.md)."""
  cells = [[str(c) for c in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
            for i, h in enumerate(headers)]
  line = lambda row: '| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |'
  return '\n'.join([line(headers), line(['-' * w for w in widths])]
                   + [line(r) for r in cells])
