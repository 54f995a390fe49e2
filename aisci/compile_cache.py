"""JAX's persistent compilation cache, on by default for `aisci.main`.

A run saves its compiled programs (train step, eval step, init) under the
cache directory; the next run with the same shapes, config and versions loads
them instead of compiling again (the cache key includes the program, the
devices, the XLA flags and the jax/jaxlib versions, so a stale entry is never
used). Measured start-up gains: benchmarks/README.md.

The cache is trusted code: keep it in a directory only you can write to.
"""

from typing import Optional

import jax

from aisci import user_cache

# Programs that compile faster than this are not worth a disk entry. JAX's
# default (1 s) would skip the small jitted functions of start-up; on 2 CPU
# cores the eval step and init compile in a fraction of a second.
MIN_COMPILE_TIME_SECS = 0.1


def default_dir() -> str:
  """$XDG_CACHE_HOME/aisci/jax, else ~/.cache/aisci/jax."""
  return user_cache.default_dir('jax')


def enable(directory: Optional[str] = None) -> Optional[str]:
  """Turns the cache on in `directory` (None: default_dir(); '': off).

  Must run before the first compilation. Returns the directory used, or None.
  """
  directory = user_cache.prepare(directory, 'jax', 'compilation_cache_dir',
                                 'compilation cache')
  if directory is None:
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    MIN_COMPILE_TIME_SECS)
  return directory
