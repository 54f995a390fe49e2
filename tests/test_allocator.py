"""aisci/allocator.py: which malloc `python -m aisci.main` restarts with."""

import os
import subprocess
import sys
import textwrap

import pytest

from aisci import allocator

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_library(folder, name):
  path = folder / 'lib' / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'')
  return str(path)


def test_aisci_malloc_chooses_glibc_a_file_or_what_is_installed(tmp_path):
  assert allocator.library({allocator.VARIABLE: 'glibc'}) is None
  with pytest.raises(ValueError, match='AISCI_MALLOC=.*not a file'):
    allocator.library({allocator.VARIABLE: str(tmp_path / 'missing.so')})
  mine = _fake_library(tmp_path / 'mine', 'libmymalloc.so')
  assert allocator.library({allocator.VARIABLE: mine}) == mine
  # 'auto' looks in the conda environment's lib folder first.
  tcmalloc = _fake_library(tmp_path / 'conda', 'libtcmalloc_minimal.so.4')
  jemalloc = _fake_library(tmp_path / 'conda', 'libjemalloc.so.2')
  if sys.platform.startswith('linux'):
    conda = {'CONDA_PREFIX': str(tmp_path / 'conda')}
    assert allocator.library(conda) == tcmalloc
    found = allocator.installed(conda)  # benchmarks/allocators.py's list
    assert found[0] == tcmalloc and jemalloc in found
    assert len(found) == len(set(found)) <= len(allocator.LIBRARIES)


def test_each_library_gets_its_settings_and_the_users_are_kept():
  jemalloc = allocator.with_library({'LD_PRELOAD': '/opt/other.so'},
                                    '/usr/lib/libjemalloc.so.2')
  assert jemalloc['LD_PRELOAD'] == '/usr/lib/libjemalloc.so.2 /opt/other.so'
  assert jemalloc['MALLOC_CONF'] == 'dirty_decay_ms:-1,muzzy_decay_ms:-1'
  assert 'TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD' not in jemalloc
  users = allocator.with_library({'MALLOC_CONF': 'narenas:4'},
                                 '/usr/lib/libjemalloc.so.2')
  assert users['MALLOC_CONF'] == 'narenas:4'
  tcmalloc = allocator.with_library({}, '/usr/lib/libtcmalloc_minimal.so.4')
  assert tcmalloc['LD_PRELOAD'] == '/usr/lib/libtcmalloc_minimal.so.4'
  assert int(tcmalloc['TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD']) >= 1 << 40
  assert 'MALLOC_CONF' not in tcmalloc


def test_restarts_once_and_leaves_a_users_preload_alone(tmp_path):
  mine = _fake_library(tmp_path, 'libmymalloc.so')
  restarted = allocator.restart_environment({allocator.VARIABLE: mine},
                                            'madvise')
  assert restarted['LD_PRELOAD'] == mine
  assert 'GLIBC_TUNABLES' not in restarted  # glibc's malloc is not used
  assert allocator.restart_environment(restarted, 'madvise') is None
  assert allocator.describe(restarted).startswith('libmymalloc.so')
  # A relative AISCI_MALLOC is preloaded by its absolute path: still once.
  relative = {allocator.VARIABLE: os.path.relpath(mine)}
  assert allocator.restart_environment(
      allocator.restart_environment(relative, 'madvise'), 'madvise') is None
  users = {'LD_PRELOAD': '/opt/libjemalloc.so.2', allocator.VARIABLE: mine}
  assert allocator.restart_environment(users, 'madvise') is None
  # No library: glibc with huge pages where the kernel wants madvise.
  glibc = allocator.restart_environment({allocator.VARIABLE: 'glibc'},
                                        'madvise')
  try:
    is_glibc = os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  except (AttributeError, ValueError, OSError):
    is_glibc = False
  if is_glibc:
    assert glibc['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
    assert 'LD_PRELOAD' not in glibc
  assert allocator.restart_environment({allocator.VARIABLE: 'glibc'},
                                       'never') is None


_PROGRAM = textwrap.dedent('''
    import os
    if __name__ == '__main__':
      from aisci import allocator
      allocator.restart()
    import jax.numpy as jnp
    total = float(jnp.arange(1000.0).sum())  # XLA runs under the preload
    with open('/proc/self/maps') as f:
      mapped = os.environ['AISCI_MALLOC'] in f.read()
    print(os.getpid(), os.environ.get('LD_PRELOAD', ''), mapped, total, sep='|')
''')


def _malloc_library_on_this_machine():
  found = allocator.library({})
  if found:
    return found
  # glibc's own malloc-debugging library also replaces malloc when preloaded.
  for folder in allocator._FOLDERS:  # pylint: disable=protected-access
    path = os.path.join(folder, 'libc_malloc_debug.so.0')
    if os.path.isfile(path):
      return path
  return None


@pytest.mark.skipif(_malloc_library_on_this_machine() is None,
                    reason='no malloc library to preload on this machine')
def test_a_restarted_process_keeps_its_pid_and_runs_jax_on_the_library(tmp_path):
  library = _malloc_library_on_this_machine()
  script = tmp_path / 'program.py'
  script.write_text(_PROGRAM)
  environ = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}
  environ.update(PYTHONPATH=_REPO, AISCI_MALLOC=library, JAX_PLATFORMS='cpu')
  process = subprocess.Popen([sys.executable, str(script)], env=environ,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 0, err[-3000:]
  pid, preload, mapped, total = out.strip().split('|')
  assert int(pid) == process.pid  # exec, not a child: signals reach it
  assert preload == library and mapped == 'True'
  assert float(total) == 999 * 1000 / 2


def test_a_bad_aisci_malloc_stops_aisci_main_with_the_fix(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'aisci.main', '--config=configs/vit_cifar.py:tiny',
       f'--workdir={tmp_path}/run'], cwd=_REPO, capture_output=True, text=True,
      env=dict(os.environ, AISCI_MALLOC=str(tmp_path / 'nope.so')), timeout=120)
  assert result.returncode == 1
  assert 'AISCI_MALLOC=' in result.stderr and "'glibc'" in result.stderr
  assert 'Traceback' not in result.stderr
