"""A small fast CNN for CIFAR-sized images, after the CIFAR-10 speed-run
networks (Page's ResNet-9, 2018; Jordan's airbench, 2024).

  stem:   3x3 conv (stem_width) -> BatchNorm -> GELU, or with
          stem='whiten' airbench's 2x2 conv with bias -> GELU, its kernel
          set from the data by aisci/train/whiten.py and frozen
  groups: per width w: 3x3 conv -> 2x2 max-pool -> BN -> GELU
                       -> 3x3 conv -> BN -> GELU  (+ input, if residual)
  head:   global max-pool -> Dense (no bias) -> * head_scale

Few, wide layers at low resolution: most compute runs at 16x16 and below,
which is what a CPU (or a GPU at large batch) does efficiently. Evaluation
can average the logits of each image and its mirror image (`tta_flip`), a
free ~0.5-point gain for a classifier trained with random flips.
BatchNorm statistics live in `batch_stats`, as in resnet.py.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from aisci.models import conv
from aisci.models import ghost_batch_norm
from aisci.models import tta


def max_pool_2x2(x):
  """[batch, h, w, c] -> [batch, h // 2, w // 2, c], max of each 2x2 block
  (an odd last row or column is dropped, as PyTorch's MaxPool2d(2) does).

  The same values as nn.max_pool(x, (2, 2), strides=(2, 2)), but a reshape
  and a reduction: its gradient is elementwise, while nn.max_pool's is a
  select-and-scatter that XLA:CPU expands into iota + scatter (measured:
  the step of a small FastCNN took ~15 % more CPU time with nn.max_pool).
  At exact ties the gradient is shared between the maxima instead of going
  to one of them.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def batch_norm(groups: int, **kwargs) -> nn.Module:
  """nn.BatchNorm(**kwargs), or with groups > 1 its ghost-batch form
  (ghost_batch_norm.py: statistics per slice of the batch)."""
  if groups == 1:
    return nn.BatchNorm(**kwargs)
  return ghost_batch_norm.GhostBatchNorm(groups=groups, **kwargs)


def identity_init(base=nn.linear.default_kernel_init):
  """A conv kernel initializer: `base`, then the first min(c_in, c_out)
  filters replaced by the identity (1 at the centre tap of their own input
  channel, 0 elsewhere).

  airbench's "implicit residual" (torch.nn.init.dirac_ on the first c_in
  filters): each layer starts by passing its input through, so a deep
  plain stack begins as a short one. Kernel shape [kh, kw, c_in, c_out].
  """
  def init(key, shape, dtype=jnp.float32):
    kernel = base(key, shape, dtype)
    kh, kw, c_in, c_out = shape
    n = min(c_in, c_out)
    identity = jnp.zeros((kh, kw, c_in, n), dtype)
    identity = identity.at[kh // 2, kw // 2].set(jnp.eye(c_in, n, dtype=dtype))
    return kernel.at[..., :n].set(identity)
  return init


class ConvGroup(nn.Module):
  """conv -> pool -> BN -> GELU -> conv -> BN -> GELU, halving the resolution.

  [batch, h, w, c] -> [batch, h // 2, w // 2, features].
  """
  features: int
  residual: bool = False
  bn_momentum: float = 0.9
  bn_scale: bool = True
  bn_groups: int = 1
  identity_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kernel_init = (identity_init() if self.identity_init
                   else nn.linear.default_kernel_init)
    conv3x3 = functools.partial(conv.Conv, self.features, (3, 3),
                                padding='SAME', use_bias=False,
                                kernel_init=kernel_init, dtype=self.dtype)
    norm = functools.partial(batch_norm, self.bn_groups,
                             use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5,
                             use_scale=self.bn_scale,
                             dtype=jnp.float32)  # Norms in float32.
    x = conv3x3(name='conv1')(x)
    x = max_pool_2x2(x)
    x = nn.gelu(norm(name='bn1')(x)).astype(self.dtype)
    y = conv3x3(name='conv2')(x)
    y = nn.gelu(norm(name='bn2')(y)).astype(self.dtype)
    return x + y if self.residual else y


class FastCNN(nn.Module):
  """images [batch, h, w, 3] -> logits [batch, num_classes] float32.

  Attributes:
    num_classes: size of the head; 0 returns the pooled features
      [batch, widths[-1]].
    stem: 'conv' (3x3 conv, BN, GELU) or 'whiten' (2x2 conv with bias,
      GELU; config.init.whiten_layer='stem_conv' sets its kernel to the
      whitening transform of the training images' 2x2 patches).
    stem_padding: padding of the 'whiten' stem's 2x2 conv. 'SAME' pads one
      row and column at the far edges (32x32 stays 32x32); 'VALID' is
      airbench's unpadded conv (32 -> 31, so the groups see 31/15/7 pixels
      instead of 32/16/8: 1/1.22 of the multiply-adds; the pools drop the
      odd row and column).
    stem_width: channels of the stem (full resolution); with 'whiten' it
      must be 2 * 2 * 2 * channels (each eigenvector and its negative).
    widths: channels of each ConvGroup; each halves the resolution, so the
      image side must be divisible by 2 ** len(widths).
    residual: add each group's pooled input to its output (ResNet-9 style).
    head_scale: multiplies the logits; < 1 keeps the initial softmax soft
      (airbench uses 1/9).
    bn_momentum: Flax BatchNorm momentum of the running statistics
      (PyTorch's momentum is 1 - this); short runs want a low value.
    bn_scale: learn a BatchNorm scale; False fixes it at 1 (airbench's
      frozen BatchNorm weights: only the biases are trained).
    bn_groups: BatchNorm statistics per this many equal slices of the batch
      (ghost batches, ghost_batch_norm.py); 1: of the whole batch. As many
      as the batch's devices spares an all-reduce per BatchNorm.
    identity_init: start the first min(c_in, c_out) filters of each
      group's 3x3 convs as the identity (`identity_init` above, airbench's).
    tta_flip: at evaluation (train=False), average the logits of the image
      and of its horizontal mirror.
    tta_translate: at evaluation, also the image shifted by one pixel up
      and left and one down and right (reflection-padded), as airbench's
      test-time augmentation: weight 1/2 for the unshifted view, 1/4 for
      each shifted one (each with its mirror if tta_flip): three times the
      forward passes (aisci/models/tta.py).
    dtype: compute dtype; parameters, norms and logits stay float32.
  """
  num_classes: int
  stem: str = 'conv'
  stem_padding: str = 'SAME'
  stem_width: int = 32
  widths: Sequence[int] = (64, 256, 256)
  residual: bool = False
  head_scale: float = 1.0 / 9
  bn_momentum: float = 0.9
  bn_scale: bool = True
  bn_groups: int = 1
  identity_init: bool = False
  tta_flip: bool = True
  tta_translate: bool = False
  dtype: Any = jnp.float32

  def features(self, images, *, train: bool):
    _, h, w, _ = images.shape
    if self.stem_padding not in ('SAME', 'VALID'):
      raise ValueError(f'Unknown config.model.stem_padding '
                       f"{self.stem_padding!r} of fastcnn; known: 'SAME', "
                       "'VALID'.")
    if self.stem_padding == 'VALID' and self.stem != 'whiten':
      raise ValueError("config.model.stem_padding='VALID' is for "
                       "stem='whiten' (airbench's unpadded 2x2 conv); the "
                       f"{self.stem!r} stem is always padded.")
    factor = 2**len(self.widths)
    # Unpadded, the pools floor: only a side too small for them fails.
    if self.stem_padding == 'VALID' and min(h, w) - 1 < factor:
      raise ValueError(
          f'Image size {h}x{w} is too small for the unpadded stem and '
          f'{len(self.widths)} groups (each halves it): change '
          'config.input.image_size or config.model.widths.')
    if self.stem_padding == 'SAME' and (h % factor or w % factor):
      raise ValueError(
          f'Image size {h}x{w} is not divisible by {factor} (FastCNN halves '
          f'it in each of its {len(self.widths)} groups): change '
          'config.input.image_size or config.model.widths.')
    if self.stem == 'conv':
      x = conv.Conv(self.stem_width, (3, 3), padding='SAME', use_bias=False,
                    dtype=self.dtype,
                    name='stem_conv')(images.astype(self.dtype))
      x = batch_norm(self.bn_groups, use_running_average=not train,
                     momentum=self.bn_momentum, epsilon=1e-5,
                     use_scale=self.bn_scale, dtype=jnp.float32,
                     name='stem_bn')(x)
    elif self.stem == 'whiten':
      whitened = 2 * 2 * 2 * images.shape[-1]
      if self.stem_width != whitened:
        raise ValueError(
            f"stem='whiten' has one channel per eigenvector of the 2x2 "
            f'patches and one per its negative: {whitened} for '
            f'{images.shape[-1]}-channel images, not stem_width='
            f'{self.stem_width}; set config.model.stem_width={whitened}.')
      x = conv.Conv(self.stem_width, (2, 2), padding=self.stem_padding,
                    use_bias=True,
                    dtype=self.dtype,
                    name='stem_conv')(images.astype(self.dtype))
    else:
      raise ValueError(f"Unknown config.model.stem {self.stem!r} of fastcnn; "
                       "known: 'conv', 'whiten'.")
    x = nn.gelu(x).astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = ConvGroup(width, residual=self.residual,
                    bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                    bn_groups=self.bn_groups,
                    identity_init=self.identity_init, dtype=self.dtype,
                    name=f'group{i + 1}')(x, train=train)
    return jnp.max(x.astype(jnp.float32), axis=(1, 2))  # Global max-pool.

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    def logits(x, train):
      x = self.features(x, train=train)
      if self.num_classes:
        x = nn.Dense(self.num_classes, use_bias=False, dtype=jnp.float32,
                     name='head')(x) * self.head_scale
      return x

    if (self.tta_flip or self.tta_translate) and not train:
      return tta.apply(functools.partial(logits, train=False), images,
                       flip=self.tta_flip, translate=self.tta_translate)
    return logits(images, train)
