"""3x3 stride-1 convolutions as Winograd's minimal filtering F(m x m, 3x3).

Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks":
each m x m tile of a 3x3 convolution's output is A^T [(G w G^T) * (B^T d B)] A
for the (m + 2) x (m + 2) input tile d under it. Over all tiles and
channels that is (m + 2)^2 matrix products [tiles, c_in] @ [c_in, c_out]:
F(2x2, 3x3) multiplies 16 times per 4 outputs instead of 36 (2.25x fewer),
F(4x4, 3x3) 36 times per 16 outputs (4x fewer). The rest is linear
transforms of the input, filter and output, which cost memory traffic, not
multiplies; per output, F(4x4) moves about half as much as F(2x2).

Why: on CPU, XLA's direct convolution (Eigen) runs the CIFAR networks' 3x3
layers at about half the speed of its matrix products, so fewer multiplies
at matrix-product speed more than pay for the transforms where the layer
has enough channels and tiles (`aisci/models/conv.py` decides;
`python -m benchmarks.conv_grad` measures). The backward pass is written
out (custom VJP): autodiff's transposes of the transforms measured 2.5-4x
slower than the transforms themselves.

Float32 error, relative to the output's scale: F(2x2) about 1e-6, as the
direct convolution; F(4x4) about 1e-5, its larger transform coefficients
(up to 8 and 1/24) rounding more (tests/models/test_winograd.py).
"""

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# B^T [m + 2, m + 2], G [m + 2, 3], A^T [m, m + 2] of F(m x m, 3x3)
# (Lavin & Gray, eq. 7 for m = 2; interpolation points 0, +-1, +-2 for 4).
MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])),
}

Pads = tuple[tuple[int, int], tuple[int, int]]


