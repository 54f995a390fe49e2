"""When a run joins a multi-process job, and the error for half-given flags.
(The joined run itself: tests/train/test_multiprocess.py.)"""

import pytest

from aisci.train import distributed

_LAUNCHER_VARS = ('SLURM_NTASKS', 'SLURM_STEP_NODELIST', 'OMPI_COMM_WORLD_SIZE',
                  'TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES')


@pytest.fixture
def clean_env(monkeypatch):
  for name in _LAUNCHER_VARS:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_detects_multi_process_launches_only(clean_env):
  assert distributed.detect_cluster() is None
  # Inside an sbatch script: SLURM_NTASKS is set but srun has not started
  # the processes.
  clean_env.setenv('SLURM_NTASKS', '16')
  assert distributed.detect_cluster() is None
  clean_env.setenv('SLURM_STEP_NODELIST', 'node[001-002]')
  assert distributed.detect_cluster() == 'slurm'
  clean_env.setenv('SLURM_NTASKS', '1')
  assert distributed.detect_cluster() is None
  clean_env.setenv('TPU_WORKER_HOSTNAMES', 'w0')
  assert distributed.detect_cluster() is None
  clean_env.setenv('TPU_WORKER_HOSTNAMES', 'w0,w1,w2,w3')
  assert distributed.detect_cluster() == 'tpu'


def test_single_process_and_half_given_flags(clean_env):
  assert distributed.initialize('auto') is False
  assert distributed.initialize('off', 'host:1234', 2, 0) is False
  with pytest.raises(ValueError, match='--coordinator_address was given '
                     'without --num_processes --process_id'):
    distributed.initialize('auto', coordinator_address='host:1234')
  with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
    distributed.initialize('yes')
