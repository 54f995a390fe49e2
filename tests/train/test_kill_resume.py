"""SIGKILL at any moment loses nothing: a real training process is killed
during a step, while a checkpoint is being written and during evaluation;
each rerun resumes from the newest complete checkpoint, and the last one
ends with parameters bitwise equal to an uninterrupted run's.

To kill while a checkpoint is being written, the killed process runs with
orbax's last save stage (the rename of the finished temporary folder to its
final name) held up at one step; this patch lives only in this test.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOTAL_STEPS = 24  # checkpoints every 4 steps, evaluation every 8
HANG_MARKER = 'TEST: checkpoint written, held before its rename'

# Runs `python -m aisci.main` after holding up orbax's finalize (the atomic
# rename of the temporary checkpoint folder) of step $HANG_SAVE_STEP.
MAIN_WITH_HOOK = textwrap.dedent(f'''
    import asyncio, os, sys
    from absl import app
    from orbax.checkpoint._src.path import atomicity
    from aisci import main

    hang_step = os.environ.get('HANG_SAVE_STEP')
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held_finalize(self):
      if self.get_final().name == hang_step:
        print('{HANG_MARKER}', self.get(), file=sys.stderr, flush=True)
        await asyncio.sleep(3600)
      return await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = held_finalize
    sys.argv[0] = 'aisci.main'
    app.run(main.main)
''')


def command(dataset, workdir):
  return [sys.executable, '-c', MAIN_WITH_HOOK,
          '--config=configs/vit_cifar.py:tiny', '--cpu_devices=1',
          f'--config.dataset=imagefolder:{dataset}', f'--workdir={workdir}',
          f'--config.total_steps={TOTAL_STEPS}', '--config.log_every_steps=2',
          '--config.checkpoint_every_steps=4', '--config.eval_every_steps=8',
          '--config.keep_checkpoints=10', '--config.input.batch_size=16',
          '--config.input.eval_batch_size=100', '--config.model.width=32',
          '--config.model.depth=1', '--config.model.mlp_dim=64',
          '--config.model.num_heads=2', '--config.model.patch_size=8',
          # dropout: the per-step randomness must be restored too.
          '--config.model.dropout=0.1', '--config.schedule.warmup_steps=4']


def start(dataset, workdir, stderr=subprocess.PIPE, **env):
  # Processes after the first take their compiled steps from JAX's
  # persistent cache (next to the workdirs): compiling is most of the cost.
  cache = os.path.join(os.path.dirname(workdir), 'jax_cache')
  return subprocess.Popen(
      command(dataset, workdir), cwd=REPO, stderr=stderr, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
               JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', **env))


def kill_when_printed(process, text):
  """SIGKILLs `process` as soon as it prints `text`; returns its output."""
  lines = []
  try:
    for line in process.stderr:
      lines.append(line)
      if text in line:
        process.send_signal(signal.SIGKILL)
        break
    lines.append(process.stderr.read())
  finally:
    if process.poll() is None:
      process.kill()
    process.wait(timeout=60)
  output = ''.join(lines)
  assert process.returncode == -signal.SIGKILL, (
      f'{text!r} never printed (exit {process.returncode}):\n{output[-3000:]}')
  return output


def wait_until_logged(process, log_path, text, timeout=300):
  """Returns once `text` is in the log file `process` writes; fails if the
  process ends first."""
  deadline = time.monotonic() + timeout
  # 'replace': the file may end inside a character the process is writing.
  while text not in (log := log_path.read_text('utf-8', errors='replace')):
    assert process.poll() is None, log[-3000:]
    assert time.monotonic() < deadline, f'{text!r} not logged in {timeout} s'
    time.sleep(0.2)


def complete_checkpoints(workdir):
  """Steps whose checkpoint folder got its final name (orbax renames a
  temporary folder only once everything in it is written)."""
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  return sorted(int(n) for n in names if n.isdigit())


def resumed_from(output):
  if 'Starting at step 0' in output:
    return None
  return int(output.split('Resuming from step ')[1].split(' ')[0])


def newest(steps):
  return steps[-1] if steps else None


def final_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  assert manager.latest_step() == TOTAL_STEPS
  state = manager.restore(TOTAL_STEPS)
  manager.close()
  with open(os.path.join(workdir, 'eval_report.json')) as f:
    report = json.load(f)
  return state, report


def test_sigkill_during_step_save_and_eval_then_resume_exactly(cifar10_small,
                                                              tmp_path):
  reference_dir, workdir = tmp_path / 'reference', tmp_path / 'killed'
  # The uninterrupted run, alongside the killed ones.
  reference_log = open(tmp_path / 'reference.log', 'w+', encoding='utf-8')
  reference = start(cifar10_small, reference_dir, stderr=reference_log)
  try:
    # Its first logged step means init and the train step are compiled and
    # in the cache, so the killed runs load them instead of compiling them
    # a second time alongside it.
    wait_until_logged(reference, tmp_path / 'reference.log',
                      f'step 2/{TOTAL_STEPS}')
    # 1. During a step: killed just after step 6 was logged (steps run on
    #    while the log line travels; checkpoint 8 comes only after eval).
    out = kill_when_printed(start(cifar10_small, workdir),
                            f'step 6/{TOTAL_STEPS}')
    assert 'Starting at step 0' in out
    done = complete_checkpoints(workdir)
    assert done in ([], [4]), done

    # 2. While checkpoint 12 is being written: its data are in the temporary
    #    folder, which is never renamed.
    out = kill_when_printed(start(cifar10_small, workdir, HANG_SAVE_STEP='12'),
                            HANG_MARKER)
    assert resumed_from(out) == newest(done)
    tmp_folder = out.split(HANG_MARKER)[1].split()[0]
    assert os.path.basename(tmp_folder).startswith('12.orbax-checkpoint-tmp')
    assert os.listdir(tmp_folder), 'the partial checkpoint holds files'
    done = complete_checkpoints(workdir)
    assert done == [4, 8], done

    # 3. During evaluation at step 16 (the progress line of step 16 is
    #    printed just before it; its result line never is).
    out = kill_when_printed(start(cifar10_small, workdir),
                            f'step 16/{TOTAL_STEPS}')
    assert resumed_from(out) == 8
    assert 'eval at step 16' not in out
    done = complete_checkpoints(workdir)
    assert 16 not in done and done[-1] in (8, 12), done

    # 4. The last rerun finishes.
    last = start(cifar10_small, workdir)
    out = last.communicate(timeout=300)[1]
    assert last.returncode == 0, out[-3000:]
    assert resumed_from(out) == done[-1]
    assert reference.wait(timeout=300) == 0, (
        (tmp_path / 'reference.log').read_text()[-3000:])
  finally:
    if reference.poll() is None:
      reference.kill()
      reference.wait()
    reference_log.close()

  expected, expected_report = final_state(reference_dir)
  got, report = final_state(workdir)
  # Bitwise: parameters, optimizer moments, BatchNorm-free model state, rng.
  chex.assert_trees_all_equal(got, expected)
  assert not np.array_equal(got['params']['head']['kernel'], 0)  # it trained
  assert report['accuracy'] == expected_report['accuracy']
  assert report['loss'] == expected_report['loss']
