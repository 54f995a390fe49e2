"""Lookahead (EMA of the weights, synced every k steps) against a NumPy replay."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from aisci.train import lookahead as lookahead_lib
from aisci.train import optimizer as optimizer_lib


def run(tx, params, grads):
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_matches_a_numpy_replay():
  every, decay, total, lr = 2, 0.8, 7, 0.1
  rng = np.random.default_rng(0)
  grads = [rng.normal(size=3).astype(np.float32) for _ in range(total)]
  tx = optax.chain(optax.sgd(lr), lookahead_lib.lookahead(every, decay, total))
  params, state = run(tx, {'w': jnp.ones(3)}, [{'w': g} for g in grads])

  fast = slow = np.ones(3, np.float32)
  for step, g in enumerate(grads, start=1):
    fast = fast - lr * g
    if step % every == 0 or step == total:
      d = 1.0 if step == total else decay * (step / total) ** 3
      slow = d * slow + (1 - d) * fast
      fast = slow
  np.testing.assert_allclose(params['w'], fast, rtol=1e-5)
  # The last step leaves the model at the slow weights.
  np.testing.assert_allclose(params['w'], state[1].slow['w'], rtol=1e-6)
  assert int(state[1].count) == total


def test_zero_decay_changes_nothing():
  grads = [{'w': jnp.full(2, float(i))} for i in range(5)]
  plain, _ = run(optax.sgd(0.1, momentum=0.9), {'w': jnp.ones(2)}, grads)
  # d = decay * progress**3 = 0: every sync sets slow = fast, so the fast
  # weights follow the plain optimizer (the final d = 1 sync is never reached).
  tx = optax.chain(optax.sgd(0.1, momentum=0.9),
                   lookahead_lib.lookahead(1, 0.0, 100))
  ahead, _ = run(tx, {'w': jnp.ones(2)}, grads)
  np.testing.assert_allclose(ahead['w'], plain['w'], rtol=1e-6)


def test_make_optimizer_adds_it_from_the_config():
  config = ml_collections.ConfigDict(dict(
      total_steps=10,
      optimizer=dict(name='sgd', learning_rate=0.1, momentum=0.9,
                     nesterov=True, weight_decay=0.0, grad_clip_norm=0.0,
                     layer_decay=1.0, freeze=(),
                     lookahead=dict(every=5, decay=0.5)),
      schedule=dict(warmup_steps=0, decay='constant',
                    end_learning_rate_factor=0.0)))
  tx, _ = optimizer_lib.make_optimizer(config)
  params = {'w': jnp.ones((2, 2))}
  state = tx.init(params)
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, lookahead_lib.LookaheadState))
           if isinstance(s, lookahead_lib.LookaheadState)]
  assert len(found) == 1
  chex.assert_trees_all_equal(found[0].slow, params)


@pytest.mark.parametrize('every,decay,total', [(0, 0.5, 10), (5, 1.0, 10),
                                               (5, 0.5, 0)])
def test_bad_settings_are_refused(every, decay, total):
  with pytest.raises(ValueError, match='config.optimizer.lookahead'):
    lookahead_lib.lookahead(every, decay, total)
