"""JAX's persistent compilation cache, on by default for `aisci.main`.

A run saves its compiled programs (train step, eval step, init) under the
cache directory; the next run with the same shapes, config and versions loads
them instead of compiling again (the cache key includes the program, the
devices, the XLA flags and the jax/jaxlib versions, so a stale entry is never
used). Measured start-up gains: benchmarks/README.md.

The cache is trusted code: keep it in a directory only you can write to.
"""

import os
from typing import Optional

import jax

# Programs that compile faster than this are not worth a disk entry. JAX's
# default (1 s) would skip the small jitted functions of start-up; on 2 CPU
# cores the eval step and init compile in a fraction of a second.
MIN_COMPILE_TIME_SECS = 0.1


def default_dir() -> str:
  """$XDG_CACHE_HOME/aisci/jax, else ~/.cache/aisci/jax."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'aisci', 'jax')


def enable(directory: Optional[str] = None) -> Optional[str]:
  """Turns the cache on in `directory` (None: default_dir(); '': off).

  Must run before the first compilation. Returns the directory used, or None.
  """
  if directory is None:
    directory = default_dir()
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise ValueError(
        f'Cannot create the compilation cache directory {directory!r} ({e}): '
        "pass --compilation_cache_dir=ANOTHER_DIR, or '' to run without the "
        'cache.') from e
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    MIN_COMPILE_TIME_SECS)
  return directory
