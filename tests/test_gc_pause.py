"""aisci/gc_pause.py: the collector is off between pause and resume, and
resume freezes what start-up left alive. Each case runs in a fresh
interpreter, so that pytest's own objects are never frozen."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(program: str, **environ) -> list[str]:
  result = subprocess.run(
      [sys.executable, '-c', textwrap.dedent(program)], cwd=REPO,
      capture_output=True, text=True, timeout=60,
      env={**os.environ, **environ})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.split()


_PAUSE_AND_RESUME = '''
    import gc
    from aisci import gc_pause
    paused = gc_pause.pause()
    off = not gc.isenabled()
    # Long-lived start-up objects, as imports and tracing make them.
    kept = [[i] for i in range(5000)]
    frozen = gc_pause.resume()
    print(paused, off, gc.isenabled(), frozen >= len(kept),
          frozen == gc.get_freeze_count(), gc_pause.resume())
'''


def test_pause_turns_the_collector_off_and_resume_freezes_and_restarts_it():
  paused, off, enabled, froze_them, count, again = _run(_PAUSE_AND_RESUME)
  assert (paused, off, enabled) == ('True', 'True', 'True')
  assert froze_them == 'True' and count == 'True'
  assert again == '0'  # a second resume has nothing to do


def test_opt_out_and_resume_without_pause_leave_the_collector_alone():
  paused, off, enabled, froze_them, _, _ = _run(_PAUSE_AND_RESUME,
                                                 AISCI_GC_PAUSE='0')
  assert (paused, off, enabled, froze_them) == ('False', 'False', 'True',
                                                'False')
  # The loop resumes unconditionally; called directly (tests, notebooks)
  # nothing was paused, so nothing may be frozen.
  # (Python 3.12 starts with objects of its own in the permanent generation.)
  frozen, newly_frozen, enabled = _run('''
      import gc
      from aisci import gc_pause
      before = gc.get_freeze_count()
      print(gc_pause.resume(), gc.get_freeze_count() - before, gc.isenabled())
  ''')
  assert (frozen, newly_frozen, enabled) == ('0', '0', 'True')


def test_a_collector_the_user_turned_off_stays_off():
  paused, enabled = _run('''
      import gc
      from aisci import gc_pause
      gc.disable()
      paused = gc_pause.pause()
      gc_pause.resume()
      print(paused, gc.isenabled())
  ''')
  assert (paused, enabled) == ('False', 'False')