def _combine(terms: Sequence[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
  """[sum_r matrix[a, r] * terms[r] for each row a], skipping zeros and
  unit factors; XLA fuses each stage into one loop."""
  out = []
  for row in matrix:
    total = None
    for coefficient, term in zip(row, terms):
      if coefficient == 0:
        continue
      if abs(coefficient) != 1:
        term = term * jnp.asarray(abs(coefficient), term.dtype)
      if total is None:
        total = term if coefficient > 0 else -term
      else:
        total = total + term if coefficient > 0 else total - term
    out.append(total)
  return out


def output_size(size: int, pad: tuple[int, int]) -> int:
  return size + pad[0] + pad[1] - 2


def _tiles(shape, pads: Pads, m: int) -> tuple[int, int]:
  """Number of m x m output tiles along height and width (rounded up)."""
  _, h, w, _ = shape
  return (-(-output_size(h, pads[0]) // m), -(-output_size(w, pads[1]) // m))


def _strided(x: jax.Array, m: int, t: int, axis: int) -> list[jax.Array]:
  """[x[m * i + r] for i < t] along `axis`, for each r < m + 2."""
  return [lax.slice_in_dim(x, r, r + m * (t - 1) + 1, m, axis=axis)
          for r in range(m + 2)]


def _overlap_add(parts: Sequence[jax.Array], m: int, axis: int) -> jax.Array:
  """The transpose of _strided: parts[r] holds element r of each of t tiles
  (stride m) along `axis`; returns the m * t + 2 entries they cover, each
  the sum of the tiles' elements over it."""
  def shifted(a, blocks_before):  # t entries -> t + 1 blocks
    widths = [(0, 0)] * a.ndim
    widths[axis] = (blocks_before, 1 - blocks_before)
    return jnp.pad(a, widths)
  offsets = []
  for q in range(m):
    terms = [shifted(parts[r], r // m) for r in range(q, m + 2, m)]
    offsets.append(functools.reduce(jnp.add, terms))
  out = jnp.stack(offsets, axis=axis + 1)  # [..., t + 1, m, ...]
  out = out.reshape(out.shape[:axis] + (-1,) + out.shape[axis + 2:])
  return lax.slice_in_dim(out, 0, out.shape[axis] - m + 2, axis=axis)


def input_transform(x: jax.Array, pads: Pads, m: int = 2) -> jax.Array:
  """B^T d B of every (m + 2) x (m + 2) input tile d (stride m).

  x: [batch, h, w, c] -> [(m + 2)^2, batch * tiles_h * tiles_w, c].
  """
  bt = MATRICES[m][0]
  n, h, w, c = x.shape
  th, tw = _tiles(x.shape, pads, m)
  # Pad to m * tiles + 2 rows and columns: the tiles of an output size
  # that m does not divide read zeros past the image.
  xp = jnp.pad(x, ((0, 0), (pads[0][0], m * th + 2 - h - pads[0][0]),
                   (pads[1][0], m * tw + 2 - w - pads[1][0]), (0, 0)))
  # Rows, then columns; each stage one stacked array (a single XLA loop),
  # which measured faster than all tiles' elements stacked at the end.
  rows = jnp.stack(_combine(_strided(xp, m, th, axis=1), bt))
  v = jnp.stack(_combine(_strided(rows, m, tw, axis=3), bt), axis=1)
  return v.reshape((m + 2)**2, n * th * tw, c)  # v: [a, a, n, th, tw, c]


def input_transform_transpose(dv: jax.Array, x_shape, pads: Pads,
                              m: int = 2) -> jax.Array:
  """The transpose of input_transform: [(m + 2)^2, P, c] -> [batch, h, w, c]."""
  bt = MATRICES[m][0]
  a = m + 2
  n, h, w, c = x_shape
  th, tw = _tiles(x_shape, pads, m)
  dv = dv.reshape(a, a, n, th, tw, c)
  e = _combine([dv[:, b] for b in range(a)], bt.T)  # a x [a, n, th, tw, c]
  rows = _overlap_add(e, m, axis=3)  # [a, n, th, m * tw + 2, c]
  d = _combine([rows[r] for r in range(a)], bt.T)
  dxp = _overlap_add(d, m, axis=1)  # [n, m * th + 2, m * tw + 2, c]
  return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


def filter_transform(w: jax.Array, m: int = 2) -> jax.Array:
  """G w G^T: [3, 3, c_in, c_out] -> [(m + 2)^2, c_in, c_out].

  Elementwise like the other transforms: as an einsum, XLA made it a
  product with 3-long contractions, 20x slower (30 ms for 512 channels).
  """
  g = MATRICES[m][1]
  rows = jnp.stack(_combine([w[r] for r in range(3)], g))  # [a, 3, c, o]
  u = jnp.stack(_combine([rows[:, s] for s in range(3)], g), axis=1)
  return u.reshape(-1, *w.shape[2:])


def filter_transform_transpose(du: jax.Array, m: int = 2) -> jax.Array:
  """The transpose of filter_transform: [(m + 2)^2, c_in, c_out] -> [3, 3, c_in, c_out]."""
  g = MATRICES[m][1]
  a = m + 2
  du = du.reshape(a, a, *du.shape[1:])
  cols = jnp.stack(_combine([du[:, b] for b in range(a)], g.T), axis=1)
  return jnp.stack(_combine([cols[r] for r in range(a)], g.T))  # cols: [a, 3, c, o]


def output_transform(mm: jax.Array, x_shape, pads: Pads, m: int = 2
                     ) -> jax.Array:
  """A^T M A of every tile: [(m + 2)^2, P, c_out] -> [batch, ho, wo, c_out]."""
  at = MATRICES[m][2]
  a = m + 2
  n, h, w, _ = x_shape
  th, tw = _tiles(x_shape, pads, m)
  o = mm.shape[-1]
  mm = mm.reshape(a, a, n, th, tw, o)
  rows = jnp.stack(_combine([mm[r] for r in range(a)], at))  # [m, a, n, th, tw, o]
  y = jnp.stack(_combine([rows[:, s] for s in range(a)], at), axis=-2)
  # y: [i, n, th, tw, j, o] -> [n, th, i, tw, j, o]
  y = jnp.moveaxis(y, 0, 2).reshape(n, m * th, m * tw, o)
  return y[:, :output_size(h, pads[0]), :output_size(w, pads[1])]


def output_transform_transpose(dy: jax.Array, x_shape, pads: Pads,
                               m: int = 2) -> jax.Array:
  """The transpose of output_transform: [batch, ho, wo, c_out] -> [(m + 2)^2, P, c_out]."""
  at = MATRICES[m][2]
  n, _, _, _ = x_shape
  th, tw = _tiles(x_shape, pads, m)
  _, ho, wo, o = dy.shape
  dy = jnp.pad(dy, ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0)))
  dy = dy.reshape(n, th, m, tw, m, o)
  rows = jnp.stack(_combine([dy[:, :, i] for i in range(m)], at.T))
  dm = jnp.stack(_combine([rows[..., j, :] for j in range(m)], at.T), axis=1)
  return dm.reshape(-1, n * th * tw, o)  # rows: [a, n, th, tw, m, o]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv3x3(x, w, pads: Pads, m: int, precision):
  return _conv3x3_fwd(x, w, pads, m, precision)[0]


def _conv3x3_fwd(x, w, pads, m, precision):
  v = input_transform(x, pads, m)
  u = filter_transform(w, m)
  mm = jnp.einsum('kpc,kco->kpo', v, u, precision=precision)
  return output_transform(mm, x.shape, pads, m), (v, u)


def _conv3x3_bwd(pads, m, precision, residuals, dy):
  v, u = residuals
  # x and w are not kept: dy, v and u tell their shapes.
  n, ho, wo, _ = dy.shape
  x_shape = (n, ho + 2 - sum(pads[0]), wo + 2 - sum(pads[1]), v.shape[-1])
  dm = output_transform_transpose(dy, x_shape, pads, m)
  dv = jnp.einsum('kpo,kco->kpc', dm, u, precision=precision)
  du = jnp.einsum('kpc,kpo->kco', v, dm, precision=precision)
  dx = input_transform_transpose(dv.astype(v.dtype), x_shape, pads, m)
  dw = filter_transform_transpose(du.astype(u.dtype), m)
  return dx, dw


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def conv3x3(x: jax.Array, w: jax.Array, pads: Pads, precision=None,
            tile: int = 2) -> jax.Array:
  """3x3 stride-1 NHWC/HWIO convolution with non-negative padding.

  x: [batch, h, w, c_in], w: [3, 3, c_in, c_out]
  -> [batch, h + pad_top + pad_bottom - 2, w + pad_left + pad_right - 2, c_out].
  tile: m of F(m x m, 3x3), 2 or 4.
  """
  if tuple(w.shape[:2]) != (3, 3):
    raise ValueError(f'Winograd F(m x m, 3x3) takes a 3x3 kernel, not {w.shape}.')
  if tile not in MATRICES:
    raise ValueError(f'Winograd tile {tile} is not one of {sorted(MATRICES)}.')
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _conv3x3(x, w, pads, tile, precision)
