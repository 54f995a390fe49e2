"""Tests for aisci/models/resnet.py."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import build_model
from aisci.models.resnet import ResidualBlock
from aisci.models.resnet import ResNet
from aisci.train import steps


def key(seed: int = 0):
  # 'rbg' keys: threefry's XLA compile time (about a second per parameter
  # shape on CPU) would dominate these small tests.
  return jax.random.key(seed, impl='rbg')


def normal(shape, seed: int = 1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)



def count_params(variables) -> int:
  return sum(int(np.prod(x.shape))
             for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('depth,expected', [(18, 11_689_512), (50, 25_557_032)])
def test_imagenet_param_count_matches_torchvision(depth, expected):
  model = build_model({'name': 'resnet', 'depth': depth, 'stem': 'imagenet'},
                      num_classes=1000)
  variables = jax.eval_shape(model.init, key(),
                             jnp.zeros((1, 224, 224, 3)))
  assert count_params(variables) == expected
  assert 'batch_stats' in variables


@pytest.mark.parametrize('depth,stem,size,features', [
    (18, 'cifar', 32, 64), (34, 'cifar', 32, 64),
    (50, 'imagenet', 64, 256), (101, 'imagenet', 64, 256),
])
def test_output_shapes(depth, stem, size, features):
  for num_classes, shape in ((7, (2, 7)), (0, (2, features))):
    model = ResNet(num_classes, depth=depth, stem=stem, width=8)
    images = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(model.init, key(), images)
    out = jax.eval_shape(model.apply, variables, images)
    chex.assert_shape(out, shape)
    assert out.dtype == jnp.float32


@pytest.fixture(scope='module')
def small():
  model = ResNet(10, depth=18, stem='cifar', width=8, zero_init_last_bn=False)
  images = normal((4, 16, 16, 3))
  return model, steps.init_variables(model, key(), images), images


def test_batch_stats_update_in_train_mode_only(small, apply):
  model, variables, images = small
  logits, updates = apply(model, variables, images, train=True,
                          mutable=('batch_stats',))
  chex.assert_shape(logits, (4, 10))
  chex.assert_trees_all_equal_structs(updates['batch_stats'],
                                      variables['batch_stats'])
  before = variables['batch_stats']['stem_bn']
  after = updates['batch_stats']['stem_bn']
  assert not np.allclose(before['mean'], after['mean'])
  # momentum 0.9: new = 0.9 * old + 0.1 * batch.
  x = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats'],
      capture_intermediates=lambda m, _: m.name == 'stem_conv'))(variables,
                                                                 images)
  conv = x[1]['intermediates']['stem_conv']['__call__'][0]
  np.testing.assert_allclose(after['mean'], 0.1 * conv.mean(axis=(0, 1, 2)),
                             atol=1e-5)

  _, frozen = apply(model, variables, images, mutable=('batch_stats',))
  chex.assert_trees_all_equal(frozen['batch_stats'], variables['batch_stats'])


def test_eval_mode_uses_running_statistics(small, apply):
  model, variables, images = small
  # In eval mode an example's output does not depend on the rest of the batch.
  full, one = apply(model, variables, images), apply(model, variables,
                                                     images[:1])
  np.testing.assert_allclose(one, full[:1], atol=1e-5)


def test_zero_init_last_bn_and_projection_shortcut():
  block = ResidualBlock(features=4, stride=2, bottleneck=True,
                        zero_init_last_bn=True)
  x = normal((1, 8, 8, 8))
  params = jax.eval_shape(functools.partial(block.init, train=False), key(),
                          x)['params']
  chex.assert_shape(params['bn3']['scale'], (16,))
  assert 'proj_conv' in params  # Projection shortcut: the shape changes.
  # With the last BatchNorm at zero and an identity shortcut, the block is
  # relu(x) at init.
  identity = ResidualBlock(features=2, bottleneck=True, zero_init_last_bn=True)
  variables = steps.init_variables(identity, key(), x, train=False)
  assert 'proj_conv' not in variables['params']
  np.testing.assert_allclose(identity.apply(variables, x, train=False),
                             jax.nn.relu(x), atol=1e-6)


def test_bf16_compute_gives_float32_logits_close_to_float32(small):
  model, variables, images = small
  logits = jax.jit(model.apply)(variables, images)
  bf16 = ResNet(10, depth=18, stem='cifar', width=8, dtype=jnp.bfloat16)
  logits_bf16 = jax.jit(bf16.apply)(variables, images)
  assert logits_bf16.dtype == jnp.float32
  chex.assert_trees_all_equal_dtypes(  # Parameters stay float32.
      jax.eval_shape(bf16.init, key(), images), variables)
  scale = float(jnp.abs(logits).max())
  np.testing.assert_allclose(logits_bf16, logits, atol=0.05 * scale)
  assert not np.array_equal(logits_bf16, logits)


def test_bad_fields_raise():
  images = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match='depth 20'):
    jax.eval_shape(ResNet(10, depth=20).init, key(), images)
  with pytest.raises(ValueError, match='stem'):
    jax.eval_shape(ResNet(10, stem='tiny').init, key(), images)
