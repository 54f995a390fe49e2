"""Transformer encoder for sequences (Vaswani et al. 2017; BERT, Devlin et al. 2019).

Takes token ids (a table embedding) or float features (a Dense embedding of
the values, for scientific sequences with no tokenizer). With `norm='post'`,
`posemb='learned'`, `type_vocab_size=2`, `pooler=True` and exact GELU it is
BERT, and `aisci.models.pretrained.load_hf_bert` loads Hugging Face
`BertModel` weights into it.

Pooling 'cls' takes the first position: for token ids the tokenizer puts
[CLS] there, as BERT's does; for float inputs a learned class token `cls` is
prepended (and is in the mask).

Layout of the two norms:
  'post' (BERT): LayerNorm on the embeddings; x = LN(x + f(x)) in each block;
    no final norm.
  'pre' (GPT-2, ViT): no embedding norm; x = x + f(LN(x)); a final LayerNorm
    `encoder_norm`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# BERT's initialisation for every table and Dense kernel.
_INIT = nn.initializers.truncated_normal(stddev=0.02)


def sinusoidal_posemb(length: int, width: int) -> np.ndarray:
  """[length, width] float32: sin on even channels, cos on odd ones."""
  pos = np.arange(length, dtype=np.float64)[:, None]
  freq = np.exp(-np.log(10_000.0) * np.arange(0, width, 2) / width)
  emb = np.zeros((length, width))
  emb[:, 0::2] = np.sin(pos * freq)
  emb[:, 1::2] = np.cos(pos * freq[:width // 2])
  return emb.astype(np.float32)


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dropout -> Dense."""
  mlp_dim: int
  dropout: float = 0.0
  gelu_approximate: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=_INIT)(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(width, dtype=self.dtype, kernel_init=_INIT)(x)


class EncoderBlock(nn.Module):
  """Self-attention and MLP, each with a residual and a LayerNorm (pre/post)."""
  num_heads: int
  mlp_dim: int
  norm: str = 'pre'
  dropout: float = 0.0
  attention_dropout: float = 0.0
  gelu_approximate: bool = False
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool):  # train positional: for nn.remat
    """x: [batch, length, width]; mask: [batch, 1, 1, length] bool or None."""
    # Norms run in float32 whatever the compute dtype: bf16 variance is lossy.
    ln = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps,
                                   dtype=jnp.float32, name=name)
    attention = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, kernel_init=_INIT,
        dropout_rate=self.attention_dropout, deterministic=not train,
        name='attention')
    mlp = MlpBlock(self.mlp_dim, self.dropout, self.gelu_approximate,
                   self.dtype, name='mlp')
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
    if self.norm == 'pre':
      y = ln('attention_norm')(x)
      x = x + drop(attention(y, y, mask=mask))
      return x + drop(mlp(ln('mlp_norm')(x), train=train))
    x = ln('attention_norm')(x + drop(attention(x, x, mask=mask)))
    return ln('mlp_norm')(x + drop(mlp(x, train=train)))


