"""Attention kernels a model can be built with (config.model.attention).

'xla': Flax's einsum-softmax-einsum (nn.dot_product_attention), the
  attention weights [batch, heads, q, k] materialised in memory.
'fused': jax.nn.dot_product_attention, which JAX lowers to cuDNN's fused
  (flash) attention on NVIDIA GPUs in bf16/fp16 where cuDNN takes the
  shapes, the weights never written out, and otherwise to the same XLA
  computation as 'xla'. It has no attention dropout. On an H200, ViT-B/16
  (196 tokens) ran 2 % slower with it (benchmarks/README.md).
"""

from typing import Callable

import flax.linen as nn
import jax

NAMES = ('xla', 'fused')


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                    mask: jax.Array | None = None, dropout_rate: float = 0.0,
                    deterministic: bool = True) -> jax.Array:
  """q: [batch, q_len, heads, head_dim], k and v: [batch, kv_len, heads,
  head_dim], mask broadcastable to [batch, heads, q_len, kv_len] (True =
  attend) -> [batch, q_len, heads, head_dim]."""
  if dropout_rate and not deterministic:
    raise ValueError("config.model.attention='fused' has no attention "
                     'dropout: set config.model.attention_dropout=0 or '
                     "attention='xla'.")
  return jax.nn.dot_product_attention(query, key, value, mask=mask)


def attention_fn(name: str) -> Callable[..., jax.Array]:
  """The attention_fn of nn.MultiHeadDotProductAttention for `name`."""
  if name not in NAMES:
    raise ValueError(f'config.model.attention must be one of {NAMES}, not '
                     f'{name!r}.')
  return fused_attention if name == 'fused' else nn.dot_product_attention
