"""2-D convolution tuned for XLA:CPU: 3x3 stride-1 layers as Winograd
F(4x4, 3x3) or F(2x2, 3x3) (`aisci/models/winograd.py`), the other layers
with a weight gradient that is one matrix product over image patches, and
image stems (patches of at most PATCH_FORWARD_MAX_DEPTH values) entirely as
that product; the other forward passes and input gradients, and
everything on other backends, are XLA's own convolution.

Why: XLA:CPU's convolutions (Eigen) are slow on the layer shapes of small
CIFAR networks. Measured 2026-12-02 on 2 cores (AMD EPYC, AVX2; `python -m
benchmarks.conv_grad`, benchmarks/README.md), at the batch one of 8 CPU
devices sees:
- the weight gradient collapses: a 3x3 conv 24 -> 32 channels at 32x32,
  batch 64 (the fast CNN's largest layer) took 33 ms forward, 48 ms for
  the input gradient and 370 ms for the weight gradient; as patches
  [batch * h * w, 9 * c_in] transposed times the output gradient
  [batch * h * w, c_out] it takes ~50 ms;
- the forward pass and input gradient run at 13-65 GFLOP/s, at 32x32 at
  13-32, where a matrix product reaches ~65, so Winograd's 2.25-4x fewer
  multiplies, computed as matrix products, more than pay for its
  transforms: forward and both gradients of the ResNet-18's 3x3 stride-1
  layers took 53 instead of 118 ms with the direct convolution and the
  patch weight gradient (32x32, 64 channels) and 43 instead of 79 (4x4,
  512 channels).
Whole train steps against XLA's convolutions: fast CNN 1.70x, ResNet-18
1.87x. GPUs and TPUs keep XLA's kernels (`lax.platform_dependent`), and
exported programs trace lax's own convolution (`xla_convolutions`).

`conv_general_dilated` has lax's signature, so a Flax module takes it as
`nn.Conv(..., conv_general_dilated=conv.conv_general_dilated)`: parameters,
checkpoints and pretrained-weight conversions are those of nn.Conv.
Convolutions it does not cover (dilation, feature groups, layouts other
than NHWC/HWIO, negative padding) go to lax unchanged.
"""

import contextlib
import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from aisci.models import winograd

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Patches of one product at most (elements of the global batch); larger
# ones are split into row bands of the output, each its own product, which
# bounds the memory of the backward pass to about this much (4 bytes each).
MAX_PATCH_ELEMENTS = 1 << 26  # 256 MB of float32
# Where XLA's kernel is kept on CPU: 3x3-like stride-1 convolutions whose
# input plus output gradient are under this many elements per device (the
# batch split over all devices). Under it XLA's kernel ran at 15-45 GFLOP/s
# and the patches were up to 2x slower; its collapses to 2-5 GFLOP/s (the
# patches 2-15x faster there) were all on larger operands, and around the
# threshold the two are within 2x either way. Strided and 1x1 convolutions
# take the patches at every size (1.2-4.7x faster in the layers measured).
# From the layer tables of `python -m benchmarks.conv_grad` on one machine
# (benchmarks/README.md).
PATCH_MIN_ELEMENTS_PER_DEVICE = 1 << 20
# False gives XLA's own weight gradient on CPU too (benchmarks/conv_grad.py
# compares the two); read when a step is traced.
PATCH_WEIGHT_GRAD_ON_CPU = True
# Where Winograd replaces a 3x3 stride-1 convolution on CPU: float32, both
# channel counts and both output sizes at least these. Layers from 24
# channels and 4x4 outputs up were faster with it in the layer tables of
# `python -m benchmarks.conv_grad` (benchmarks/README.md); with 16 channels
# at 32x32 (ResNet-18 tiny's first stage) the whole step was 13 % slower
# (0.765 vs 0.668 s, both in one process). bfloat16 layers take it in
# float32 (cast in, the result cast back): XLA:CPU computes bfloat16
# products and convolutions in float32 anyway (its programs convert around
# them), so the transforms do not round in bfloat16, and without Winograd
# a bfloat16 ResNet-18 step ran at the direct convolution's speed, 0.55x
# float32's (benchmarks/README.md, "bfloat16 on a CPU").
WINOGRAD_MIN_CHANNELS = 24
WINOGRAD_MIN_OUTPUT_SIZE = 4
# F(4x4, 3x3) (4x fewer multiplies than the direct convolution, half the
# transform traffic of F(2x2)) up to this many channels; wider layers take
# F(2x2, 3x3), whose filter transform is 2.25x smaller: their products are
# bound by reading it (256 and 512 channels at 8x8 and 4x4 measured
# 1.4x and 1.3x faster with F(4x4) than direct, 2.0x and 1.7x with F(2x2)).
WINOGRAD_TILE4_MAX_CHANNELS = 128
# False keeps XLA's direct convolution on CPU (the benchmarks' A/B); read
# when a step is traced.
WINOGRAD_ON_CPU = True
# Where the forward pass on CPU is one matrix product over image patches
# [batch * ho * wo, kh * kw * c_in] @ [kh * kw * c_in, c_out]: layers whose
# patch is at most this deep (image stems with 1-3 input channels; 1x1
# layers of up to 32, such as ResNet-18 tiny's shortcuts), where XLA's
# convolution reads a few channels at a time (the fast CNN's 2x2
# whitening stem, 3 -> 24 channels at 32x32, batch 512, one device: 84 ms
# forward with GELU through XLA's convolution, 46 ms as patches; the whole
# fast CNN step 1.08-1.11x faster, ResNet-18 tiny's 1.00-1.04x, ViT tiny's
# conv stem level: benchmarks/README.md). Its gradients are those of the
# slices and the product; the patches, kh * kw times the input's size, are
# kept for the weight gradient (the fast CNN's: 25 MB at batch 512).
PATCH_FORWARD_MAX_DEPTH = 32
# False keeps XLA's forward pass on CPU for those layers too (the A/B).
PATCH_FORWARD_ON_CPU = True
_XLA_ONLY = False  # set by xla_convolutions()


