"""Patch-whitening initialisation of a first convolution (Jordan's airbench,
2024, after the whitening layer of Page's ResNet-9 speed runs).

A k x k convolution's kernel is set, from training images, to the whitening
transform of their k x k patches: the eigenvectors of the patches' second
moment matrix, each divided by sqrt(eigenvalue + eps), followed by their
negatives so that the GELU after it passes either sign. Its outputs start
decorrelated with unit variance, which a short run would otherwise spend
its first epochs learning; the kernel is then kept frozen
(config.optimizer.freeze) and only its bias trains.

Set by config.init.whiten_layer (a top-level parameter name such as
'stem_conv') on a run's first start from scratch; resumed and fine-tuned
runs keep the kernel they load.
"""

import jax
import jax.numpy as jnp


def patches(images: jax.Array, size: int) -> jax.Array:
  """[n, h, w, c] -> [n * (h - size + 1) * (w - size + 1), size * size * c].

  Each row is one unpadded size x size window, flattened in (row, column,
  channel) order: the order of a Flax conv kernel [size, size, c, out]
  reshaped to [size * size * c, out].
  """
  _, h, w, c = images.shape
  windows = [images[:, i:h - size + 1 + i, j:w - size + 1 + j, :]
             for i in range(size) for j in range(size)]
  return jnp.stack(windows, axis=-2).reshape(-1, size * size * c)


def whitening_kernel(images: jax.Array, size: int, eps: float) -> jax.Array:
  """Training images [n, h, w, c] -> kernel [size, size, c, 2 * size**2 * c].

  Channels are in order of decreasing eigenvalue, then the same negated;
  the second moment is not centred, as in airbench (a bias follows).
  """
  c = images.shape[-1]
  x = patches(images.astype(jnp.float32), size)
  second_moment = x.T @ x / x.shape[0]
  eigenvalues, eigenvectors = jnp.linalg.eigh(second_moment)  # ascending
  scaled = (eigenvectors / jnp.sqrt(eigenvalues + eps))[:, ::-1]
  kernel = jnp.concatenate([scaled, -scaled], axis=1)
  return kernel.reshape(size, size, c, 2 * size * size * c)


def whiten_state(state, images: jax.Array, tx, layer: str, eps: float):
  """A fresh train state with params[layer]['kernel'] set to the whitening
  kernel of `images` [n, h, w, c] (normalised as the model sees them) and
  the optimizer state made anew from those params (lookahead's slow copy
  included); every array keeps its sharding.
  """
  params = state.params
  if layer not in params or 'kernel' not in params[layer]:
    raise ValueError(
        f'config.init.whiten_layer={layer!r} names no convolution of the '
        f'model (top-level parameters: {sorted(params)}); use the first '
        "convolution's name, e.g. 'stem_conv', or '' to turn it off.")
  shape = params[layer]['kernel'].shape
  size, c = shape[0], images.shape[-1]
  if shape != (size, size, c, 2 * size * size * c):
    raise ValueError(
        f'config.init.whiten_layer={layer!r} has a kernel {shape}; whitening '
        'needs a square k x k kernel over the image channels with '
        "2 * k * k * channels outputs (e.g. (2, 2, 3, 24), FastCNN's "
        "stem='whiten').")

  def whiten(state, images):
    old = state.params[layer]['kernel']
    kernel = whitening_kernel(images, size, eps).astype(old.dtype)
    params = {**state.params, layer: {**state.params[layer], 'kernel': kernel}}
    return state.replace(params=params, opt_state=tx.init(params))

  shardings = jax.tree.map(lambda x: x.sharding, state)
  return jax.jit(whiten, out_shardings=shardings)(state, images)
