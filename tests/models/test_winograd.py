"""aisci/models/winograd.py: F(2x2, 3x3) and F(4x4, 3x3) give lax's
convolution and its gradients; conv.py takes them where its rule says, on
CPU only, and never in programs exported for other runtimes."""

import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import conv
from aisci.models import resnet
from aisci.models import winograd
from aisci.train import steps

NHWC = ('NHWC', 'HWIO', 'NHWC')

CASES = [  # input shape, output channels, padding
    ((2, 8, 8, 5), 6, ((1, 1), (1, 1))),  # 'SAME', even sizes
    ((2, 7, 9, 3), 4, ((1, 1), (1, 1))),  # odd sizes: a half tile at the end
    ((1, 6, 5, 4), 3, ((0, 0), (0, 0))),  # 'VALID'
    ((3, 5, 6, 2), 5, ((2, 0), (1, 2))),  # asymmetric padding
    ((2, 3, 3, 3), 2, ((1, 1), (1, 1))),  # smaller than two tiles
    ((2, 10, 7, 3), 4, ((1, 1), (0, 1))),  # 4 divides neither output size
]
# F(4x4)'s larger coefficients round more (see winograd.py's docstring).
TOLERANCE = {2: 1e-5, 4: 1e-4}


def _inputs(shape, c_out, seed=0):
  # numpy's draws: jax.random compiles each small 4-d shape for seconds.
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape)
  w = rng.normal(size=(3, 3, shape[-1], c_out)) / np.sqrt(9 * shape[-1])
  return jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


def _lax_conv(x, w, pads):
  return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=NHWC)


def _value_and_grads(conv_fn, x, w):
  def loss(x, w):
    y = conv_fn(x, w)
    # A cotangent that differs per element, so that a misplaced one shows.
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape) / y.size)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.parametrize('tile', [2, 4])
@pytest.mark.parametrize('shape,c_out,pads', CASES)
def test_output_and_gradients_match_lax(shape, c_out, pads, tile):
  x, w = _inputs(shape, c_out)
  ours = lambda x, w: winograd.conv3x3(x, w, pads, tile=tile)
  y = jax.jit(ours)(x, w)
  expected_y = _lax_conv(x, w, pads)
  chex.assert_shape(y, expected_y.shape)
  tolerance = TOLERANCE[tile]
  chex.assert_trees_all_close(y, expected_y, rtol=tolerance, atol=tolerance)
  got = _value_and_grads(ours, x, w)
  expected = _value_and_grads(lambda x, w: _lax_conv(x, w, pads), x, w)
  chex.assert_trees_all_equal_shapes_and_dtypes(got, expected)
  chex.assert_trees_all_close(got, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize('tile', [2, 4])
@pytest.mark.parametrize('shape,c_out,pads', CASES[1:4] + CASES[5:])
def test_written_out_transposes_are_the_transforms_transposes(shape, c_out,
                                                              pads, tile):
  x, w = _inputs(shape, c_out)
  forward_in = lambda x_: winograd.input_transform(x_, pads, tile)
  forward_out = lambda m: winograd.output_transform(m, x.shape, pads, tile)
  forward_filter = lambda w_: winograd.filter_transform(w_, tile)
  v = jax.jit(forward_in)(x)
  dv = np.random.default_rng(2).normal(size=v.shape).astype(np.float32)
  dy = np.random.default_rng(3).normal(
      size=jax.eval_shape(forward_out, v).shape).astype(np.float32)
  du = np.random.default_rng(4).normal(
      size=((tile + 2)**2,) + w.shape[2:]).astype(np.float32)

  @jax.jit
  def both_ways(dv, dy, du):
    written = (winograd.input_transform_transpose(dv, x.shape, pads, tile),
               winograd.output_transform_transpose(dy, x.shape, pads, tile),
               winograd.filter_transform_transpose(du, tile))
    automatic = (jax.linear_transpose(forward_in, x)(dv)[0],
                 jax.linear_transpose(forward_out, v)(dy)[0],
                 jax.linear_transpose(forward_filter, w)(du)[0])
    return written, automatic

  written, automatic = both_ways(dv, dy, du)
  chex.assert_trees_all_close(written, automatic, rtol=1e-5, atol=1e-5)


def test_filter_transform_is_g_w_g_transposed():
  _, w = _inputs((1, 4, 4, 3), 2)
  for tile, (_, g, _) in winograd.MATRICES.items():
    expected = np.einsum('ar,rsco,bs->abco', g, np.float64(w), g)
    chex.assert_trees_all_close(
        np.float64(winograd.filter_transform(w, tile)),
        expected.reshape(-1, 3, 2), rtol=1e-6, atol=1e-7)


def test_float32_error():
  # Against a float64 reference computed with NumPy, not with either method:
  # F(2x2) no worse than the direct convolution; F(4x4) within 2e-5 of the
  # output's scale (measured: 6.5e-6 here, 1.5e-5 with 512 channels).
  x, w = _inputs((2, 16, 16, 128), 32, seed=4)
  x64, w64 = np.float64(x), np.float64(w)
  xp = np.pad(x64, ((0, 0), (1, 1), (1, 1), (0, 0)))
  exact = sum(np.einsum('nhwc,co->nhwo', xp[:, i:i + 16, j:j + 16], w64[i, j])
              for i in range(3) for j in range(3))
  pads = ((1, 1), (1, 1))
  error = {tile: np.abs(np.float64(jax.jit(
      lambda x, w, t=tile: winograd.conv3x3(x, w, pads, tile=t))(x, w))
                        - exact).max() for tile in (2, 4)}
  direct = np.abs(np.float64(_lax_conv(x, w, pads)) - exact).max()
  assert error[2] <= direct, (error, direct)
  assert error[4] <= 2e-5 * np.abs(exact).max(), (error, direct)


@pytest.mark.parametrize('x_shape,w_shape,strides,dtype,expected', [
    ((8, 32, 32, 64), (3, 3, 64, 64), (1, 1), jnp.float32, 4),
    ((8, 16, 16, 128), (3, 3, 128, 128), (1, 1), jnp.float32, 4),
    ((8, 8, 8, 256), (3, 3, 256, 256), (1, 1), jnp.float32, 2),  # wide
    ((8, 4, 4, 512), (3, 3, 512, 512), (1, 1), jnp.float32, 2),
    ((8, 4, 4, 24), (3, 3, 24, 24), (1, 1), jnp.float32, 4),
    ((8, 32, 32, 16), (3, 3, 16, 64), (1, 1), jnp.float32, None),  # few in
    ((8, 32, 32, 64), (3, 3, 64, 16), (1, 1), jnp.float32, None),  # few out
    ((8, 2, 2, 512), (3, 3, 512, 512), (1, 1), jnp.float32, None),  # 2x2
    ((8, 32, 32, 64), (3, 3, 64, 64), (2, 2), jnp.float32, None),  # strided
    ((8, 32, 32, 64), (5, 5, 64, 64), (1, 1), jnp.float32, None),
    ((8, 32, 32, 64), (3, 3, 64, 64), (1, 1), jnp.bfloat16, 4),  # in float32
    ((8, 32, 32, 64), (3, 3, 64, 64), (1, 1), jnp.float16, None),
])
def test_the_rule_for_taking_winograd(x_shape, w_shape, strides, dtype,
                                      expected):
  pads = ((1, 1), (1, 1))
  takes = conv.use_winograd(x_shape, w_shape, strides, pads, dtype)
  assert takes == (expected is not None)
  if takes:
    assert conv.winograd_tile(w_shape) == expected


def test_bfloat16_takes_it_in_float32_as_accurately_as_lax():
  # XLA:CPU's own bfloat16 convolution computes in float32 and rounds the
  # result; Winograd in float32 must be as close to the exact result, with
  # the output and both gradients in bfloat16.
  x, w = _inputs((2, 16, 16, 32), 32, seed=6)
  pads = ((1, 1), (1, 1))
  assert conv.use_winograd(x.shape, w.shape, (1, 1), pads, jnp.bfloat16)
  exact = _value_and_grads(lambda x, w: _lax_conv(x, w, pads), x, w)
  x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  ours = _value_and_grads(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), pads, dimension_numbers=NHWC), x16, w16)
  lax16 = _value_and_grads(lambda x, w: _lax_conv(x, w, pads), x16, w16)
  chex.assert_trees_all_equal_dtypes(ours[1], (x16, w16))
  for got, reference, target in zip(jax.tree.leaves(ours),
                                    jax.tree.leaves(lax16),
                                    jax.tree.leaves(exact)):
    error = np.abs(np.float32(got) - target).max()
    lax_error = np.abs(np.float32(reference) - target).max()
    assert error <= 1.5 * lax_error + 1e-3, (error, lax_error)


