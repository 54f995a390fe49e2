"""3x3 stride-1 convolutions as Winograd's minimal filtering F(2x2, 3x3).

Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks":
each 2x2 tile of a 3x3 convolution's output is A^T [(G w G^T) * (B^T d B)] A
for the 4x4 input tile d under it. Over all tiles and channels that is 16
matrix products [tiles, c_in] @ [c_in, c_out], 16 multiplies per 4 outputs
instead of 36 (2.25x fewer), plus linear transforms of the input, filter
and output that cost memory traffic, not multiplies.

Why: on CPU, XLA's direct convolution (Eigen) runs the CIFAR networks'
3x3 layers at about half the speed of its matrix products, so 2.25x fewer
multiplies at matrix-product speed more than pay for the transforms where
the layer has enough channels and tiles (`aisci/models/conv.py` decides;
`python -m benchmarks.conv_grad` measures). The backward pass is written
out (custom VJP) rather than left to autodiff, whose transpose of the
output transform was 3x slower than the transform itself.

Float32 error: about 1e-6 of the output's scale, like the direct
convolution's (tests/models/test_winograd.py).
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# F(2x2, 3x3)'s matrices (Lavin & Gray, eq. 7): B^T [4, 4], G [4, 3], A^T [2, 4].
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])

Pads = tuple[tuple[int, int], tuple[int, int]]


def _combine(terms: Sequence[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
  """[sum_r matrix[a, r] * terms[r] for each row a]: adds and subtracts
  (the matrices hold 0 and +-1 only), which XLA fuses into one loop."""
  out = []
  for row in matrix:
    total = None
    for coefficient, term in zip(row, terms):
      if coefficient == 0:
        continue
      if total is None:
        total = term if coefficient == 1 else -term
      else:
        total = total + term if coefficient == 1 else total - term
    out.append(total)
  return out


def output_size(size: int, pad: tuple[int, int]) -> int:
  return size + pad[0] + pad[1] - 2


def _tiles(shape, pads: Pads) -> tuple[int, int]:
  """Number of 2x2 output tiles along height and width (rounded up)."""
  _, h, w, _ = shape
  return -(-output_size(h, pads[0]) // 2), -(-output_size(w, pads[1]) // 2)


def input_transform(x: jax.Array, pads: Pads) -> jax.Array:
  """B^T d B of every 4x4 input tile d (stride 2).

  x: [batch, h, w, c] -> [16, batch * tiles_h * tiles_w, c].
  """
  n, h, w, c = x.shape
  th, tw = _tiles(x.shape, pads)
  # Pad to 2 * tiles + 2 rows and columns: the tiles of an odd output size
  # read one row/column of zeros past the image.
  xp = jnp.pad(x, ((0, 0), (pads[0][0], 2 * th + 2 - h - pads[0][0]),
                   (pads[1][0], 2 * tw + 2 - w - pads[1][0]), (0, 0)))
  # Rows, then columns; each stage one stacked array (a single XLA loop),
  # which measured faster than 16 separate tiles stacked at the end.
  d = [lax.slice_in_dim(xp, r, r + 2 * th - 1, 2, axis=1) for r in range(4)]
  rows = jnp.stack(_combine(d, _BT))  # [4, n, th, 2 * tw + 2, c]
  e = [lax.slice_in_dim(rows, s, s + 2 * tw - 1, 2, axis=3) for s in range(4)]
  v = jnp.stack(_combine(e, _BT), axis=1)  # [4, 4, n, th, tw, c]
  return v.reshape(16, n * th * tw, c)


def _overlap_add(parts: Sequence[jax.Array], axis: int) -> jax.Array:
  """Sum of tiles of 4 at stride 2: parts[r] holds element r of each of t
  tiles along `axis`; returns the 2t + 2 entries they cover."""
  def shifted(a, before):  # one zero before or after along axis
    widths = [(0, 0)] * a.ndim
    widths[axis] = (1, 0) if before else (0, 1)
    return jnp.pad(a, widths)
  even = shifted(parts[0], False) + shifted(parts[2], True)
  odd = shifted(parts[1], False) + shifted(parts[3], True)
  out = jnp.stack([even, odd], axis=axis + 1)
  return out.reshape(out.shape[:axis] + (-1,) + out.shape[axis + 2:])


def input_transform_transpose(dv: jax.Array, x_shape, pads: Pads
                              ) -> jax.Array:
  """The transpose of input_transform: [16, P, c] -> [batch, h, w, c]."""
  n, h, w, c = x_shape
  th, tw = _tiles(x_shape, pads)
  dv = dv.reshape(4, 4, n, th, tw, c)
  e = _combine([dv[:, b] for b in range(4)], _BT.T)  # 4 x [4, n, th, tw, c]
  rows = _overlap_add(e, axis=3)  # [4, n, th, 2 * tw + 2, c]
  d = _combine([rows[a] for a in range(4)], _BT.T)
  dxp = _overlap_add(d, axis=1)  # [n, 2 * th + 2, 2 * tw + 2, c]
  return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


def filter_transform(w: jax.Array) -> jax.Array:
  """G w G^T: [3, 3, c_in, c_out] -> [16, c_in, c_out]."""
  g = jnp.asarray(_G, w.dtype)
  u = jnp.einsum('ar,rsco,bs->abco', g, w, g, precision=lax.Precision.HIGHEST)
  return u.reshape(16, *w.shape[2:])


def output_transform(m: jax.Array, x_shape, pads: Pads) -> jax.Array:
  """A^T m A for every tile: [16, batch * th * tw, c_out] -> [batch, ho, wo, c_out]."""
  n, h, w, _ = x_shape
  th, tw = _tiles(x_shape, pads)
  o = m.shape[-1]
  m = m.reshape(4, 4, n, th, tw, o)
  rows = _combine([m[a] for a in range(4)], _AT)  # 2 x [4, n, th, tw, o]
  y = [_combine([row[b] for b in range(4)], _AT) for row in rows]
  y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)
  y = y.reshape(n, 2 * th, 2 * tw, o)
  return y[:, :output_size(h, pads[0]), :output_size(w, pads[1])]


def output_transform_transpose(dy: jax.Array, x_shape, pads: Pads) -> jax.Array:
  """The transpose of output_transform: [batch, ho, wo, c_out] -> [16, P, c_out]."""
  n, _, _, _ = x_shape
  th, tw = _tiles(x_shape, pads)
  _, ho, wo, o = dy.shape
  dy = jnp.pad(dy, ((0, 0), (0, 2 * th - ho), (0, 2 * tw - wo), (0, 0)))
  dy = dy.reshape(n, th, 2, tw, 2, o)
  rows = jnp.stack(_combine([dy[:, :, i] for i in range(2)], _AT.T))
  dm = jnp.stack(_combine([rows[..., j, :] for j in range(2)], _AT.T), axis=1)
  return dm.reshape(16, n * th * tw, o)  # rows: [4, n, th, tw, 2, o]


def _products(v, u, precision):
  return jnp.einsum('kpc,kco->kpo', v, u, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv3x3(x, w, pads: Pads, precision):
  v = input_transform(x, pads)
  m = _products(v, filter_transform(w), precision)
  return output_transform(m, x.shape, pads)


def _conv3x3_fwd(x, w, pads, precision):
  v = input_transform(x, pads)
  u = filter_transform(w)
  y = output_transform(_products(v, u, precision), x.shape, pads)
  return y, (v, u)


def _conv3x3_bwd(pads, precision, residuals, dy):
  v, u = residuals
  # x and w are not kept: dy, v and u tell their shapes.
  n, ho, wo, _ = dy.shape
  x_shape = (n, ho + 2 - sum(pads[0]), wo + 2 - sum(pads[1]), v.shape[-1])
  w_shape = (3, 3, *u.shape[1:])
  dm = output_transform_transpose(dy, x_shape, pads)
  dv = jnp.einsum('kpo,kco->kpc', dm, u, precision=precision)
  du = jnp.einsum('kpc,kpo->kco', v, dm, precision=precision)
  dx = input_transform_transpose(dv.astype(v.dtype), x_shape, pads)
  (dw,) = jax.linear_transpose(filter_transform,
                               jax.ShapeDtypeStruct(w_shape, u.dtype))(du)
  return dx, dw


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv3x3(x: jax.Array, w: jax.Array, pads: Pads, precision=None
            ) -> jax.Array:
  """3x3 stride-1 NHWC/HWIO convolution with non-negative padding.

  x: [batch, h, w, c_in], w: [3, 3, c_in, c_out]
  -> [batch, h + pad_top + pad_bottom - 2, w + pad_left + pad_right - 2, c_out].
  """
  if tuple(w.shape[:2]) != (3, 3):
    raise ValueError(f'Winograd F(2x2, 3x3) takes a 3x3 kernel, not {w.shape}.')
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _conv3x3(x, w, pads, precision)
