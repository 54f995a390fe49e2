"""Lookahead with an EMA of the weights, as in the CIFAR-10 speed runs
(Zhang et al. 2019, "Lookahead Optimizer"; Jordan's airbench, 2024).

The optimizer moves the fast weights as usual; every `every` steps the slow
weights take an exponential-moving-average step towards them,
slow <- d * slow + (1 - d) * fast, and the fast weights jump back to the
slow ones. d ramps up as (step / total_steps) ** 3 to `decay`, so early
training is not slowed down, and the last step leaves the model at the slow
weights. Being an optax transformation, the slow weights live in the
optimizer state: checkpointed, restored and sharded like the rest, with no
change to the train step or evaluation.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LookaheadState(NamedTuple):
  count: jax.Array  # [] int32, updates applied so far
  slow: optax.Params  # the slow (averaged) weights


def lookahead(every: int, decay: float, total_steps: int
              ) -> optax.GradientTransformation:
  """Goes last in an optax chain: rewrites the updates of sync steps.

  every: steps between syncs (airbench: 5).
  decay: the EMA decay of a sync at the end of training (airbench:
    0.95 ** 5); d(step) = decay * (step / total_steps) ** 3.
  total_steps: the run's length; that step syncs with d = 1 (the model
    ends at the slow weights).
  """
  if every < 1 or not 0.0 <= decay < 1.0 or total_steps < 1:
    raise ValueError(
        f'lookahead needs every >= 1, 0 <= decay < 1 and total_steps >= 1; '
        f'got every={every}, decay={decay}, total_steps={total_steps}: fix '
        'config.optimizer.lookahead.')

  def init_fn(params):
    return LookaheadState(count=jnp.zeros([], jnp.int32),
                          slow=jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('lookahead needs the params in tx.update(..., params).')
    count = state.count + 1
    progress = jnp.minimum(count / total_steps, 1.0).astype(jnp.float32)
    d = jnp.where(count >= total_steps, 1.0, decay * progress**3)
    sync = (count % every == 0) | (count >= total_steps)

    def leaf(update, slow, param):
      fast = param + update
      new_slow = jnp.where(sync, d * slow + (1 - d) * fast, slow)
      return jnp.where(sync, new_slow - param, update), new_slow

    pairs = jax.tree.map(leaf, updates, state.slow, params)
    is_pair = lambda x: isinstance(x, tuple)
    new_updates = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
    slow = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
    return new_updates, LookaheadState(count=count, slow=slow)

  return optax.GradientTransformation(init_fn, update_fn)
