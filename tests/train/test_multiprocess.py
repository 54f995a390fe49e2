"""Two processes x 4 CPU devices (gloo collectives; FSDP within a process,
data parallel across) train as one 8-device job: the same parameters,
losses and evaluation as one process with 8 devices (data parallel) and the
same global batch. Each process is a real
`python -m aisci.main` joined by --coordinator_address/--num_processes/
--process_id. And a stop signal to one process stops both at one step."""

import json
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(dataset, workdir, cpu_devices, *extra):
  return [sys.executable, '-m', 'aisci.main', '--config=configs/vit_cifar.py:tiny',
          f'--config.dataset=imagefolder:{dataset}', f'--workdir={workdir}',
          f'--cpu_devices={cpu_devices}',
          '--config.total_steps=6', '--config.log_every_steps=3',
          '--config.checkpoint_every_steps=3', '--config.eval_every_steps=1000',
          '--config.input.batch_size=32', '--config.input.eval_batch_size=200',
          '--config.model.width=32', '--config.model.depth=1',
          '--config.model.mlp_dim=64', '--config.model.num_heads=2',
          '--config.model.patch_size=8', '--config.model.dropout=0.1',
          '--config.schedule.warmup_steps=1',
          # Streamed: decode only the images the 6 steps and the evaluation read.
          '--config.input.cache=False', *extra]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _final(workdir):
  checkpoints = os.path.join(workdir, 'checkpoints')
  steps = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  # Saved from 8 devices, restored onto this process's first device.
  path = os.path.join(checkpoints, str(steps[-1]), 'default')
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata.tree)
  params = checkpointer.restore(path, target)['params']
  checkpointer.close()
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    losses = [r['train/loss'] for r in map(json.loads, f) if 'train/loss' in r]
  with open(os.path.join(workdir, 'eval_report.json')) as f:
    report = json.load(f)
  return steps, params, losses, report


def test_two_processes_train_like_one_process_with_as_many_devices(
    cifar10_small, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  single, multi = str(tmp_path / 'single'), str(tmp_path / 'multi')
  address = f'localhost:{_free_port()}'
  runs = [subprocess.Popen(
      _command(cifar10_small, multi, 4, f'--coordinator_address={address}',
               '--num_processes=2', f'--process_id={i}',
               # FSDP inside each host, data parallel across: each process
               # saves its own part of every parameter.
               '--config.mesh.fsdp=4'),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  runs.append(subprocess.Popen(
      _command(cifar10_small, single, 8), cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = []
  try:
    for run in runs:
      logs.append(run.communicate(timeout=600)[0])
  finally:
    for run in runs:
      if run.poll() is None:
        run.kill()
  for run, log in zip(runs, logs):
    assert run.returncode == 0, log[-4000:]
  for i in range(2):
    assert 'Joined a 2-process job as process %d' % i in logs[i], logs[i][-2000:]
    assert "Mesh {'data': 2, 'fsdp': 4} over 8 devices, 2 process(es)" in logs[i]
  assert "Mesh {'data': 8} over 8 devices, 1 process(es)" in logs[2]

  steps_1, params_1, losses_1, report_1 = _final(single)
  steps_2, params_2, losses_2, report_2 = _final(multi)
  # Checkpoints written by both processes together, restored as one.
  assert steps_2 == steps_1 == [3, 6]
  chex.assert_trees_all_close(params_2, params_1, atol=1e-5, rtol=1e-4)
  # Process 0 alone wrote the logs: one line per log step, same losses.
  assert len(losses_2) == 2
  np.testing.assert_allclose(losses_2, losses_1, rtol=1e-5)
  assert report_2['report']['num_examples'] == 500
  np.testing.assert_array_equal(report_2['report']['confusion_matrix'],
                                report_1['report']['confusion_matrix'])
  # Process 0 drew its examples from its own rows of the evaluation outputs.
  assert 'could not draw' not in logs[0].lower()
  assert os.path.getsize(os.path.join(multi, 'misclassified.png')) > 10_000


AGREEMENT = '''
import sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
from aisci.train import distributed, sharding
pid = int(sys.argv[2])
assert distributed.initialize('auto', sys.argv[1], 2, pid)
agreement = distributed.StopAgreement(sharding.make_mesh({'data': -1}))
# Only process 1 is signalled, after step 3; both must stop at one step.
for step in range(1, 10):
  if agreement(pid == 1 and step >= 3):
    print('STOP AT', step)
    break
'''


def test_processes_agree_to_stop_at_the_same_step():
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  address = f'localhost:{_free_port()}'
  runs = [subprocess.Popen([sys.executable, '-c', AGREEMENT, address, str(i)],
                           cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [run.communicate(timeout=300) for run in runs]
  for run, (out, err) in zip(runs, outputs):
    assert run.returncode == 0, err[-3000:]
  # Read one step late, so that the host never waits for the all-reduce.
  stops = [[l for l in out.splitlines() if l.startswith('STOP')]
           for out, _ in outputs]
  assert stops == [['STOP AT 4'], ['STOP AT 4']], outputs
