"""U-Net (Ronneberger et al. 2015) for 2-D dense prediction.

Same-padded convolutions (the output has the input's height and width, unlike
the paper's valid convolutions), `depth` max-pool downsamplings, skip
concatenations and a 1x1 convolution to per-pixel logits.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aisci.models import conv


class ConvBlock(nn.Module):
  """Two (3x3 same-padded conv -> norm -> ReLU)."""
  features: int
  norm: str = 'batch'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i in range(2):
      x = conv.Conv(self.features, (3, 3), padding='SAME',
                    use_bias=self.norm == 'none', dtype=self.dtype,
                    name=f'conv{i + 1}')(x)
      # Norms in float32 whatever the compute dtype.
      if self.norm == 'batch':
        # Under `jax.jit` with the batch sharded over a mesh these are
        # global-batch statistics; no `axis_name` is needed.
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=1e-5, dtype=jnp.float32,
                         name=f'norm{i + 1}')(x)
      elif self.norm == 'group':
        x = nn.GroupNorm(num_groups=math.gcd(32, self.features),
                         dtype=jnp.float32, name=f'norm{i + 1}')(x)
      x = nn.relu(x).astype(self.dtype)
    return x


class UNet(nn.Module):
  """U-Net segmenter.

  Attributes:
    num_classes: channels of the per-pixel logits; 0 returns the last
      decoder features `[batch, height, width, base_width]`.
    depth: number of 2x downsamplings; height and width must be multiples of
      `2**depth`.
    base_width: channels at full resolution; level `i` has
      `base_width * 2**i`.
    norm: 'batch' (BatchNorm, statistics in `batch_stats`), 'group'
      (GroupNorm with gcd(32, channels) groups) or 'none'.
    upsample: 'transpose' (2x2 stride-2 transposed conv, as in the paper) or
      'resize' (bilinear 2x resize, then a 1x1 conv halving the channels;
      free of checkerboard artefacts).
    tta: test-time augmentation at evaluation (train=False): 'dihedral'
      averages the logits over the 8 flips and 90-degree rotations of each
      (square) image, undone on the outputs; 'none' for a single pass.
    dtype: compute dtype; parameters, norms and logits stay float32.
  """
  num_classes: int
  depth: int = 4
  base_width: int = 64
  norm: str = 'batch'
  upsample: str = 'transpose'
  tta: str = 'none'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    """images: [batch, height, width, channels] -> logits.

    Returns float32 `[batch, height, width, num_classes]`.
    """
    if self.norm not in ('batch', 'group', 'none'):
      raise ValueError("config.model.norm must be 'batch', 'group' or "
                       f"'none', not {self.norm!r}.")
    if self.upsample not in ('transpose', 'resize'):
      raise ValueError("config.model.upsample must be 'transpose' or "
                       f"'resize', not {self.upsample!r}.")
    if self.tta not in ('none', 'dihedral'):
      raise ValueError("config.model.tta must be 'none' or 'dihedral', not "
                       f'{self.tta!r}.')
    # Averaging needs the logits: a backbone (num_classes=0) skips it.
    use_tta = self.tta == 'dihedral' and not train and bool(self.num_classes)
    n, h, w, _ = images.shape
    if use_tta:
      if h != w:
        raise ValueError(f"tta='dihedral' needs square images, got {h}x{w}.")
      # The 8 views go through one pass as one batch (same parameters; in
      # evaluation BatchNorm uses its running statistics, so views do not
      # interact).
      images = jnp.concatenate(
          [_dihedral(images, k, flip) for k in range(4) for flip in (False, True)])
    factor = 2**self.depth
    if h % factor or w % factor:
      ceil = lambda n: -(-n // factor) * factor
      raise ValueError(
          f'UNet input size {h}x{w} is not divisible by 2**depth = {factor} '
          f'(depth={self.depth}): pad or crop the images to a multiple of '
          f'{factor} (e.g. {ceil(h)}x{ceil(w)}), or lower config.model.depth.')
    block = functools.partial(ConvBlock, norm=self.norm, dtype=self.dtype)
    x = images.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = block(self.base_width * 2**level, name=f'down{level}')(x, train=train)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block(self.base_width * 2**self.depth, name='bottom')(x, train=train)
    for level in reversed(range(self.depth)):
      features = self.base_width * 2**level
      if self.upsample == 'transpose':
        x = nn.ConvTranspose(features, (2, 2), strides=(2, 2),
                             dtype=self.dtype, name=f'upconv{level}')(x)
      else:
        n, xh, xw, c = x.shape
        x = jax.image.resize(x, (n, 2 * xh, 2 * xw, c), method='bilinear')
        x = conv.Conv(features, (1, 1), dtype=self.dtype,
                      name=f'upconv{level}')(x)
      x = jnp.concatenate([skips[level], x.astype(self.dtype)], axis=-1)
      x = block(features, name=f'up{level}')(x, train=train)
    if not self.num_classes:
      return x.astype(jnp.float32)
    # Logits in float32: softmax cross-entropy is unstable in bf16.
    logits = conv.Conv(self.num_classes, (1, 1), dtype=jnp.float32,
                       name='logits')(x)
    if use_tta:
      views = jnp.split(logits, 8)
      undone = [_undo_dihedral(v, k, flip) for v, (k, flip) in zip(
          views, [(k, f) for k in range(4) for f in (False, True)])]
      logits = jnp.mean(jnp.stack(undone), axis=0)
    return logits


def _dihedral(x, k, flip):
  """Rotates [batch, h, w, c] by k * 90 degrees, then mirrors if flip."""
  x = jnp.rot90(x, k, axes=(1, 2))
  return x[:, :, ::-1] if flip else x


def _undo_dihedral(x, k, flip):
  x = x[:, :, ::-1] if flip else x
  return jnp.rot90(x, -k, axes=(1, 2))
