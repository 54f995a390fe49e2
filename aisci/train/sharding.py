"""Device mesh and shardings from `config.mesh`.

The batch is split over the `data` axis; parameters and optimizer state are
replicated. The step functions are jitted with these shardings and XLA
inserts the collectives (the gradient all-reduce) itself.
"""

from typing import Any, Mapping, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def make_mesh(mesh_config: Mapping[str, int],
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """Mesh with config's axes in order; one size may be -1 (all the rest).

  e.g. {'data': -1} on 8 devices -> Mesh of shape {'data': 8}.
  """
  devices = list(devices if devices is not None else jax.devices())
  names = list(mesh_config)
  sizes = [int(mesh_config[n]) for n in names]
  if DATA_AXIS not in names:
    raise ValueError(f"config.mesh must have a '{DATA_AXIS}' axis; got {names}.")
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh may leave one axis size at -1; got {dict(mesh_config)}.')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'config.mesh {dict(mesh_config)} does not divide the '
                       f'{len(devices)} devices.')
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f'config.mesh {dict(zip(names, sizes))} needs '
                     f'{int(np.prod(sizes))} devices; there are {len(devices)}.')
  return Mesh(np.asarray(devices).reshape(sizes), tuple(names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_sharding(abstract_state: Any, mesh: Mesh) -> Any:
  """Sharding of every leaf of the train state (replicated)."""
  return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str) -> None:
  data_size = mesh.shape[DATA_AXIS]
  if global_batch_size % data_size or global_batch_size % jax.process_count():
    raise ValueError(
        f'{what}={global_batch_size} is not divisible by the '
        f'{data_size} devices of the data axis (and the {jax.process_count()} '
        f'processes): use a multiple of {data_size}.')


def to_global(local_batch: Mapping[str, np.ndarray],
              sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays sharded over devices."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def prefetch_to_mesh(local_batches, sharding: NamedSharding, size: int = 2):
  """Yields global batches, keeping `size` transfers in flight ahead of use."""
  queue = []
  for local_batch in local_batches:
    queue.append(to_global(local_batch, sharding))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue
