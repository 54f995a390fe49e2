"""Schedules and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aisci.models import vit
from aisci.train import optimizer
from configs import vit_cifar


def tiny_config(**overrides):
  config = vit_cifar.get_config('tiny')
  config.total_steps = 100
  config.schedule.warmup_steps = 10
  config.optimizer.learning_rate = 1.0
  config.schedule.end_learning_rate_factor = 0.0
  for key, value in overrides.items():
    parent, field = key.split('.')
    config[parent][field] = value
  return config


def test_warmup_then_cosine():
  schedule = optimizer.make_schedule(tiny_config())
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 0.5)
  np.testing.assert_allclose(schedule(10), 1.0)
  # Half-way through the 90 decay steps, cosine is at half the peak.
  np.testing.assert_allclose(schedule(55), 0.5, atol=1e-6)
  np.testing.assert_allclose(schedule(100), 0.0, atol=1e-6)


def test_weight_decay_skips_norms_biases_and_embeddings():
  model = vit.ViT(num_classes=3, variant=None, width=16, depth=1, mlp_dim=32,
                  num_heads=2, patch_size=4)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))['params']
  mask = optimizer.weight_decay_mask(params)
  flat = {'/'.join(k.key for k in path): v for path, v in
          jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat['embedding/kernel'] and flat['head/kernel']
  assert flat['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel']
  for name in ('cls', 'Transformer/posembed_input/pos_embedding', 'head/bias',
               'Transformer/encoder_norm/scale',
               'Transformer/encoderblock_0/LayerNorm_0/bias'):
    assert not flat[name], name


def test_adamw_decays_only_masked_parameters():
  config = tiny_config(**{'optimizer.weight_decay': 0.5,
                          'optimizer.grad_clip_norm': 0.0,
                          'schedule.warmup_steps': 0})
  tx, _ = optimizer.make_optimizer(config)
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  # Zero gradient: the kernel moves by -lr * wd * w, the bias stays.
  np.testing.assert_allclose(updates['dense']['kernel'], -0.5)
  np.testing.assert_allclose(updates['dense']['bias'], 0.0)


def test_gradient_clipping_and_sgd():
  config = tiny_config(**{'optimizer.name': 'sgd', 'optimizer.momentum': 0.0,
                          'optimizer.weight_decay': 0.0,
                          'optimizer.grad_clip_norm': 1.0,
                          'schedule.warmup_steps': 0})
  tx, _ = optimizer.make_optimizer(config)
  params = {'w': jnp.zeros(2)}
  updates, _ = tx.update({'w': jnp.array([3.0, 4.0])}, tx.init(params), params)
  # Norm 5 clipped to 1, then -lr * g with lr 1.
  np.testing.assert_allclose(updates['w'], [-0.6, -0.8], rtol=1e-6)
  assert optax.global_norm(updates) <= 1.0 + 1e-6