def _grad_fn(shape=(2, 12, 12, 32), c_out=32, dtype=jnp.float32):
  x, w = _inputs(shape, c_out, seed=5)
  x, w = x.astype(dtype), w.astype(dtype)
  fn = jax.jit(jax.grad(lambda x, w: jnp.sum(conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC) ** 2), argnums=(0, 1)))
  return fn, x, w


def _exported_convolutions(platform):
  fn, x, w = _grad_fn()
  module = jax.export.export(fn, platforms=[platform])(x, w).mlir_module()
  return module.count('stablehlo.convolution')


def test_cpu_programs_compute_it_without_convolutions(monkeypatch):
  assert jax.default_backend() == 'cpu'
  fn, x, w = _grad_fn()
  assert fn.lower(x, w).compile().as_text().count(' convolution(') == 0
  fn, x, w = _grad_fn(dtype=jnp.bfloat16)
  assert fn.lower(x, w).compile().as_text().count(' convolution(') == 0
  monkeypatch.setattr(conv, 'WINOGRAD_ON_CPU', False)
  fn, x, w = _grad_fn()  # forward, input and (a small layer's) weight grad
  assert fn.lower(x, w).compile().as_text().count(' convolution(') == 3


def test_other_platforms_and_exports_keep_xlas_convolution():
  # Forward, input gradient and weight gradient: three convolutions.
  assert _exported_convolutions('cuda') == 3
  assert _exported_convolutions('cpu') == 0
  with conv.xla_convolutions():
    assert _exported_convolutions('cpu') == 3
  assert _exported_convolutions('cpu') == 0  # the context has ended


def test_resnet_block_gradients_with_and_without_winograd(monkeypatch):
  # 24 channels at 8x8: both 3x3 convolutions of the block take Winograd.
  model = resnet.ResidualBlock(features=24)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 24)).astype(np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(1), x, train=False)

  def grads():
    def loss(params):
      y, _ = model.apply({**variables, 'params': params}, x, True,
                         mutable=['batch_stats'])
      return jnp.mean(jnp.sin(y))
    return jax.jit(jax.grad(loss))(variables['params'])

  ours = grads()
  monkeypatch.setattr(conv, 'WINOGRAD_ON_CPU', False)
  direct = grads()
  chex.assert_trees_all_equal_shapes_and_dtypes(ours, direct)
  # Relative to each gradient's scale: BatchNorm's scale gradients are sums
  # with cancellation, so single elements near 0 differ relatively more.
  for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(direct)):
    scale = float(jnp.abs(expected).max())
    assert float(jnp.abs(got - expected).max()) <= 1e-4 * scale + 1e-7
