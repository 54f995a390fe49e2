"""Device mesh and shardings from `config.mesh`.

Mesh axes (any subset; `data` is required; one size may be -1, "the rest"):
  data   data parallel: the batch is split over it, the state replicated.
  fsdp   fully sharded data parallel: the batch is split over it too, and
         every parameter and optimizer-state tensor is split along its
         largest dimension that the axis size divides (kept whole otherwise).
  model  tensor parallel (Megatron-style) for transformer blocks: the MLP
         hidden dimension and the attention heads are split over it (the
         first MLP Dense by columns, the second by rows; q/k/v and the output
         projection by heads), when the axis size divides them.

The devices are laid out data (outermost) -> fsdp -> model (innermost),
whatever order the config names them in: `jax.devices()` is ordered by
process, so the innermost axes (the most communication) stay inside a host,
and each process holds a contiguous block of rows of every global batch.
Axes of size 1 other than `data` are left out of the mesh.

The step functions are jitted with these shardings and XLA inserts the
collectives itself (gradient all-reduce or reduce-scatter, parameter
all-gathers for fsdp, activation all-reduces for model).
"""

import math
import os
import re
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
MODEL_AXIS = 'model'
AXES = (DATA_AXIS, FSDP_AXIS, MODEL_AXIS)

# Tensor-parallel rules: (regex on the parameter name, dimension split over
# `model`). Names are those of aisci's ViT (`MlpBlock_3`,
# `MultiHeadDotProductAttention_1`) and transformer (`mlp`, `attention`);
# optimizer-state leaves carry the same name after a prefix (`0/mu/...`).
MODEL_RULES = (
    # MLP [width, mlp_dim] then [mlp_dim, width]: the hidden activations stay
    # split between the two Dense layers; one all-reduce after the second.
    (r'(^|/)(MlpBlock_\d+|mlp)/Dense_0/(kernel|bias)$', -1),
    (r'(^|/)(MlpBlock_\d+|mlp)/Dense_1/kernel$', 0),
    # Attention by heads: q/k/v kernels [width, heads, head_dim], their
    # biases [heads, head_dim], output kernel [heads, head_dim, width].
    (r'(^|/)(query|key|value)/kernel$', 1),
    (r'(^|/)(query|key|value)/bias$', 0),
    (r'(^|/)out/kernel$', 0),
)


def make_mesh(mesh_config: Mapping[str, int],
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """Mesh of config's axes; one size may be -1 (all the remaining devices).

  e.g. {'data': -1} on 8 devices -> {'data': 8};
       {'data': -1, 'fsdp': 4, 'model': 1} on 8 -> {'data': 2, 'fsdp': 4}.
  """
  devices = sorted(devices if devices is not None else jax.devices(),
                   key=lambda d: (d.process_index, d.id))
  config = {name: int(size) for name, size in dict(mesh_config).items()}
  if DATA_AXIS not in config:
    raise ValueError(f"config.mesh must have a '{DATA_AXIS}' axis; got "
                     f'{list(config)}.')
  unknown = sorted(set(config) - set(AXES))
  if unknown:
    raise ValueError(f'config.mesh has unknown axes {unknown}; the axes are '
                     f'{list(AXES)} (see aisci/train/sharding.py).')
  sizes = [config.get(name, 1) for name in AXES]
  if sizes.count(-1) > 1:
    raise ValueError('config.mesh may leave one axis size at -1; got '
                     f'{config}.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh sizes must be positive or -1; got {config}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'config.mesh {config} does not divide the '
                       f'{len(devices)} devices.')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f'config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} '
        f'devices; there are {len(devices)}.')
  kept = [(name, size) for name, size in zip(AXES, sizes)
          if name == DATA_AXIS or size > 1]
  names, shape = zip(*kept)
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), names)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch is split over: data, and fsdp if present."""
  return tuple(a for a in (DATA_AXIS, FSDP_AXIS) if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data (and fsdp)."""
  axes = batch_axes(mesh)
  return NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(name: str, shape: Sequence[int],
               axis_sizes: Mapping[str, int]) -> P:
  """How one parameter (or optimizer-state leaf) is split over the mesh.

  name: 'a/b/kernel' path of the leaf; shape: its shape; axis_sizes: the
  mesh shape. The `model` rule (MODEL_RULES) goes first; then `fsdp` takes
  the largest remaining dimension that it divides (the first of equal
  ones). Dimensions no rule splits are replicated.
  """
  spec = [None] * len(shape)
  model = axis_sizes.get(MODEL_AXIS, 1)
  if model > 1:
    for pattern, dim in MODEL_RULES:
      if re.search(pattern, name):
        if len(shape) > (dim if dim >= 0 else -dim - 1):
          if shape[dim] % model == 0:
            spec[dim % len(shape)] = MODEL_AXIS
        break
  fsdp = axis_sizes.get(FSDP_AXIS, 1)
  if fsdp > 1:
    free = [d for d in range(len(shape))
            if spec[d] is None and shape[d] % fsdp == 0]
    if free:
      spec[max(free, key=lambda d: shape[d])] = FSDP_AXIS
  return P(*spec)


def _leaf_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator='/')


