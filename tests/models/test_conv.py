"""aisci/models/conv.py: the patch weight gradient equals lax's, the CPU
program really computes it without a convolution, other platforms keep
XLA's kernel, and conv.Conv is nn.Conv's drop-in."""

import chex
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import conv
from aisci.models import resnet
from aisci.train import steps

NHWC = ('NHWC', 'HWIO', 'NHWC')

CASES = [  # input shape, kernel (h, w), strides, padding
    ((2, 9, 9, 5), (3, 3), (1, 1), 'SAME'),
    ((2, 9, 8, 5), (3, 3), (2, 2), 'SAME'),
    ((2, 8, 8, 5), (1, 1), (2, 2), 'VALID'),
    ((2, 8, 8, 3), (4, 4), (4, 4), 'VALID'),  # a ViT patch embedding
    ((3, 7, 7, 4), (3, 3), (1, 2), ((2, 0), (1, 1))),
    ((2, 6, 10, 3), (5, 3), (1, 1), ((2, 2), (1, 1))),
]


def _grads(conv_fn, x, w, strides, padding):
  def loss(x, w):
    y = conv_fn(x, w, strides, padding, dimension_numbers=NHWC)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


def _inputs(shape, kernel, seed=0):
  # numpy's draws: jax.random compiles each small 4-d shape for seconds.
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape)
  w = rng.normal(size=kernel + (shape[-1], 6)) / np.sqrt(
      np.prod(kernel) * shape[-1])
  return jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


@pytest.mark.parametrize('patches', [True, False], ids=['patches', 'xla'])
@pytest.mark.parametrize('shape,kernel,strides,padding', CASES)
def test_gradients_match_lax(monkeypatch, patches, shape, kernel, strides,
                             padding):
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE',
                      0 if patches else 1 << 40)
  x, w = _inputs(shape, kernel)
  chex.assert_equal(
      conv.use_patches(shape, (1,), w.shape, strides),
      patches or strides != (1, 1) or kernel == (1, 1))
  expected = _grads(lax.conv_general_dilated, x, w, strides, padding)
  got = _grads(conv.conv_general_dilated, x, w, strides, padding)
  chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_equal_shapes_and_dtypes(got, expected)


def test_row_bands_sum_to_the_whole_gradient(monkeypatch):
  x, w = _inputs((2, 11, 7, 4), (3, 3), seed=3)
  g = np.random.default_rng(4).normal(size=(2, 11, 7, 5)).astype(np.float32)
  pads = ((1, 1), (1, 1))
  whole = conv.weight_grad_patches(x, g, (3, 3), (1, 1), pads)
  monkeypatch.setattr(conv, 'MAX_PATCH_ELEMENTS', 2 * 7 * 9 * 4 * 3)  # 3 rows
  bands = conv.weight_grad_patches(x, g, (3, 3), (1, 1), pads)
  _, vjp = jax.vjp(lambda w_: lax.conv_general_dilated(
      x, w_, (1, 1), pads, dimension_numbers=NHWC), jnp.zeros((3, 3, 4, 5)))
  chex.assert_trees_all_close(bands, whole, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(bands, vjp(g)[0], rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_their_dtype_and_are_as_accurate_as_lax(
    monkeypatch):
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE', 0)
  x, w = _inputs((2, 8, 8, 8), (3, 3), seed=5)
  exact = _grads(lax.conv_general_dilated, x, w, (1, 1), 'SAME')
  x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  ours = _grads(conv.conv_general_dilated, x16, w16, (1, 1), 'SAME')
  lax16 = _grads(lax.conv_general_dilated, x16, w16, (1, 1), 'SAME')
  chex.assert_trees_all_equal_dtypes(ours, (x16, w16))
  for got, reference, target in zip(ours, lax16, exact):
    error = np.abs(np.float32(got) - target).max()
    lax_error = np.abs(np.float32(reference) - target).max()
    assert error <= 1.5 * lax_error + 1e-3, (error, lax_error)


def _weight_grad():
  """(jitted gradient of a conv's loss w.r.t. its kernel, the kernel)."""
  x, w = _inputs((4, 16, 16, 8), (3, 3))
  return jax.jit(jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC) ** 2))), w


def _compiled_convolutions(threshold, monkeypatch):
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE', threshold)
  weight_grad, w = _weight_grad()
  return weight_grad.lower(w).compile().as_text().count(' convolution(')


def test_cpu_program_takes_the_weight_gradient_without_a_convolution(
    monkeypatch):
  # The forward convolution (needed for the loss's cotangent) stays; XLA's
  # weight gradient is a second convolution, the patches are a dot.
  assert jax.default_backend() == 'cpu'
  assert _compiled_convolutions(0, monkeypatch) == 1
  assert _compiled_convolutions(1 << 40, monkeypatch) == 2


def test_other_platforms_keep_xlas_weight_gradient(monkeypatch):
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE', 0)
  weight_grad, w = _weight_grad()
  convolutions = {}
  for platform in ('cpu', 'cuda'):
    exported = jax.export.export(weight_grad, platforms=[platform])(w)
    convolutions[platform] = exported.mlir_module().count(
        'stablehlo.convolution')
  assert convolutions == {'cpu': 1, 'cuda': 2}, convolutions


