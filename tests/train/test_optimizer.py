"""Schedules and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aisci.models import vit
from aisci.train import optimizer
from aisci.train import steps
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


def test_warmup_start_factor_starts_above_zero():
  schedule = optimizer.make_schedule(
      tiny_config(**{'schedule.warmup_start_factor': 0.2,
                     'schedule.decay': 'linear',
                     'schedule.end_learning_rate_factor': 0.07}))
  np.testing.assert_allclose(schedule(0), 0.2)
  np.testing.assert_allclose(schedule(5), 0.6, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1.0)
  # airbench's triangle: linear from the peak down to 0.07 of it.
  np.testing.assert_allclose(schedule(55), (1.0 + 0.07) / 2, rtol=1e-6)
  np.testing.assert_allclose(schedule(100), 0.07, rtol=1e-6)


def test_lr_mults_scale_the_matching_parameters_first_match_wins():
  config = tiny_config(**{
      'optimizer.name': 'sgd', 'optimizer.momentum': 0.0,
      'optimizer.weight_decay': 0.0, 'optimizer.grad_clip_norm': 0.0,
      'schedule.warmup_steps': 0, 'schedule.decay': 'constant',
      'optimizer.lr_mults': ((r'bn\d*/bias$', 64.0), ('bn1', 0.5))})
  tx, _ = optimizer.make_optimizer(config)
  params = {'group1': {'bn1': {'bias': jnp.zeros(2), 'scale': jnp.ones(2)},
                       'conv1': {'kernel': jnp.zeros((3, 3, 2, 2))}}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['group1']['bn1']['bias'], -64.0)
  np.testing.assert_allclose(updates['group1']['bn1']['scale'], -0.5)
  np.testing.assert_allclose(updates['group1']['conv1']['kernel'], -1.0)


def test_lr_mults_multiply_with_layer_decay():
  params = {'stem_conv': {'kernel': jnp.zeros(1)},
            'stage1_block1': {'bn': {'bias': jnp.zeros(1)}},
            'head': {'kernel': jnp.zeros(1)}}
  tx = optimizer.scale_by_lr_factors(0.5, (('bias', 10.0),))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params))
  # Layers: stem 0, the block 1, head 2 (top): factors 0.25, 0.5 * 10, 1.
  np.testing.assert_allclose(updates['stem_conv']['kernel'], 0.25)
  np.testing.assert_allclose(updates['stage1_block1']['bn']['bias'], 5.0)
  np.testing.assert_allclose(updates['head']['kernel'], 1.0)


@pytest.mark.parametrize('lr_mults', [(('bias', 2.0, 3.0),), ('bias', 2.0)])
def test_lr_mults_entry_must_be_a_pair(lr_mults):
  config = tiny_config(**{'optimizer.lr_mults': lr_mults})
  with pytest.raises(ValueError, match='lr_mults'):
    optimizer.make_optimizer(config)


def test_weight_decay_skips_norms_biases_and_embeddings():
  model = vit.ViT(num_classes=3, variant=None, width=16, depth=1, mlp_dim=32,
                  num_heads=2, patch_size=4)
  params = steps.init_variables(model, jax.random.PRNGKey(0),
                                jnp.zeros((1, 8, 8, 3)))['params']
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
  assert optax.tree.norm(updates) <= 1.0 + 1e-6