def tree_sharding(tree: Any, mesh: Mesh) -> Any:
  """NamedSharding of every leaf of `tree` by `param_spec`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(
          mesh, param_spec(_leaf_name(path), x.shape, dict(mesh.shape))),
      tree)


def state_sharding(abstract_state: Any, mesh: Mesh) -> Any:
  """Sharding of every leaf of the train state.

  Parameters, optimizer state and model state (BatchNorm statistics) by
  `param_spec`; the step counter and the PRNG key replicated.
  """
  rep = replicated(mesh)
  return abstract_state.replace(
      step=rep, rng=rep,
      params=tree_sharding(abstract_state.params, mesh),
      opt_state=tree_sharding(abstract_state.opt_state, mesh),
      model_state=tree_sharding(abstract_state.model_state, mesh))


# ------------------------------------------------------------ the table --

def _bytes(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024 or unit == 'GiB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024


def _spec_text(sharding: NamedSharding) -> str:
  spec = tuple(sharding.spec)
  if not any(spec):
    return 'replicated'
  return '(' + ', '.join(
      '-' if s is None else '+'.join(s) if isinstance(s, tuple) else s
      for s in spec) + ')'


def _per_device_bytes(tree: Any, shardings: Any) -> int:
  return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def sharding_table(abstract_state: Any, shardings: Any, mesh: Mesh) -> str:
  """Table of the parameters: name, shape, spec, bytes per device; totals.

  abstract_state: the train state's ShapeDtypeStructs; shardings: what
  `state_sharding` returned for it.
  """
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  rows = [(_leaf_name(path), str(tuple(x.shape)), _spec_text(s),
           _bytes(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize))
          for (path, x), s in zip(leaves, jax.tree.leaves(shardings.params))]
  header = ('parameter', 'shape', 'spec', 'bytes/device')
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
  line = lambda r: '  '.join(
      c.rjust(w) if i == 3 else c.ljust(w)
      for i, (c, w) in enumerate(zip(r, widths))).rstrip()
  total = sum(x.size * x.dtype.itemsize
              for x in jax.tree.leaves(abstract_state.params))
  totals = [
      f'mesh {dict(mesh.shape)}; {len(rows)} parameter tensors, '
      f'{sum(x.size for x in jax.tree.leaves(abstract_state.params)):,} '
      f'parameters ({_bytes(total)})',
      'per device: parameters '
      + _bytes(_per_device_bytes(abstract_state.params, shardings.params))
      + ', optimizer state '
      + _bytes(_per_device_bytes(abstract_state.opt_state, shardings.opt_state))
      + ', model state '
      + _bytes(_per_device_bytes(abstract_state.model_state,
                                 shardings.model_state)),
  ]
  return '\n'.join([line(header)] + [line(r) for r in rows] + totals)


def log_sharding_table(table: str, workdir: str, max_rows: int = 12) -> None:
  """Logs the table (its first `max_rows` rows and the totals) and writes
  all of it to WORKDIR/sharding.txt (process 0)."""
  lines = table.split('\n')
  header, rows, totals = lines[0], lines[1:-2], lines[-2:]
  path = os.path.join(workdir, 'sharding.txt')
  if len(rows) > max_rows:
    rows = rows[:max_rows] + [f'... {len(rows) - max_rows} more in {path}']
  logging.info('Sharding:\n%s', '\n'.join([header] + rows + totals))
  if jax.process_index() == 0:
    with open(path, 'w', encoding='utf-8') as f:
      f.write(table + '\n')


# ------------------------------------------------------------ the batch --

def _batch_shards(mesh: Mesh) -> int:
  """Devices a batch is split over: data x fsdp (`model` does not split it)."""
  return math.prod(mesh.shape.get(a, 1) for a in (DATA_AXIS, FSDP_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str,
                     micro_batches: int = 1) -> None:
  """Global batch must split evenly over the batch axes, the processes
  and (training) the `micro_batches` of gradient accumulation."""
  shards, processes = _batch_shards(mesh), jax.process_count()
  multiple = math.lcm(shards * micro_batches, processes)
  if global_batch_size % multiple:
    axes = 'data' if FSDP_AXIS not in mesh.shape else 'data x fsdp'
    accum = (f' times the {micro_batches} micro-batches of '
             'config.grad_accum_steps' if micro_batches > 1 else '')
    raise ValueError(
        f'{what}={global_batch_size} is not divisible by the {shards} '
        f'devices of the batch axes ({axes}){accum} (and the {processes} '
        f'processes): use a multiple of {multiple}.')


def fitted_eval_batch_size(eval_batch_size: int, total_examples: int,
                           mesh: Mesh) -> int:
  """`eval_batch_size`, or for a split smaller than that, the smallest
  global batch that holds it and that the batch axes and processes divide:
  its one batch then carries as little padding as the mesh allows (a
  validation set of 5 images on 2 devices runs as 6, not as the 8 a
  config asked for)."""
  processes = jax.process_count()
  multiple = math.lcm(_batch_shards(mesh), processes)
  # Each process evaluates up to ceil(total / processes) examples.
  needed = processes * math.ceil(total_examples / processes)
  return min(eval_batch_size, max(1, math.ceil(needed / multiple)) * multiple)


def to_global(local_batch: Mapping[str, np.ndarray],
              sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays sharded over devices."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def to_local(global_tree: Any, sharding: NamedSharding) -> Any:
  """Global arrays sharded as `sharding` (e.g. a step's per-example
  outputs) -> this process's rows as numpy: the inverse of to_global. No
  communication: each process reads the shards it holds."""
  local = multihost_utils.global_array_to_host_local_array(
      global_tree, sharding.mesh, sharding.spec)
  return jax.tree.map(np.asarray, local)


def prefetch_to_mesh(local_batches, sharding: NamedSharding, size: int = 2):
  """Yields global batches, keeping `size` transfers in flight ahead of use."""
  queue = []
  for local_batch in local_batches:
    queue.append(to_global(local_batch, sharding))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue
