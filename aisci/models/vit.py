"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

Parameter names follow google-research/vision_transformer (`embedding`, `cls`,
`Transformer/posembed_input/pos_embedding`, `encoderblock_{i}`, `head`) so
that its published `.npz` checkpoints map onto this module name by name.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from aisci.models import attention as attention_lib
from aisci.models import conv
from aisci.models import tta

# name -> (width, depth, mlp_dim, num_heads), as in the ViT and DeiT papers.
VARIANTS = {
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
}


def decode_variant(variant: str) -> dict[str, int]:
  """'B/16' -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)."""
  try:
    size, patch = variant.split('/')
    width, depth, mlp_dim, num_heads = VARIANTS[size]
    patch_size = int(patch)
  except (ValueError, KeyError) as e:
    raise ValueError(
        f'ViT variant {variant!r} is not SIZE/PATCH with SIZE in '
        f'{list(VARIANTS)} (e.g. "B/16", "Ti/4").') from e
  return dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads,
              patch_size=patch_size)


class MlpBlock(nn.Module):
  """Transformer MLP: Dense -> GELU -> Dropout -> Dense -> Dropout."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  gelu_approximate: bool = True  # False: exact erf GELU, as PyTorch/HF.

  @nn.compact
  def __call__(self, x, *, train: bool):
    width = x.shape[-1]
    dense = lambda n: nn.Dense(
        n, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6))
    x = nn.gelu(dense(self.mlp_dim)(x), approximate=self.gelu_approximate)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = dense(width)(x)
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class Encoder1DBlock(nn.Module):
  """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)), with drop-path."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  gelu_approximate: bool = True
  attention: str = 'xla'  # aisci/models/attention.py

  @nn.compact
  def __call__(self, x, train: bool):
    # Norms run in float32 whatever the compute dtype: bf16 variance is lossy.
    y = nn.LayerNorm(dtype=jnp.float32, name='LayerNorm_0')(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        dropout_rate=self.attention_dropout, deterministic=not train,
        attention_fn=attention_lib.attention_fn(self.attention),
        name='MultiHeadDotProductAttention_1')(y, y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    # Stochastic depth: one keep/drop decision per example (broadcast over
    # tokens and channels).
    y = nn.Dropout(self.drop_path, broadcast_dims=(1, 2),
                   deterministic=not train)(y)
    x = x + y
    y = nn.LayerNorm(dtype=jnp.float32, name='LayerNorm_2')(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype,
                 self.gelu_approximate, name='MlpBlock_3')(y, train=train)
    y = nn.Dropout(self.drop_path, broadcast_dims=(1, 2),
                   deterministic=not train)(y)
    return x + y


class AddPositionEmbs(nn.Module):
  """Adds a learned position embedding [1, tokens, width] to [batch, tokens, width]."""

  @nn.compact
  def __call__(self, x):
    posemb = self.param('pos_embedding', nn.initializers.normal(stddev=0.02),
                        (1,) + x.shape[1:], jnp.float32)
    return x + posemb.astype(x.dtype)


class Encoder(nn.Module):
  """Learned position embedding, `depth` blocks, final LayerNorm."""
  depth: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  gelu_approximate: bool = True
  attention: str = 'xla'

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = AddPositionEmbs(name='posembed_input')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    # Recompute activations in the backward pass instead of storing them.
    block_cls = (nn.remat(Encoder1DBlock, static_argnums=(2,))
                 if self.remat else Encoder1DBlock)
    for i in range(self.depth):
      x = block_cls(
          num_heads=self.num_heads, mlp_dim=self.mlp_dim,
          dropout=self.dropout, attention_dropout=self.attention_dropout,
          drop_path=self.stochastic_depth * i / max(self.depth - 1, 1),
          dtype=self.dtype, gelu_approximate=self.gelu_approximate,
          attention=self.attention, name=f'encoderblock_{i}')(x, train)
    return nn.LayerNorm(dtype=jnp.float32, name='encoder_norm')(x)


class ViT(nn.Module):
  """ViT classifier.

  Sizes come from `variant` ('Ti/16', 'S/16', 'B/16', 'L/16', any patch size);
  `width`, `depth`, `mlp_dim`, `num_heads`, `patch_size` override it.
  `num_classes=0` returns the pooled representation instead of logits.
  """
  num_classes: int
  variant: Optional[str] = 'Ti/16'
  width: Optional[int] = None
  depth: Optional[int] = None
  mlp_dim: Optional[int] = None
  num_heads: Optional[int] = None
  patch_size: Optional[int] = None
  pool: str = 'token'  # 'token' (class token) or 'gap' (mean of tokens)
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_zero_init: bool = True
  remat: bool = False
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32
  # tanh GELU, flax's default, as the google-research `.npz` checkpoints were
  # trained; False gives the exact erf GELU of Hugging Face / PyTorch models.
  gelu_approximate: bool = True
  # 'patch': one p x p stride-p conv embeds each patch (the paper's). 'conv':
  # log2(p) 3x3 stride-2 convs (LayerNorm, GELU between them) do, as in
  # Xiao et al. 2021 ("Early convolutions help transformers see better"):
  # faster, steadier optimization for a few % more compute.
  stem: str = 'patch'
  stem_width: int = 32  # channels of the conv stem's first conv
  # At evaluation (train=False), average the logits of the image and of its
  # mirror image; with tta_translate, also of copies shifted by one pixel
  # (three times the forward passes; aisci/models/tta.py): +0.8 to +1.1
  # points for vit_cifar.py:tiny_15min (experiments/cifar10.md).
  tta_flip: bool = False
  tta_translate: bool = False
  # 'xla' or 'fused' (cuDNN flash attention on NVIDIA GPUs):
  # aisci/models/attention.py.
  attention: str = 'xla'

  def sizes(self) -> dict[str, int]:
    sizes = decode_variant(self.variant) if self.variant else {}
    for key in ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size'):
      if getattr(self, key) is not None:
        sizes[key] = getattr(self, key)
      if key not in sizes:
        raise ValueError(f'ViT needs {key}: set config.model.{key} or '
                         'config.model.variant.')
    return sizes

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    """images: [batch, height, width, channels] -> logits [batch, num_classes]."""
    s = self.sizes()
    p = s['patch_size']
    _, h, w, _ = images.shape
    if h % p or w % p:
      raise ValueError(
          f'Image size {h}x{w} is not divisible by the ViT patch size {p}: '
          'change config.input.image_size or config.model.patch_size.')
    if self.pool not in ('token', 'gap'):
      raise ValueError(f"config.model.pool must be 'token' or 'gap', "
                       f'not {self.pool!r}.')
    if (self.tta_flip or self.tta_translate) and not train:
      return tta.apply(lambda x: self._encode(x, s, train=False), images,
                       flip=self.tta_flip, translate=self.tta_translate)
    return self._encode(images, s, train=train)

  def _embed(self, images, s):
    """[batch, h, w, c] -> [batch, h / p, w / p, width] patch embeddings."""
    p = s['patch_size']
    x = images.astype(self.dtype)
    if self.stem == 'patch':
      return conv.Conv(s['width'], (p, p), strides=(p, p), padding='VALID',
                       dtype=self.dtype, name='embedding')(x)
    if self.stem != 'conv' or p & (p - 1) or p < 2:
      raise ValueError(f"config.model.stem must be 'patch' or 'conv' (the "
                       f'latter with a patch size that is a power of 2 >= 2); '
                       f'got {self.stem!r} with patch size {p}.')
    steps = p.bit_length() - 1
    for i in range(steps):
      last = i == steps - 1
      x = conv.Conv(s['width'] if last else self.stem_width * 2**i, (3, 3),
                    strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    name='embedding' if last else f'stem_conv{i + 1}')(x)
      if not last:
        x = nn.gelu(nn.LayerNorm(dtype=self.dtype, name=f'stem_norm{i + 1}')(x),
                    approximate=self.gelu_approximate)
    return x

  def _encode(self, images, s, *, train: bool):
    x = self._embed(images, s)
    n, gh, gw, c = x.shape
    x = x.reshape(n, gh * gw, c)
    if self.pool == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), jnp.float32)
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (n, 1, 1)), x], axis=1)
    x = Encoder(
        depth=s['depth'], mlp_dim=s['mlp_dim'], num_heads=s['num_heads'],
        dropout=self.dropout, attention_dropout=self.attention_dropout,
        stochastic_depth=self.stochastic_depth, remat=self.remat,
        dtype=self.dtype, gelu_approximate=self.gelu_approximate,
        attention=self.attention, name='Transformer')(x, train=train)
    x = x[:, 0] if self.pool == 'token' else x.mean(axis=1)
    if not self.num_classes:
      return x
    head_init = (nn.initializers.zeros if self.head_zero_init
                 else nn.initializers.lecun_normal())
    # Logits in float32: softmax cross-entropy is unstable in bf16.
    return nn.Dense(self.num_classes, kernel_init=head_init, dtype=jnp.float32,
                    name='head')(x)
