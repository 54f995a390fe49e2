"""Compiling a jitted function on a worker thread while the caller goes on.

The loop compiles the initial state's program this way while it traces and
compiles the train step: XLA compiles (or loads a cached executable) with
the GIL released, and one compilation keeps fewer cores busy than a machine
has. On 2 cores (2026-12-05, benchmarks/README.md, "Start-up") the two
programs of ViT-Ti/4 compiled side by side in 9.6-9.7 s where one after
the other took 13.2-16.0 s; from the compilation cache 2.6-2.7 against
3.5-3.6 s.
"""

import concurrent.futures
from typing import Any, Optional


def start(jitted: Any, *args: Any,
          compiler_options: Optional[dict[str, Any]] = None
          ) -> concurrent.futures.Future:
  """A future of `jitted.lower(*args).compile(compiler_options)`, computed
  on a new thread (options: XLA DebugOptions fields, e.g.
  {'xla_backend_optimization_level': 1}).

  Its result is the compiled function; an error in tracing, lowering or
  compiling is raised by `result()`. The thread is not a daemon: a process
  that fails meanwhile still waits for it (seconds), rather than tearing
  XLA down under a running compilation.
  """
  executor = concurrent.futures.ThreadPoolExecutor(
      max_workers=1, thread_name_prefix='aisci-compile')
  future = executor.submit(
      lambda: jitted.lower(*args).compile(compiler_options=compiler_options))
  executor.shutdown(wait=False)  # the thread ends with its one task
  return future
