"""FLOP counts of the train step (aisci/train/flops.py) against XLA's count
and the shapes' arithmetic, and the peaks MFU divides by."""

import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aisci.models import conv as aisci_conv
from aisci.train import flops
from benchmarks import models as bench_models
from configs import vit_cifar


def _xla_flops(fn, *args) -> float:
  """XLA's cost analysis of the program before optimisation (CPU only)."""
  return jax.jit(fn).lower(*args).cost_analysis()['flops']


def _conv(stride, padding, groups=1):
  return lambda x, w: lax.conv_general_dilated(
      x, w, (stride, stride), padding, feature_group_count=groups,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


X = np.zeros((4, 16, 16, 8), np.float32)


@pytest.mark.parametrize('fn,args', [
    (_conv(1, 'VALID'), (X, np.zeros((3, 3, 8, 12), np.float32))),
    (_conv(2, 'VALID'), (X, np.zeros((3, 3, 8, 12), np.float32))),
    (_conv(1, 'VALID', groups=4), (X, np.zeros((3, 3, 2, 12), np.float32))),
    (lambda a, b: jnp.einsum('bij,bjk->bik', a, b),
     (np.zeros((3, 20, 24), np.float32), np.zeros((3, 24, 28), np.float32))),
], ids=['conv', 'strided_conv', 'grouped_conv', 'batched_dot'])
def test_forward_products_count_as_xla_counts_them(fn, args):
  # Without padding XLA counts every multiply-add, as flops.py does.
  assert flops.matmul_flops(jax.make_jaxpr(fn)(*args)) == _xla_flops(fn, *args)


@pytest.mark.parametrize('stride', [1, 2])
def test_a_convolutions_gradients_cost_twice_its_forward(stride):
  conv = _conv(stride, 'SAME')
  w = np.zeros((3, 3, 8, 12), np.float32)
  cotangent = conv(X, w)
  forward = flops.matmul_flops(jax.make_jaxpr(conv)(X, w))
  # The VJP also computes the forward output, which no one reads: skipped.
  # The stride-2 input gradient's dilated input is 3/4 zeros: not counted.
  backward = flops.matmul_flops(jax.make_jaxpr(
      lambda x, w: jax.vjp(conv, x, w)[1](cotangent))(X, w))
  assert forward == 2 * X.shape[0] * cotangent.shape[1] * cotangent.shape[2] * 12 * 9 * 8
  assert backward == 2 * forward


def test_a_platform_dependent_convolution_counts_the_direct_one():
  # On a CPU aisci runs this convolution as Winograd (fewer multiplies);
  # MFU counts the convolution itself.
  x, w = np.zeros((4, 16, 16, 32), np.float32), np.zeros((3, 3, 32, 32), np.float32)
  aisci = lambda x, w: aisci_conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert 'cond' in str(jax.make_jaxpr(aisci)(x, w))
  assert (flops.matmul_flops(jax.make_jaxpr(aisci)(x, w))
          == flops.matmul_flops(jax.make_jaxpr(_conv(1, 'SAME'))(x, w)))


@pytest.mark.parametrize('grad_accum_steps', [1, 2])
def test_a_vit_train_step_counts_what_its_shapes_give(grad_accum_steps):
  config = vit_cifar.get_config('tiny')
  config.model.update(width=48, depth=2, mlp_dim=96, num_heads=3,
                      patch_size=8, stem='patch', tta_flip=False)
  config.input.batch_size = 8
  config.grad_accum_steps = grad_accum_steps
  parts = bench_models.aisci_parts_for(config)
  state = jax.eval_shape(parts['init'], parts['rng'])
  batch = {'image': jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct((8,), jnp.int32)}
  counted = flops.matmul_flops(parts['train_step'].trace(state, batch).jaxpr)
  sizes = parts['model'].sizes()
  expected = 8 * bench_models.vit_train_flops(sizes, 32, 10)
  # ... which counts the images' gradient, one patch embedding's cost,
  # that the step does not compute.
  expected -= 8 * 2 * (32 // 8)**2 * (8 * 8 * 3) * 48
  assert counted == pytest.approx(expected, rel=1e-12)
  if grad_accum_steps > 1:  # XLA counts the scan's body once
    xla = parts['train_step'].lower(state, batch).cost_analysis()['flops']
    assert xla < 0.6 * counted


@pytest.mark.parametrize('device_kind,configured,peak', [
    ('NVIDIA H100 80GB HBM3', 0.0, 989.4),
    ('NVIDIA H100 PCIe', 0.0, 756.0),
    ('NVIDIA H200', 0.0, 989.4),
    ('NVIDIA A100-SXM4-40GB', 0.0, 312.0),
    ('NVIDIA L40', 0.0, 181.0),  # not the L4's
    ('TPU v5 lite', 0.0, 197.0),
    ('TPU v5', 0.0, 459.0),
    ('cpu', 0.0, None),
    ('cpu', 1.5, 1.5),
    ('NVIDIA H100 80GB HBM3', 700.0, 700.0),  # config.peak_tflops wins
])
def test_peak_tflops(device_kind, configured, peak):
  assert flops.peak_tflops(device_kind, configured) == peak


def test_describe_says_how_to_get_mfu_without_a_peak():
  assert 'config.peak_tflops' in flops.describe(3e9, 10, 'cpu', None)
  assert flops.describe(3e9, 10, 'TPU v4', 275.0).endswith(
      'MFU against 275 TFLOP/s per TPU v4 device.')
