"""Global unstructured magnitude pruning (`config.prune`), kept by the optimizer.

    config.prune.sparsity = 0.8  # fraction of the included weights set to 0
    config.prune.include = r'(^|/)kernel$'   # which parameters take part,
    config.prune.exclude = r'(^|/)head/'     # but not these
    config.init.path = 'runs/vit_tiny'       # usually: fine-tune a trained run

At the start of a run (after `config.init` loaded the trained weights),
`prune_state` ranks the |values| of all included parameters together (one
global ranking, so layers with small weights lose more) and zeroes exactly
round(sparsity * count) of the smallest. The mask lives in the optimizer
state (`keep_pruned`, the last element of the optax chain), which sets the
updates of pruned weights to zero, so they stay exactly 0 through
fine-tuning and across checkpoints and resumption.
"""

import re
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

DEFAULT_INCLUDE = r'(^|/)kernel$'  # Dense and Conv weight matrices,
# but not the classifier: its weights are few (0.2% of a CIFAR ViT tiny) yet
# small (zero-initialised, weight-decayed), so a global ranking would prune
# nearly all of them (99.8% at 90% sparsity) and cut the logits off.
DEFAULT_EXCLUDE = r'(^|/)head/'


def _name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def included(params: Any, include: str = DEFAULT_INCLUDE,
             exclude: str = DEFAULT_EXCLUDE) -> Any:
  """Pytree of bools: True where the '/'-joined name (e.g. 'Transformer/
  encoderblock_0/MlpBlock_3/Dense_0/kernel') matches `include` and does not
  match `exclude` ('' excludes nothing)."""
  include_re = re.compile(include)
  exclude_re = re.compile(exclude) if exclude else None
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(include_re.search(_name(path))) and not (
          exclude_re and exclude_re.search(_name(path))), params)


def check_sparsity(sparsity: float) -> None:
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f'config.prune.sparsity={sparsity!r} must be in [0, 1): '
                     'the fraction of weights set to zero (e.g. 0.8).')


def magnitude_mask(params: Any, sparsity: float,
                   include: str = DEFAULT_INCLUDE,
                   exclude: str = DEFAULT_EXCLUDE) -> Any:
  """Pytree of bools like params: False for the pruned weights.

  Of the parameters `included` (by name), exactly
  k = round(sparsity * count) values are pruned: those of smallest |value|
  over all of them together (ties broken by position, so k is exact even
  when many values are equal, e.g. already zero). Other parameters are all
  True. Pure and jittable.
  """
  check_sparsity(sparsity)
  leaves, treedef = jax.tree.flatten(params)
  chosen = jax.tree.leaves(included(params, include, exclude))
  candidates = [x for x, c in zip(leaves, chosen) if c]
  if not candidates:
    raise ValueError(
        f'config.prune.include={include!r} with exclude={exclude!r} matches '
        'no parameter; names look like "Transformer/encoderblock_0/'
        'MlpBlock_3/Dense_0/kernel" or "stage1_block1/conv1/kernel".')
  flat = jnp.concatenate([jnp.abs(x).ravel().astype(jnp.float32)
                          for x in candidates])
  count = round(sparsity * flat.size)
  order = jnp.argsort(flat, stable=True)
  keep = jnp.ones(flat.shape, bool).at[order[:count]].set(False)
  masks, offset = [], 0
  for x, c in zip(leaves, chosen):
    if c:
      masks.append(keep[offset:offset + x.size].reshape(x.shape))
      offset += x.size
    else:
      masks.append(jnp.ones(x.shape, bool))
  return jax.tree.unflatten(treedef, masks)


class PruneState(NamedTuple):
  """mask: pytree of bools like params, False where a weight is pruned."""
  mask: Any


def keep_pruned(sparsity: float, include: str = DEFAULT_INCLUDE,
                exclude: str = DEFAULT_EXCLUDE) -> optax.GradientTransformation:
  """Zeroes the updates of pruned weights (put it last in the chain).

  init(params) computes the magnitude mask of `params`; `prune_state`
  recomputes it once the trained weights are loaded.
  """
  check_sparsity(sparsity)

  def init_fn(params):
    return PruneState(mask=magnitude_mask(params, sparsity, include, exclude))

  def update_fn(updates, state, params=None):
    del params
    # where, not multiply: a non-finite update of a pruned weight stays 0.
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)),
                        updates, state.mask), state

  return optax.GradientTransformation(init_fn, update_fn)


def find_mask(opt_state: Any) -> Optional[Any]:
  """The mask of the PruneState inside an optimizer state, or None."""
  found = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda s: isinstance(s, PruneState))
           if isinstance(s, PruneState)]
  return found[0].mask if found else None


def prune_state(state: Any, tx: optax.GradientTransformation) -> Any:
  """Prunes a fresh train state's params by magnitude (no-op without a
  `keep_pruned` in tx): a new optimizer state whose mask comes from these
  params, and the pruned params set to exactly 0. Keeps every array's
  sharding."""
  if find_mask(jax.eval_shape(tx.init, state.params)) is None:
    return state

  def prune(state):
    opt_state = tx.init(state.params)
    mask = find_mask(opt_state)
    params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)),
                          state.params, mask)
    return state.replace(params=params, opt_state=opt_state)

  shardings = jax.tree.map(lambda x: x.sharding, state)
  return jax.jit(prune, out_shardings=shardings)(state)


def sparsity_of(params: Any, include: str = DEFAULT_INCLUDE,
                exclude: str = DEFAULT_EXCLUDE) -> float:
  """Fraction of exact zeros among the `included` parameters."""
  chosen = [x for x, c in zip(
      jax.tree.leaves(params),
      jax.tree.leaves(included(params, include, exclude))) if c]
  zeros = sum(int(jnp.sum(x == 0)) for x in chosen)
  return zeros / max(sum(x.size for x in chosen), 1)