@contextlib.contextmanager
def xla_convolutions():
  """Within it, conv_general_dilated traces lax's own convolution and
  nothing else: for programs exported to other runtimes (aisci/export.py:
  TFLite, ONNX, SavedModel, StableHLO), which bring their own kernels and
  may not convert the Winograd form (TFLite's converter rejects it)."""
  global _XLA_ONLY
  previous, _XLA_ONLY = _XLA_ONLY, True
  try:
    yield
  finally:
    _XLA_ONLY = previous


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  as_numbers = functools.partial(lax.conv_dimension_numbers, (1,) * 4, (1,) * 4)
  return as_numbers(dimension_numbers) == as_numbers(_NHWC)


def _xla_conv(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                  precision=precision)


def _pad(x, pads):
  return lax.pad(x, jnp.zeros((), x.dtype),
                 ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


def _windows(xp, kernel_size, strides, r0: int, r1: int, wo: int):
  """Output rows r0..r1-1's input windows from the padded input xp:
  [batch, r1 - r0, wo, kh * kw * c], (i, j, channel) in HWIO row order."""
  kh, kw = kernel_size
  sh, sw = strides
  n, _, _, c = xp.shape
  return jnp.concatenate(
      [lax.slice(xp, (0, r0 * sh + i, j, 0),
                 (n, (r1 - 1) * sh + i + 1, (wo - 1) * sw + j + 1, c),
                 (1, sh, sw, 1)) for i in range(kh) for j in range(kw)],
      axis=-1)


def weight_grad_patches(x, g, kernel_size: Sequence[int],
                        strides: Sequence[int],
                        pads: Sequence[tuple[int, int]],
                        precision=None) -> jax.Array:
  """Weight gradient of an NHWC/HWIO convolution as patches^T @ g.

  x: input [batch, h, w, c_in]; g: output gradient [batch, ho, wo, c_out].
  Returns [kh, kw, c_in, c_out] in x's dtype.
  """
  kh, kw = kernel_size
  n, _, _, c = x.shape
  _, ho, wo, o = g.shape
  xp = _pad(x, pads)
  rows = max(1, min(ho, MAX_PATCH_ELEMENTS // max(1, n * wo * kh * kw * c)))
  total = None
  for r0 in range(0, ho, rows):  # row bands of the output
    r1 = min(ho, r0 + rows)
    patches = _windows(xp, kernel_size, strides, r0, r1, wo).reshape(
        -1, kh * kw * c)
    part = jnp.dot(patches.T, g[:, r0:r1].reshape(-1, o), precision=precision,
                   preferred_element_type=jnp.float32)
    total = part if total is None else total + part
  return total.astype(x.dtype).reshape(kh, kw, c, o)


def image_patches(x, kernel_size: Sequence[int], strides: Sequence[int],
                  pads: Sequence[tuple[int, int]]) -> jax.Array:
  """[batch, h, w, c] -> [batch, ho, wo, kh * kw * c]: each output pixel's
  input window, (i, j, channel) in the order of an HWIO kernel's rows."""
  kh, kw = kernel_size
  _, h, w, _ = x.shape
  ho = (h + sum(pads[0]) - kh) // strides[0] + 1
  wo = (w + sum(pads[1]) - kw) // strides[1] + 1
  return _windows(_pad(x, pads), kernel_size, strides, 0, ho, wo)


def use_patch_forward(w_shape) -> bool:
  """Whether the forward pass on CPU is a product over patches (see above)."""
  return (PATCH_FORWARD_ON_CPU
          and math.prod(w_shape[:3]) <= PATCH_FORWARD_MAX_DEPTH)


def _patch_conv(x, w, strides, pads, precision):
  kh, kw, c, o = w.shape
  patches = image_patches(x, (kh, kw), strides, pads)
  return jnp.dot(patches, w.reshape(kh * kw * c, o), precision=precision)


def use_patches(x_shape, g_shape, w_shape, strides) -> bool:
  """Whether the weight gradient on CPU is taken as patches (see above)."""
  if any(s != 1 for s in strides) or tuple(w_shape[:2]) == (1, 1):
    return True
  elements = math.prod(x_shape) + math.prod(g_shape)
  return elements / jax.device_count() >= PATCH_MIN_ELEMENTS_PER_DEVICE


def use_winograd(x_shape, w_shape, strides, pads, dtype) -> bool:
  """Whether a convolution takes winograd.conv3x3 on CPU (see above)."""
  if not WINOGRAD_ON_CPU or jnp.dtype(dtype) not in _WINOGRAD_DTYPES:
    return False
  if tuple(w_shape[:2]) != (3, 3) or tuple(strides) != (1, 1):
    return False
  _, h, w, _ = x_shape
  outputs = (winograd.output_size(h, pads[0]), winograd.output_size(w, pads[1]))
  return (min(w_shape[2:]) >= WINOGRAD_MIN_CHANNELS
          and min(outputs) >= WINOGRAD_MIN_OUTPUT_SIZE)


_WINOGRAD_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _winograd_in_float32(x, w, pads, precision, tile: int):
  """winograd.conv3x3 computed in float32, the result in x and w's dtype."""
  dtype = jnp.result_type(x, w)
  y = winograd.conv3x3(x.astype(jnp.float32), w.astype(jnp.float32), pads,
                       precision, tile)
  return y.astype(dtype)


def winograd_tile(w_shape) -> int:
  """m of the F(m x m, 3x3) that use_winograd's convolutions take."""
  return 4 if max(w_shape[2:]) <= WINOGRAD_TILE4_MAX_CHANNELS else 2


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
  return _xla_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _xla_conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, residuals, g):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, w, strides, pads, precision),
                         x)
  (dx,) = input_vjp(g)

  def xla_weight_grad(x, g):
    _, weight_vjp = jax.vjp(
        lambda w_: _xla_conv(x, w_, strides, pads, precision), w)
    return weight_vjp(g)[0]

  def patch_weight_grad(x, g):
    return weight_grad_patches(x, g, w.shape[:2], strides, pads,
                               precision).astype(w.dtype)

  if not PATCH_WEIGHT_GRAD_ON_CPU or not use_patches(x.shape, g.shape, w.shape,
                                                     strides):
    return dx, xla_weight_grad(x, g)
  dw = lax.platform_dependent(x, g, cpu=patch_weight_grad,
                              default=xla_weight_grad)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding,
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
  """lax.conv_general_dilated, with Winograd or the patch weight gradient on
  CPU where they apply (2-D, NHWC/HWIO, no dilation or groups, padding >= 0)."""
  dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  if (_XLA_ONLY or lhs.ndim != 4 or dilated or feature_group_count != 1
      or batch_group_count != 1 or preferred_element_type is not None
      or not _is_nhwc(dimension_numbers)):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides,
                               padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if any(p < 0 for pair in pads for p in pair):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                    dimension_numbers=dimension_numbers,
                                    precision=precision)
  strides = tuple(int(s) for s in window_strides)
  if use_patch_forward(rhs.shape):
    return lax.platform_dependent(
        lhs, rhs,
        cpu=lambda x, w: _patch_conv(x, w, strides, pads, precision),
        default=lambda x, w: _conv(x, w, strides, pads, precision))
  if use_winograd(lhs.shape, rhs.shape, strides, pads,
                  jnp.result_type(lhs, rhs)):
    tile = winograd_tile(rhs.shape)
    return lax.platform_dependent(
        lhs, rhs,
        cpu=lambda x, w: _winograd_in_float32(x, w, pads, precision, tile),
        default=lambda x, w: _conv(x, w, strides, pads, precision))
  return _conv(lhs, rhs, strides, pads, precision)


class Conv(nn.Conv):
  """nn.Conv computing with conv_general_dilated above; the same fields,
  parameters and automatic names (Conv_0, ...) as nn.Conv."""
  conv_general_dilated: Any = conv_general_dilated
