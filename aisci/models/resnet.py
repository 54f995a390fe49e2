"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition").

The v1.5 variant that torchvision and Hugging Face ship: a bottleneck block
downsamples in its 3x3 convolution, not in its first 1x1. Paddings are the
symmetric `kernel // 2` of PyTorch (not 'SAME', which pads a stride-2 conv on
an even input asymmetrically), so `aisci.models.pretrained.load_hf_resnet`
reproduces Hugging Face's `ResNetForImageClassification` to float32 round-off.

BatchNorm statistics live in the `batch_stats` collection:
  logits, updates = model.apply(variables, x, train=True,
                                mutable=['batch_stats'])
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aisci.models import conv

# depth -> (block kind, blocks per stage).
STAGES = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}


def _conv(features, kernel, stride=1, *, dtype, name, **kw):
  """Bias-free conv (a BatchNorm follows) with PyTorch's symmetric padding."""
  pad = kernel // 2
  return conv.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False,
                   dtype=dtype,
                   kernel_init=nn.initializers.variance_scaling(
                       2.0, 'fan_out', 'normal'),
                   name=name, **kw)


class ResidualBlock(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) block.

  Attributes:
    features: channels of the 3x3 convolutions; the block outputs `features`
      (basic) or `4 * features` (bottleneck) channels.
    stride: spatial stride, applied in the (first) 3x3 convolution.
    bottleneck: bottleneck block instead of basic.
    zero_init_last_bn: start the last BatchNorm's scale at zero, so that the
      block starts as the identity (Goyal et al. 2017).
  """
  features: int
  stride: int = 1
  bottleneck: bool = False
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):  # train positional: nn.remat's static arg
    # Under `jax.jit` with the batch sharded over a mesh, the batch means and
    # variances below are reductions over the *global* batch (XLA inserts the
    # cross-device all-reduce), so no `axis_name` is needed; `axis_name` is
    # only for `pmap`/`shard_map`, where each device sees its own shard.
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, dtype=jnp.float32)  # Norms in float32.
    conv = functools.partial(_conv, dtype=self.dtype)
    last_scale_init = (nn.initializers.zeros if self.zero_init_last_bn
                       else nn.initializers.ones)
    if self.bottleneck:
      out_features = 4 * self.features
      y = nn.relu(norm(name='bn1')(conv(self.features, 1, name='conv1')(x)))
      y = nn.relu(norm(name='bn2')(
          conv(self.features, 3, self.stride, name='conv2')(y)))
      y = conv(out_features, 1, name='conv3')(y)
      y = norm(scale_init=last_scale_init, name='bn3')(y)
    else:
      out_features = self.features
      y = nn.relu(norm(name='bn1')(
          conv(self.features, 3, self.stride, name='conv1')(x)))
      y = conv(self.features, 3, name='conv2')(y)
      y = norm(scale_init=last_scale_init, name='bn2')(y)
    if x.shape[-1] != out_features or self.stride != 1:
      # Projection shortcut when the shape changes.
      x = conv(out_features, 1, self.stride, name='proj_conv')(x)
      x = norm(name='proj_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet-{18, 34, 50, 101, 152} classifier.

  Attributes:
    num_classes: size of the Dense head; 0 returns the pooled features
      `[batch, width * 8 (basic) or width * 32 (bottleneck)]`.
    depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
    stem: 'imagenet' (7x7 stride-2 conv, then 3x3 stride-2 max-pool) or
      'cifar' (3x3 stride-1 conv, no max-pool) for small images.
    width: channels of the stem and of the first stage's 3x3 convolutions;
      stage `i` has `width * 2**i`.
    zero_init_last_bn: zero-init the scale of each block's last BatchNorm.
    remat: recompute each block's activations in the backward pass instead
      of storing them (less memory, about one more forward pass of compute).
    dtype: compute dtype; parameters and BatchNorm stay float32.
  """
  num_classes: int
  depth: int = 50
  stem: str = 'imagenet'
  width: int = 64
  zero_init_last_bn: bool = True
  remat: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    """images: [batch, height, width, channels] -> [batch, num_classes] float32."""
    if self.depth not in STAGES:
      raise ValueError(f'ResNet depth {self.depth} is not one of '
                       f'{sorted(STAGES)}: set config.model.depth.')
    if self.stem not in ('imagenet', 'cifar'):
      raise ValueError("config.model.stem must be 'imagenet' or 'cifar', "
                       f'not {self.stem!r}.')
    kind, blocks = STAGES[self.depth]
    x = images.astype(self.dtype)
    if self.stem == 'imagenet':
      x = _conv(self.width, 7, 2, dtype=self.dtype, name='stem_conv')(x)
    else:
      x = _conv(self.width, 3, 1, dtype=self.dtype, name='stem_conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=jnp.float32, name='stem_bn')(x)
    x = nn.relu(x).astype(self.dtype)
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_cls = (nn.remat(ResidualBlock, static_argnums=(2,)) if self.remat
                 else ResidualBlock)
    for stage, num_blocks in enumerate(blocks):
      for block in range(num_blocks):
        x = block_cls(
            features=self.width * 2**stage,
            stride=2 if stage > 0 and block == 0 else 1,
            bottleneck=kind == 'bottleneck',
            zero_init_last_bn=self.zero_init_last_bn, dtype=self.dtype,
            name=f'stage{stage + 1}_block{block + 1}')(x, train)
        x = x.astype(self.dtype)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # Global average pool.
    if not self.num_classes:
      return x
    # Logits in float32: softmax cross-entropy is unstable in bf16.
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='head')(x)
