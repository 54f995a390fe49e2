"""Test-time augmentation for classifiers: the logits of an image averaged
with those of its mirror and of copies shifted by one pixel (airbench's
views), in one forward pass over all views.

Views of an image stay next to each other ([batch, views, ...] reshaped to
[batch * views, ...]): a batch sharded over devices stays on its devices
(stacking the views after the batch would gather it onto every device, ~10x
slower on 8 CPU devices), and reshapes, not slices at len(images), keep a
symbolic batch in exports (jax.export, ONNX).
"""

import jax.numpy as jnp


def views(images, *, flip: bool, translate: bool):
  """[batch, h, w, c] -> views [batch, v, h, w, c] and their weights [v].

  translate: add the image shifted by one pixel up and left and one down and
    right (reflection-padded), weighted 1/2 for the original and 1/4 for
    each shifted copy. flip: each view with its mirror, at half its weight.
  """
  stacked, weights = [images], [1.0]
  if translate:
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
    stacked += [padded[:, :h, :w], padded[:, 2:, 2:]]
    weights = [0.5, 0.25, 0.25]
  if flip:
    stacked = [v for view in stacked for v in (view, view[:, :, ::-1])]
    weights = [x / 2 for x in weights for _ in range(2)]
  return jnp.stack(stacked, axis=1), jnp.asarray(weights, jnp.float32)


def apply(fn, images, *, flip: bool, translate: bool):
  """fn ([n, h, w, c] -> [n, ...]) on every view of `images` [batch, h, w, c]
  in one call; returns the weighted mean over views, [batch, ...]."""
  stacked, weights = views(images, flip=flip, translate=translate)
  out = fn(stacked.reshape((-1,) + images.shape[1:]))
  out = out.reshape((images.shape[0], weights.shape[0]) + out.shape[1:])
  return jnp.einsum('bv...,v->b...', out, weights.astype(out.dtype))
