"""aisci/huge_pages.py: when it restarts a process, and that XLA's big
buffers then come in huge pages."""

import os
import subprocess
import sys
import textwrap

import pytest

from aisci import huge_pages


def test_restarts_only_where_it_helps_and_only_once():
  environ = {'PATH': '/usr/bin'}
  try:
    glibc = os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  except (AttributeError, ValueError, OSError):  # macOS, musl
    glibc = False
  assert huge_pages.needs_restart(environ, 'madvise') == glibc
  assert not huge_pages.needs_restart(environ, 'always')
  assert not huge_pages.needs_restart(environ, 'never')
  assert not huge_pages.needs_restart(environ, None)
  assert not huge_pages.needs_restart({**environ, 'AISCI_HUGE_PAGES': '0'}, 'madvise')
  restarted = huge_pages.with_tunable(environ)
  assert restarted['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
  assert not huge_pages.needs_restart(restarted, 'madvise')  # no loop
  # The user's own tunables are kept.
  kept = huge_pages.with_tunable({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
  assert kept['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert huge_pages.thp_mode(str(path)) == 'madvise'
  assert huge_pages.thp_mode(str(tmp_path / 'missing')) is None


_PROGRAM = textwrap.dedent('''
    import os, sys
    if __name__ == '__main__':
      from aisci import allocator
      allocator.restart()
    import ctypes
    # Through malloc as XLA allocates (numpy would madvise huge pages itself).
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    block = libc.malloc(64 << 20)  # 64 MiB: an mmapped malloc block
    ctypes.memset(block, 1, 64 << 20)
    huge_kb = 0
    with open('/proc/self/smaps_rollup') as f:
      for line in f:
        if line.startswith('AnonHugePages:'):
          huge_kb = int(line.split()[1])
    print(os.getpid(), os.environ.get('GLIBC_TUNABLES', ''), huge_kb, sep='|')
''')


@pytest.mark.skipif(huge_pages.thp_mode() != 'madvise',
                    reason='the kernel THP mode is not madvise')
def test_restarted_process_keeps_its_pid_and_gets_huge_pages(tmp_path):
  script = tmp_path / 'program.py'
  script.write_text(_PROGRAM)
  environ = {k: v for k, v in os.environ.items()
             if k not in ('GLIBC_TUNABLES', 'AISCI_HUGE_PAGES', 'LD_PRELOAD')}
  environ['AISCI_MALLOC'] = 'glibc'  # even where tcmalloc is installed
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  environ['PYTHONPATH'] = repo

  def run(extra):
    process = subprocess.Popen([sys.executable, str(script), 'arg'],
                               env={**environ, **extra}, stdout=subprocess.PIPE,
                               text=True)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    pid, tunables, huge_kb = out.strip().split('|')
    return process.pid, int(pid), tunables, int(huge_kb)

  launched, pid, tunables, huge_kb = run({})
  assert pid == launched  # exec, not a child: signals reach the trainer
  assert tunables == 'glibc.malloc.hugetlb=1'
  assert huge_kb >= 32 << 10  # most of the 64 MiB block in 2 MiB pages
  _, _, tunables, huge_kb = run({'AISCI_HUGE_PAGES': '0'})
  assert tunables == '' and huge_kb < 32 << 10
