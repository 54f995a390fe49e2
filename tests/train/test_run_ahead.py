"""Python may dispatch train steps ahead of the devices, but not so far that
XLA:CPU deadlocks.

With the CPU split into 8 devices (aisci.main's default), a train step holds
an all-reduce over all 8. When more than ~32 steps are queued on a device,
the launch of the next one blocks on XLA's per-device in-flight limit while
holding one of the 8 threads that the queued all-reduce needs: the process
hangs until XLA aborts it 20 minutes later (first seen 2026-12-03 with
log_every_steps=100). The loop waits for the step `loop.MAX_STEPS_AHEAD`
back; this test trains 300 steps without a single log, checkpoint or
evaluation in between, which hangs without that wait.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 300


def test_300_steps_without_a_sync_on_8_cpu_devices_finish(cifar10_small,
                                                           tmp_path):
  command = [
      sys.executable, '-m', 'aisci.main', '--config=configs/vit_cifar.py:tiny',
      '--cpu_devices=8', f'--config.dataset=imagefolder:{cifar10_small}',
      f'--workdir={tmp_path / "run"}', f'--config.total_steps={STEPS}',
      f'--config.log_every_steps={STEPS}',
      f'--config.checkpoint_every_steps={STEPS}',
      f'--config.eval_every_steps={STEPS}', '--config.input.batch_size=16',
      '--config.input.eval_batch_size=104', '--config.model.width=16',
      '--config.model.depth=1', '--config.model.mlp_dim=16',
      '--config.model.num_heads=1', '--config.model.patch_size=8',
      '--config.model.stem=patch', '--config.model.tta_flip=False',
      '--config.schedule.warmup_steps=2']
  try:
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  except subprocess.TimeoutExpired as e:
    output = (e.stderr or b'')
    output = output.decode() if isinstance(output, bytes) else output
    raise AssertionError(
        f'{STEPS} steps did not finish in 120 s (deadlocked?):\n'
        f'{output[-3000:]}') from None
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'step {STEPS}/{STEPS}' in result.stderr, result.stderr[-3000:]
  assert 'may be stuck' not in result.stderr, result.stderr[-3000:]
  # aisci.main paused the garbage collector for start-up and the loop
  # turned it back on before the first step (aisci/gc_pause.py).
  assert 'Garbage collector back on' in result.stderr, result.stderr[-3000:]
  assert 'Memory allocator: ' in result.stderr, result.stderr[-3000:]
