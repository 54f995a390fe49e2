"""Tests for aisci/models/unet.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import build_model
from aisci.models.unet import UNet
from aisci.train import steps


def key(seed: int = 0):
  # 'rbg' keys: threefry's XLA compile time (about a second per parameter
  # shape on CPU) would dominate these small tests.
  return jax.random.key(seed, impl='rbg')


def normal(shape, seed: int = 1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)



@pytest.mark.parametrize('norm', ['batch', 'group', 'none'])
@pytest.mark.parametrize('upsample', ['transpose', 'resize'])
def test_output_shapes(norm, upsample):
  images = jnp.zeros((2, 32, 48, 3))
  for num_classes, channels in ((5, 5), (0, 8)):
    model = UNet(num_classes, depth=3, base_width=8, norm=norm,
                 upsample=upsample)
    variables = jax.eval_shape(model.init, key(), images)
    assert ('batch_stats' in variables) == (norm == 'batch')
    out = jax.eval_shape(model.apply, variables, images)
    chex.assert_shape(out, (2, 32, 48, channels))
    assert out.dtype == jnp.float32


def test_default_sizes():
  model = build_model({'name': 'unet'}, num_classes=2)
  variables = jax.eval_shape(model.init, key(),
                             jnp.zeros((1, 64, 64, 1)))
  params = variables['params']
  chex.assert_shape(params['bottom']['conv2']['kernel'], (3, 3, 1024, 1024))
  chex.assert_shape(params['up0']['conv1']['kernel'], (3, 3, 128, 64))
  chex.assert_shape(params['logits']['kernel'], (1, 1, 64, 2))
  assert 'bias' not in params['down0']['conv1']  # A norm follows.
  assert sorted(k for k in params if k.startswith('down')) == [
      'down0', 'down1', 'down2', 'down3']


@pytest.mark.parametrize('size', [(20, 16), (16, 12)])
def test_indivisible_size_raises_with_the_fix(size):
  model = UNet(2, depth=3, base_width=4)
  images = jnp.zeros((1, *size, 1))
  with pytest.raises(ValueError) as e:
    jax.eval_shape(model.init, key(), images)
  message = str(e.value)
  assert f'{size[0]}x{size[1]}' in message
  assert 'depth=3' in message and '8' in message
  assert 'pad or crop' in message and 'config.model.depth' in message


@pytest.fixture(scope='module')
def small():
  model = UNet(3, depth=2, base_width=4, norm='batch')
  images = normal((2, 16, 16, 2))
  return model, steps.init_variables(model, key(), images), images


def test_batch_stats_update_in_train_mode_only(small, apply):
  model, variables, images = small
  logits, updates = apply(model, variables, images, train=True,
                          mutable=('batch_stats',))
  chex.assert_shape(logits, (2, 16, 16, 3))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         updates['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(changed))
  _, frozen = apply(model, variables, images, mutable=('batch_stats',))
  chex.assert_trees_all_equal(frozen['batch_stats'], variables['batch_stats'])


def test_skip_connections_carry_full_resolution_detail(small):
  # A one-pixel change moves the logits at that pixel (through the level-0
  # skip) but not at a pixel beyond every receptive field.
  model, variables, images = small
  apply = jax.jit(model.apply)
  moved = apply(variables, images.at[0, 0, 0].add(10.0)) - apply(
      variables, images)
  assert np.abs(moved[0, 0, 0]).max() > 1e-3
  np.testing.assert_array_equal(moved[1], 0.0)


@pytest.mark.parametrize('norm,upsample', [('group', 'resize'),
                                           ('batch', 'transpose')])
def test_bf16_compute_gives_float32_logits_close_to_float32(norm, upsample):
  images = normal((2, 16, 16, 2))
  model = UNet(3, depth=2, base_width=4, norm=norm, upsample=upsample)
  variables = steps.init_variables(model, key(), images)
  logits = jax.jit(model.apply)(variables, images)
  bf16 = UNet(3, depth=2, base_width=4, norm=norm, upsample=upsample,
              dtype=jnp.bfloat16)
  logits_bf16 = jax.jit(bf16.apply)(variables, images)
  assert logits_bf16.dtype == jnp.float32
  scale = float(jnp.abs(logits).max())
  np.testing.assert_allclose(logits_bf16, logits, atol=0.05 * scale)
  assert not np.array_equal(logits_bf16, logits)


def test_bad_fields_raise():
  images = jnp.zeros((1, 16, 16, 1))
  with pytest.raises(ValueError, match='norm'):
    jax.eval_shape(UNet(2, norm='layer').init, key(), images)
  with pytest.raises(ValueError, match='upsample'):
    jax.eval_shape(UNet(2, upsample='nearest').init, key(), images)


def test_dihedral_tta_averages_the_eight_views(apply):
  model = UNet(num_classes=2, depth=2, base_width=4, norm="batch")
  tta = UNet(num_classes=2, depth=2, base_width=4, norm='batch',
                  tta='dihedral')
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  views = []
  for k in range(4):
    for flip in (False, True):
      view = np.rot90(x, k, axes=(1, 2))
      view = view[:, :, ::-1] if flip else view
      out = np.asarray(apply(model, variables, np.ascontiguousarray(view)))
      out = out[:, :, ::-1] if flip else out
      views.append(np.rot90(out, -k, axes=(1, 2)))
  np.testing.assert_allclose(apply(tta, variables, x), np.mean(views, axis=0),
                             rtol=1e-5, atol=1e-5)
  # Training ignores it: same output as the plain model.
  plain = apply(model, variables, x, train=True, mutable=('batch_stats',))[0]
  with_tta = apply(tta, variables, x, train=True, mutable=('batch_stats',))[0]
  np.testing.assert_allclose(with_tta, plain, rtol=1e-6)
