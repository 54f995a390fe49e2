"""Magnitude pruning: the global mask, and weights that stay pruned while a
trained run is fine-tuned (and resumed)."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aisci import inference
from aisci.train import loop
from aisci.train import prune
from configs import vit_cifar


def test_mask_prunes_exactly_the_globally_smallest():
  rng = np.random.default_rng(0)
  params = {'a': {'kernel': rng.normal(size=(20, 30)).astype(np.float32)},
            'b': {'kernel': 3 * rng.normal(size=(40,)).astype(np.float32),
                  'bias': rng.normal(size=(40,)).astype(np.float32)},
            'head': {'kernel': 0.01 * np.ones((5, 2), np.float32)}}
  mask = prune.magnitude_mask(params, 0.7)
  # Independently: the 70% smallest |values| of the two included kernels.
  values = np.concatenate([np.abs(params['a']['kernel']).ravel(),
                           np.abs(params['b']['kernel']).ravel()])
  threshold = np.sort(values)[round(0.7 * values.size) - 1]
  for name in ('a', 'b'):
    np.testing.assert_array_equal(
        np.asarray(mask[name]['kernel']),
        np.abs(params[name]['kernel']) > threshold)
  # Biases and the (excluded) head are never pruned, however small.
  assert np.all(mask['b']['bias']) and np.all(mask['head']['kernel'])
  # Global, not per layer: the larger-valued kernel b loses less.
  assert np.mean(mask['b']['kernel']) > np.mean(mask['a']['kernel'])


def test_mask_count_is_exact_with_ties_and_errors_name_the_field():
  params = {'dense': {'kernel': jnp.zeros((10, 10)).at[0].set(1.0)}}
  mask = prune.magnitude_mask(params, 0.5)  # 90 zeros tie; 50 are pruned
  assert int(np.sum(~np.asarray(mask['dense']['kernel']))) == 50
  with pytest.raises(ValueError, match='config.prune.sparsity'):
    prune.magnitude_mask(params, 1.0)
  with pytest.raises(ValueError, match='config.prune.include'):
    prune.magnitude_mask(params, 0.5, include='nothing_matches')


def test_masked_updates_are_zero_even_when_not_finite():
  params = {'kernel': jnp.asarray([0.1, -2.0, 0.01, 3.0])}
  tx = optax.chain(optax.sgd(1.0), prune.keep_pruned(0.5, exclude=''))
  state = tx.init(params)
  chex.assert_trees_all_equal(prune.find_mask(state),
                              {'kernel': jnp.asarray([False, True, False, True])})
  updates, _ = tx.update({'kernel': jnp.asarray([jnp.nan, 1.0, jnp.inf, 1.0])},
                         state, params)
  np.testing.assert_array_equal(updates['kernel'], [0.0, -1.0, 0.0, -1.0])


def _prune_config(dataset, init_path, **overrides):
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{dataset}'
  # The model of the `tiny_vit_run` fixture (tests/conftest.py).
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=100)
  config.init.path = str(init_path)
  config.prune.sparsity = 0.8
  config.optimizer.learning_rate = 1e-3
  config.schedule.warmup_steps = 1
  config.update(total_steps=6, log_every_steps=3, eval_every_steps=1000,
                checkpoint_every_steps=3, keep_checkpoints=2)
  config.update(overrides)
  return config


def test_fine_tuning_keeps_pruned_weights_zero_across_resume(
    cifar10_small, tiny_vit_run, tmp_path):
  trained = inference.restore_variables(str(tiny_vit_run))[0]['params']
  workdir = str(tmp_path / 'pruned')
  config = _prune_config(cifar10_small, tiny_vit_run)
  # Stopped after step 3 and resumed: the mask comes back with the
  # optimizer state rather than from the (changed) weights.
  assert loop.train_and_evaluate(config, workdir, stop_at_step=3) is None
  loop.train_and_evaluate(config, workdir)
  tuned, step = inference.restore_variables(workdir)
  assert step == 6
  tuned = tuned['params']
  expected = prune.magnitude_mask(trained, 0.8)  # from the trained weights
  chosen = jax.tree.leaves(prune.included(trained))
  pruned = kept = 0
  kept_changed = []
  for before, after, keep, inc in zip(jax.tree.leaves(trained),
                                      jax.tree.leaves(tuned),
                                      jax.tree.leaves(expected), chosen):
    before, after, keep = map(np.asarray, (before, after, keep))
    if inc:
      np.testing.assert_array_equal(after[~keep], 0.0)  # exactly zero
      assert np.all(after[keep] != 0)
      kept_changed.append(np.abs(after[keep] - before[keep]).ravel())
      pruned, kept = pruned + np.sum(~keep), kept + np.sum(keep)
    else:
      assert np.all(keep)
  assert pruned == round(0.8 * (pruned + kept))
  assert prune.sparsity_of(tuned) == pytest.approx(0.8, abs=1 / (pruned + kept))
  # Fine-tuning changed the kept weights and the (unpruned) head.
  assert np.mean(np.concatenate(kept_changed) > 0) > 0.9
  assert not np.allclose(tuned['head']['kernel'], trained['head']['kernel'])
  assert os.path.exists(os.path.join(workdir, 'report.md'))