class TransformerEncoder(nn.Module):
  """Sequence encoder and classifier.

  The defaults are BERT-base sizes with pre-norm, no segments and no pooler;
  set `norm='post'`, `type_vocab_size=2`, `pooler=True`,
  `layer_norm_eps=1e-12` (and dropouts 0.1) for BERT itself. The head is
  zero-initialised.

  Attributes:
    num_classes: output size of the Dense head `head`; 0 returns the
      representation (pooled `[batch, width]`, or `[batch, length, width]`
      with `pool='none'`).
    vocab_size: size of the token table; unused (no table) for float inputs.
    pad_id: token id of padding; when set (and no mask is given) positions
      holding it are masked out. The text sources set it.
    patch_size: float inputs only: embed non-overlapping windows of this
      many positions as one token (a 1-D patch embedding, as ViT does for
      images), so each token sees a local shape of the signal; sequences
      are zero-padded to a multiple. 1 embeds every value on its own.
    max_len: longest sequence; size of the learned position table.
    width, depth, num_heads, mlp_dim: transformer sizes.
    type_vocab_size: size of BERT's segment (token type) table; 0 for none.
    posemb: 'learned' (a `[max_len, width]` table) or 'sinusoidal' (fixed).
    norm: 'post' (BERT) or 'pre'; see the module docstring.
    pool: 'cls' (first token, e.g. BERT's [CLS]), 'mean' (over real tokens
      only) or 'none' (per-token outputs `[batch, length, num_classes]`).
    pooler: BERT's Dense + tanh on the pooled vector (needs pool != 'none').
    dropout: on embeddings, attention output and MLP (BERT: 0.1).
    attention_dropout: on attention probabilities (BERT: 0.1).
    gelu_approximate: tanh GELU; BERT and PyTorch use the exact erf form.
    layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
    remat: recompute each block's activations in the backward pass instead
      of storing them (less memory, about one more forward pass of compute).
    dtype: compute dtype; parameters, norms and logits stay float32.
  """
  num_classes: int
  vocab_size: int = 30_522
  pad_id: Optional[int] = None
  patch_size: int = 1
  max_len: int = 512
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  type_vocab_size: int = 0
  posemb: str = 'learned'
  norm: str = 'pre'
  pool: str = 'cls'
  pooler: bool = False
  dropout: float = 0.0
  attention_dropout: float = 0.0
  gelu_approximate: bool = False
  layer_norm_eps: float = 1e-6
  remat: bool = False
  dtype: Any = jnp.float32

  def _check_fields(self):
    for field, allowed in (('posemb', ('learned', 'sinusoidal')),
                           ('norm', ('pre', 'post')),
                           ('pool', ('cls', 'mean', 'none'))):
      if getattr(self, field) not in allowed:
        raise ValueError(f'config.model.{field} must be one of {allowed}, '
                         f'not {getattr(self, field)!r}.')
    if self.pooler and self.pool == 'none':
      raise ValueError("config.model.pooler needs a pooled vector: set "
                       "config.model.pool to 'cls' or 'mean', or pooler=False.")

  @nn.compact
  def __call__(self, inputs, *, mask: Optional[jnp.ndarray] = None,
               token_types: Optional[jnp.ndarray] = None, train: bool = False):
    """Encodes a batch of sequences.

    Args:
      inputs: token ids `[batch, length]` int32, or float features
        `[batch, length, features]` (embedded by a Dense layer; with
        `pool='cls'` a learned class token goes first, so length + 1 must
        fit `max_len`).
      mask: `[batch, length]` bool, True at real tokens, False at padding.
        Padding is never attended to and is left out of mean pooling.
        None: every position is real.
      token_types: `[batch, length]` int32 segment ids (BERT's
        token_type_ids); None gives all zeros. Needs `type_vocab_size > 0`.
      train: enables dropout.

    Returns:
      float32 `[batch, num_classes]`, or `[batch, length, num_classes]` with
      `pool='none'`; `num_classes=0` gives `width` features instead.
    """
    self._check_fields()
    is_float = jnp.issubdtype(inputs.dtype, jnp.floating)
    if is_float:
      if inputs.ndim != 3:
        raise ValueError('Float inputs must be [batch, length, features], '
                         f'got shape {inputs.shape}.')
      if self.patch_size > 1:
        n, length, features = inputs.shape
        pad = -length % self.patch_size
        inputs = jnp.pad(inputs, ((0, 0), (0, pad), (0, 0)))
        inputs = inputs.reshape(n, -1, self.patch_size * features)
        if mask is not None:
          mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(
              n, -1, self.patch_size).any(axis=-1)
      x = nn.Dense(self.width, kernel_init=_INIT, dtype=self.dtype,
                   name='input_embed')(inputs.astype(self.dtype))
    else:
      if inputs.ndim != 2:
        raise ValueError('Token inputs must be [batch, length] int, '
                         f'got shape {inputs.shape}.')
      x = nn.Embed(self.vocab_size, self.width, embedding_init=_INIT,
                   name='token_embed')(inputs)
    x = x.astype(jnp.float32)
    if mask is None and self.pad_id is not None and not is_float:
      mask = inputs != self.pad_id
    if mask is not None:
      mask = jnp.asarray(mask, bool)
    if self.pool == 'cls' and is_float:
      cls = self.param('cls', nn.initializers.zeros, (1, 1, self.width),
                       jnp.float32)
      x = jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)
      if mask is not None:
        mask = jnp.pad(mask, ((0, 0), (1, 0)), constant_values=True)
      if token_types is not None:
        token_types = jnp.pad(token_types, ((0, 0), (1, 0)))
    n, length = x.shape[:2]
    if length > self.max_len:
      raise ValueError(f'Sequence length {length} exceeds config.model.max_len'
                       f' = {self.max_len}: raise it or crop the sequences.')
    if self.posemb == 'learned':
      x = x + self.param('pos_embedding', _INIT, (self.max_len, self.width),
                         jnp.float32)[:length]
    else:
      x = x + sinusoidal_posemb(length, self.width)
    if self.type_vocab_size:
      if token_types is None:
        token_types = jnp.zeros((n, length), jnp.int32)
      x = x + nn.Embed(self.type_vocab_size, self.width, embedding_init=_INIT,
                       name='type_embed')(token_types)
    elif token_types is not None:
      raise ValueError('token_types given but config.model.type_vocab_size '
                       'is 0: set it to the number of segment types.')
    if self.norm == 'post':
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=jnp.float32,
                       name='embed_norm')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)

    if mask is not None:
      # Keys only: every query (padded ones too) attends to the real tokens.
      attention_mask = mask[:, None, None, :]
    else:
      attention_mask = None
    block_cls = (nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat
                 else EncoderBlock)
    for i in range(self.depth):
      x = block_cls(
          num_heads=self.num_heads, mlp_dim=self.mlp_dim, norm=self.norm,
          dropout=self.dropout, attention_dropout=self.attention_dropout,
          gelu_approximate=self.gelu_approximate,
          layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
          name=f'encoderblock_{i}')(x, attention_mask, train)
    if self.norm == 'pre':
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=jnp.float32,
                       name='encoder_norm')(x)
    x = x.astype(jnp.float32)

    if self.pool == 'cls':
      x = x[:, 0]
    elif self.pool == 'mean':
      if mask is None:
        x = x.mean(axis=1)
      else:
        weights = mask[..., None].astype(jnp.float32)
        x = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
    if self.pooler:
      x = jnp.tanh(nn.Dense(self.width, kernel_init=_INIT, dtype=jnp.float32,
                            name='pooler')(x))
    if not self.num_classes:
      return x
    # Logits in float32: softmax cross-entropy is unstable in bf16.
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                    dtype=jnp.float32, name='head')(x)