STEM_CASES = [  # input shape, kernel, strides, padding: patches <= 32 deep
    ((2, 9, 8, 3), (2, 2), (1, 1), 'SAME'),  # the fast CNN's whitening stem
    ((2, 9, 8, 3), (2, 2), (1, 1), 'VALID'),
    ((2, 9, 8, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ViT conv stem
    ((2, 7, 6, 1), (3, 3), (1, 1), 'SAME'),  # a grey-scale U-Net
]


@pytest.mark.parametrize('shape,kernel,strides,padding', STEM_CASES)
def test_stem_forward_as_patches_matches_lax(shape, kernel, strides, padding):
  x, w = _inputs(shape, kernel, seed=7)
  assert conv.use_patch_forward(w.shape)
  forward = lambda fn: jax.jit(lambda x, w: fn(
      x, w, strides, padding, dimension_numbers=NHWC))(x, w)
  chex.assert_trees_all_close(forward(conv.conv_general_dilated),
                              forward(lax.conv_general_dilated),
                              rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(
      _grads(conv.conv_general_dilated, x, w, strides, padding),
      _grads(lax.conv_general_dilated, x, w, strides, padding),
      rtol=1e-5, atol=1e-5)


def test_image_patches_are_the_windows():
  x = jnp.arange(2 * 5 * 4 * 3, dtype=jnp.float32).reshape(2, 5, 4, 3)
  got = conv.image_patches(x, (2, 3), (2, 1), ((1, 0), (1, 1)))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 0), (1, 1), (0, 0)))
  chex.assert_shape(got, (2, 3, 4, 18))
  for r, c in [(0, 0), (1, 2), (2, 3)]:
    window = padded[:, 2 * r:2 * r + 2, c:c + 3]  # [2, kh, kw, c_in]
    np.testing.assert_array_equal(got[:, r, c], window.reshape(2, -1))


def test_cpu_program_takes_a_stem_without_a_convolution(monkeypatch):
  x, w = _inputs((4, 16, 16, 3), (2, 2))
  def count(on):
    monkeypatch.setattr(conv, 'PATCH_FORWARD_ON_CPU', on)
    step = jax.jit(jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=NHWC) ** 2)))
    return step.lower(w).compile().as_text().count(' convolution(')
  assert count(True) == 0
  assert count(False) >= 1
  monkeypatch.setattr(conv, 'PATCH_FORWARD_ON_CPU', True)
  exported = jax.export.export(jax.jit(lambda w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC)), platforms=['cuda'])(w)
  assert exported.mlir_module().count('stablehlo.convolution') == 1


@pytest.mark.parametrize('kwargs', [dict(rhs_dilation=(2, 2)),
                                    dict(lhs_dilation=(2, 1)),
                                    dict(feature_group_count=2)])
def test_other_convolutions_are_lax_unchanged(monkeypatch, kwargs):
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE', 0)
  x = np.random.default_rng(0).normal(size=(2, 9, 9, 4)).astype(np.float32)
  groups = kwargs.get('feature_group_count', 1)
  w = np.random.default_rng(1).normal(size=(3, 3, 4 // groups, 6)).astype(
      np.float32)

  def loss(fn, x, w):
    return jnp.sum(jnp.sin(fn(x, w, (1, 1), ((1, 1), (1, 1)),
                              dimension_numbers=NHWC, **kwargs)))
  chex.assert_trees_all_close(
      jax.grad(loss, argnums=(1, 2))(conv.conv_general_dilated, x, w),
      jax.grad(loss, argnums=(1, 2))(lax.conv_general_dilated, x, w),
      rtol=1e-5, atol=1e-5)


def test_conv_module_is_nn_conv_with_the_same_parameters():
  class Net(nn.Module):
    layer: type

    @nn.compact
    def __call__(self, x):
      x = self.layer(8, (3, 3), strides=(2, 2))(x)
      return self.layer(4, (1, 1), use_bias=False)(x)

  x = np.random.default_rng(0).normal(size=(2, 10, 10, 3)).astype(np.float32)
  ours = steps.init_variables(Net(conv.Conv), jax.random.PRNGKey(1), x)
  flax_own = steps.init_variables(Net(nn.Conv), jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(ours, flax_own)  # names, shapes and init
  assert set(ours['params']) == {'Conv_0', 'Conv_1'}
  # Both layers are patch products on CPU (27 and 8 values per patch): the
  # same sums in another order.
  chex.assert_trees_all_close(Net(conv.Conv).apply(ours, x),
                              Net(nn.Conv).apply(ours, x), rtol=1e-5, atol=1e-5)


def test_resnet_block_gradients_with_and_without_patches(monkeypatch):
  # A downsampling block: strided 3x3, 1x1 projection and stride-1 3x3
  # convolutions, all taking the patches (threshold 0).
  model = resnet.ResidualBlock(features=8, stride=2)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype(np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(1), x, train=False)

  def grads():
    def loss(params):
      y, _ = model.apply({**variables, 'params': params}, x, True,
                         mutable=['batch_stats'])
      return jnp.mean(jnp.sin(y))
    return jax.jit(jax.grad(loss))(variables['params'])

  monkeypatch.setattr(conv, 'PATCH_WEIGHT_GRAD_ON_CPU', False)
  expected = grads()
  monkeypatch.setattr(conv, 'PATCH_WEIGHT_GRAD_ON_CPU', True)
  monkeypatch.setattr(conv, 'PATCH_MIN_ELEMENTS_PER_DEVICE', 0)
  chex.assert_trees_all_close(grads(), expected, rtol=1e-4, atol=1e-6)
