"""The memory allocator that `python -m aisci.main` runs with.

XLA:CPU allocates each execution's temporaries anew, one block per device
(ViT-Ti/4 at batch 128 on 2 devices: 1,090 MB each). glibc malloc maps a
block that large fresh from the kernel and unmaps it when the step ends
(its per-thread arenas hold no block over 64 MB), so the kernel zeroes
every page again at every step. tcmalloc and jemalloc keep freed blocks for
the next step: train steps 3-16 % faster on 2 cores, with almost no kernel
time (benchmarks/allocators.py, benchmarks/README.md "Allocators").

Neither comes with pip. Where one is installed on the system (Debian,
Ubuntu: `apt install libtcmalloc-minimal4` or `libjemalloc2`; conda:
`gperftools` or `jemalloc`), `python -m aisci.main` restarts itself once,
before anything is imported, with it in LD_PRELOAD (same PID, same
arguments). Elsewhere it keeps glibc malloc, on transparent huge pages
where that helps (huge_pages.py).

AISCI_MALLOC: 'auto' (default: the first of LIBRARIES found in the usual
library folders), 'glibc' (never preload), or the path of a malloc library.
Nothing is preloaded when LD_PRELOAD already names a malloc library.
"""

import os
import sys
from typing import Mapping, MutableMapping, Optional

from aisci import huge_pages

VARIABLE = 'AISCI_MALLOC'
# gperftools' tcmalloc first: never behind glibc on huge pages in
# benchmarks/allocators.py (1.03-1.16x; jemalloc 0.97-1.15x).
LIBRARIES = ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4', 'libjemalloc.so.2')
_KNOWN = ('tcmalloc', 'jemalloc', 'mimalloc', 'tbbmalloc')
_FOLDERS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
            '/usr/lib64', '/usr/lib', '/usr/local/lib')
# jemalloc hands blocks over 8 MB back to the kernel at once by default
# (the fast CNN's step then faulted 4.7 million times, slower than glibc);
# without decay it keeps them.
# tcmalloc reports every allocation over 1 GB on stderr by default, and
# ViT-Ti/4's temporaries are one.
_SETTINGS = {
    'jemalloc': ('MALLOC_CONF', 'dirty_decay_ms:-1,muzzy_decay_ms:-1'),
    'tcmalloc': ('TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD', str(1 << 40)),
}


def _folders(environ: Mapping[str, str]) -> list[str]:
  prefixes = [environ.get('CONDA_PREFIX'), sys.prefix, sys.base_prefix]
  return [os.path.join(p, 'lib') for p in prefixes if p] + list(_FOLDERS)


def preloaded(environ: Mapping[str, str]) -> Optional[str]:
  """The malloc library that LD_PRELOAD names (a known one, or the one
  AISCI_MALLOC names), if any."""
  chosen = environ.get(VARIABLE, 'auto')
  chosen = None if chosen in ('auto', 'glibc') else os.path.abspath(chosen)
  for entry in environ.get('LD_PRELOAD', '').replace(':', ' ').split():
    if (any(name in os.path.basename(entry) for name in _KNOWN)
        or os.path.abspath(entry) == chosen):
      return entry
  return None


def library(environ: Mapping[str, str]) -> Optional[str]:
  """The malloc library to preload per AISCI_MALLOC, or None (glibc).

  Raises ValueError for an AISCI_MALLOC that is no known word nor file.
  """
  choice = environ.get(VARIABLE, 'auto')
  if choice == 'glibc':
    return None
  if choice != 'auto':
    if not os.path.isfile(choice):
      raise ValueError(
          f'{VARIABLE}={choice!r} is not a file: set it to the path of a malloc '
          "library (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2), 'auto' "
          "to use one found on the system, or 'glibc'.")
    return os.path.abspath(choice)
  found = installed(environ)
  return found[0] if found else None


def installed(environ: Mapping[str, str]) -> list[str]:
  """Each of LIBRARIES found on this system (Linux only), in their order:
  the first folder that holds it (the conda environment's, Python's, then
  the system's)."""
  if not sys.platform.startswith('linux'):
    return []
  found = []
  for name in LIBRARIES:
    paths = (os.path.join(folder, name) for folder in _folders(environ))
    found += [path for path in paths if os.path.isfile(path)][:1]
  return found


def with_library(environ: Mapping[str, str], path: str
                 ) -> MutableMapping[str, str]:
  """A copy of `environ` that preloads `path`, with its settings (kept where
  the user set them)."""
  environ = dict(environ)
  environ['LD_PRELOAD'] = ' '.join(
      p for p in (path, environ.get('LD_PRELOAD', '')) if p)
  for name, (variable, value) in _SETTINGS.items():
    if name in os.path.basename(path):
      environ.setdefault(variable, value)
  return environ


def restart_environment(environ: Mapping[str, str], thp: Optional[str]
                        ) -> Optional[MutableMapping[str, str]]:
  """The environment to restart with, or None to go on as is.

  thp: the kernel's transparent huge page mode (huge_pages.thp_mode()).
  """
  if preloaded(environ):  # by the user, or by this function's restart
    return None
  path = library(environ)
  if path:
    return with_library(environ, path)
  if huge_pages.needs_restart(environ, thp):
    return huge_pages.with_tunable(environ)
  return None


def restart() -> None:
  """Re-executes this program with a better allocator, if there is one;
  else returns. Call first thing in a `__main__` (its imports are lost).
  Exits naming the fix for an unusable AISCI_MALLOC."""
  try:
    environ = restart_environment(os.environ, huge_pages.thp_mode())
  except ValueError as e:
    sys.exit(f'{sys.argv[0]}: {e}')
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def describe(environ: Mapping[str, str] = os.environ) -> str:
  """What this process runs with, for the log."""
  path = preloaded(environ)
  if path:
    return f'{os.path.basename(path)} (LD_PRELOAD={path})'
  tunables = environ.get('GLIBC_TUNABLES', '')
  return ('glibc malloc' + (f' ({tunables})' if tunables else '') +
          '; a faster one is used where installed (aisci/allocator.py)')
