"""Several processes (hosts) as one JAX program: joining, and stopping together.

JAX is multi-controller: every host runs the same `python -m aisci.main`,
sees all devices of all hosts (`jax.devices()`) and drives its own
(`jax.local_devices()`). Jitted steps over the global mesh run on all of
them together; each process feeds its rows of every global batch
(`sharding.to_global`); jit outputs that are replicated (metrics, eval
sums) are already reduced over all hosts; orbax checkpoints are written and
read by all processes together; only process 0 writes logs and reports.

`initialize` must run before anything touches JAX's backends.
"""

import itertools
import os
from typing import Any, Callable, Iterator, Optional

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
from orbax.checkpoint import multihost as orbax_multihost


def _int_env(name: str) -> int:
  try:
    return int(os.environ.get(name, '0'))
  except ValueError:
    return 0


def detect_cluster() -> Optional[str]:
  """The multi-process launcher this process runs under, or None.

  Only launches of more than one process count: a single SLURM task or a
  one-host TPU VM runs as a plain single process.
  """
  # srun sets the step's variables; SLURM_NTASKS alone is also set inside
  # an `sbatch` script or `salloc` shell, where only one process runs.
  if _int_env('SLURM_NTASKS') > 1 and 'SLURM_STEP_NODELIST' in os.environ:
    return 'slurm'
  if _int_env('OMPI_COMM_WORLD_SIZE') > 1:
    return 'openmpi'
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '') or os.environ.get(
      'TPU_PROCESS_ADDRESSES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return 'tpu'
  return None


def initialize(mode: str = 'auto', coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Joins the job's other processes (`jax.distributed.initialize`).

  mode: 'auto' joins when the three explicit arguments are given or
    `detect_cluster` finds a multi-process launch (SLURM srun, Open MPI,
    a multi-host TPU slice); 'on' always joins, letting JAX detect whatever
    is not given (TPU VM metadata, Kubernetes, ...); 'off' never does.
  coordinator_address: 'host:port' of process 0; num_processes, process_id:
    this job's size and this process's rank (0-based).
  Returns whether it joined. Must run before JAX's backends are first used.
  """
  if mode not in ('auto', 'on', 'off'):
    raise ValueError(f"--distributed must be 'auto', 'on' or 'off', not {mode!r}.")
  explicit = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  given = [k for k, v in explicit.items() if v is not None]
  if given and len(given) < 3 and mode != 'on':
    missing = sorted(set(explicit) - set(given))
    raise ValueError(
        f'--{given[0]} was given without --{" --".join(missing)}: a '
        'multi-process run needs --coordinator_address=HOST:PORT (process '
        '0), --num_processes=N and --process_id=I (0..N-1) on every process, '
        'or none of them under SLURM/Open MPI/TPU, which JAX detects.')
  if mode == 'off' or (mode == 'auto' and not given and not detect_cluster()):
    return False
  # Cross-process collectives of CPU devices (the test's emulated hosts, and
  # CPU-only clusters); GPU/TPU collectives use NCCL/ICI whatever this says.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**explicit)
  logging.info('Joined a %d-process job as process %d (%s); %d local of %d '
               'devices.', jax.process_count(), jax.process_index(),
               detect_cluster() or 'explicit flags', jax.local_device_count(),
               jax.device_count())
  return True


class StopAgreement:
  """Turns each process's own stop flag (SIGTERM) into one all agree on.

  A cluster signals the processes of a job at slightly different moments;
  one that stopped alone would leave the others waiting forever in the next
  collective. With several processes, each step's local flags are OR-ed over
  all devices by a tiny jitted all-reduce whose result is read one step
  later: by then it has run, so the host does not wait for the device and
  steps stay queued ahead. Every process reads the same value at the same
  step, so all stop together, one step after the first signal. With one
  process the local flag is used at once.
  """

  def __init__(self, mesh: Mesh):
    self._multi = jax.process_count() > 1
    self._pending = None
    if self._multi:
      # One flag per device: a [devices] array split over all mesh axes.
      self._flags = NamedSharding(mesh, P(tuple(mesh.axis_names)))
      self._local = len(self._flags.addressable_devices)
      self._any = jax.jit(jnp.any, out_shardings=NamedSharding(mesh, P()))

  def __call__(self, local_flag: bool) -> bool:
    """Whether to stop after this step (the same on every process)."""
    if not self._multi:
      return bool(local_flag)
    flags = jax.make_array_from_process_local_data(
        self._flags, np.full((self._local,), bool(local_flag)))
    previous, self._pending = self._pending, self._any(flags)
    return previous is not None and bool(previous.addressable_data(0))


def compile_together(step: Callable[..., Any], state: Any,
                     batches: Iterator[Any]) -> tuple[Callable[..., Any], Any,
                                                      Iterator[Any]]:
  """The jitted `step` compiled ahead, on the first batch (put back), with
  the jaxpr it was traced to (flops.py counts its FLOPs from it).

  Every process compiles before any process runs it: cross-process
  collectives on CPU (gloo) give the processes 30 s to meet at their first
  collective, and compiling takes longer on a host that has other work, so
  with several processes they wait for each other at a barrier of JAX's
  coordination service. The compiled step also tells what memory it needs
  (`compiled.memory_analysis()`, step_memory.py).
  """
  first = next(batches)
  traced = step.trace(state, first)
  compiled = traced.lower().compile()
  if jax.process_count() > 1:
    orbax_multihost.get_barrier_sync_fn()(key='aisci_train_step_compiled',
                                          timeout_ms=30 * 60 * 1000)
  return compiled, traced.jaxpr, itertools.chain([first], batches)
