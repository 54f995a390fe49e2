"""Transparent huge pages for the buffers XLA:CPU allocates at every step.

Each execution of a jitted step allocates its temporaries anew, one block
per CPU device (105 MB per device for configs/cifar_fast.py:cpu at batch
512). Blocks that large are beyond glibc malloc's mmap threshold, so every
step maps fresh memory and the kernel faults it in 4 KiB at a time: ~210,000
page faults per step, 17 % of the CPU time of a whole fast-CNN run
(benchmarks/README.md). With glibc's `glibc.malloc.hugetlb=1` tunable,
malloc asks for transparent huge pages on those mappings (madvise), and the
same memory comes in 2 MiB pages: 24-40x fewer faults for the fast CNN and
the ViT tiny, steps 6-34 % faster (benchmarks/allocators.py).

The tunable is read only when a process starts, so `python -m aisci.main`
re-executes itself once (same PID, same arguments) with it in
GLIBC_TUNABLES, before anything heavy is imported, where no faster malloc
library is installed to preload instead (aisci/allocator.py). Nothing
happens off Linux/glibc, where the kernel's THP mode is 'always' (already
on) or 'never' (unavailable), when GLIBC_TUNABLES already sets it, or with
AISCI_HUGE_PAGES=0.
"""

import os
from typing import Mapping, MutableMapping, Optional

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'AISCI_HUGE_PAGES'  # =0: leave malloc as it is
_THP_ENABLED = '/sys/kernel/mm/transparent_hugepage/enabled'


def thp_mode(path: str = _THP_ENABLED) -> Optional[str]:
  """The kernel's THP mode ('always', 'madvise', 'never'), None if unknown."""
  try:
    with open(path, encoding='ascii') as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def _is_glibc() -> bool:
  try:
    return os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  except (AttributeError, ValueError, OSError):  # not Linux/glibc
    return False


def needs_restart(environ: Mapping[str, str], mode: Optional[str]) -> bool:
  """Whether a process with `environ` gains from restarting with TUNABLE."""
  return (mode == 'madvise' and environ.get(OPT_OUT, '1') != '0'
          and 'glibc.malloc.hugetlb' not in environ.get('GLIBC_TUNABLES', '')
          and _is_glibc())


def with_tunable(environ: Mapping[str, str]) -> MutableMapping[str, str]:
  """A copy of `environ` whose GLIBC_TUNABLES also sets TUNABLE."""
  environ = dict(environ)
  tunables = environ.get('GLIBC_TUNABLES')
  environ['GLIBC_TUNABLES'] = f'{tunables}:{TUNABLE}' if tunables else TUNABLE
  return environ
