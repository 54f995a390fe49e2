"""SIGTERM on a real training process: it saves, exits 75 and resumes; a
second run on a workdir in use is refused."""

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command(dataset, workdir, total_steps):
  return [sys.executable, '-m', 'aisci.main', '--config=configs/vit_cifar.py:tiny',
          f'--config.dataset=imagefolder:{dataset}', f'--workdir={workdir}',
          f'--config.total_steps={total_steps}', '--config.log_every_steps=2',
          '--config.checkpoint_every_steps=1000000', '--config.eval_every_steps=1000000',
          '--config.input.batch_size=16', '--config.input.eval_batch_size=200',
          '--config.model.width=32', '--config.model.depth=1',
          '--config.model.mlp_dim=64', '--config.model.num_heads=2',
          '--config.model.patch_size=8']


def wait_for(process, text):
  lines = []
  for line in process.stderr:
    lines.append(line)
    if text in line:
      return ''.join(lines)
  raise AssertionError(f'{text!r} never printed:\n' + ''.join(lines[-30:]))


def test_sigterm_saves_and_exits_for_requeue_then_resumes(cifar10_small, tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  first = subprocess.Popen(command(cifar10_small, workdir, 100_000), cwd=REPO,
                           env=env, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(first, 'step 2/100000')
    # A second run on the same workdir is refused while the first holds it.
    second = subprocess.run(command(cifar10_small, workdir, 100_000), cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode != 0
    assert f'Workdir {workdir} is in use by a running job (pid {first.pid}' in second.stderr
    first.send_signal(signal.SIGTERM)
    rest = first.stderr.read()
    assert first.wait(timeout=300) == 75
  finally:
    if first.poll() is None:
      first.kill()
  assert 'Stopped by SIGTERM after step' in rest and 'Rerun the same command' in rest
  saved = int(rest.split('Stopped by SIGTERM after step ')[1].split(';')[0])
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(saved)]
  resumed = subprocess.run(command(cifar10_small, workdir, saved + 4), cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming from step {saved}' in resumed.stderr
  # vit_cifar.py:tiny splits the CPU into 8 devices (config.cpu_devices).
  assert "Mesh {'data': 8} over 8 devices" in resumed.stderr
  assert 'MB of temporaries per device per step' in resumed.stderr
  assert 'Final evaluation at step' in resumed.stderr
