"""Tests for aisci/models/transformer.py."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import build_model
from aisci.models.transformer import TransformerEncoder
from aisci.models.transformer import sinusoidal_posemb
from aisci.train import steps

SMALL = dict(vocab_size=50, max_len=16, width=32, depth=2, num_heads=4,
             mlp_dim=64)


def key(seed: int = 0):
  # 'rbg' keys: threefry's XLA compile time (about a second per parameter
  # shape on CPU) would dominate these small tests.
  return jax.random.key(seed, impl='rbg')


def tokens(shape, seed: int = 1):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 50, shape),
                     jnp.int32)


def count_params(variables) -> int:
  return sum(int(np.prod(x.shape))
             for x in jax.tree.leaves(variables['params']))


def test_bert_base_param_count():
  model = build_model(dict(
      name='transformer', vocab_size=30_522, max_len=512, width=768, depth=12,
      num_heads=12, mlp_dim=3072, type_vocab_size=2, posemb='learned',
      norm='post', pool='cls', pooler=True), num_classes=0)
  variables = jax.eval_shape(model.init, key(), jnp.zeros((1, 8), jnp.int32))
  assert count_params(variables) == 109_482_240
  params = variables['params']
  assert 'embed_norm' in params and 'encoder_norm' not in params


@pytest.mark.parametrize('pool,num_classes,shape', [
    ('cls', 3, (2, 3)), ('mean', 3, (2, 3)), ('none', 3, (2, 10, 3)),
    ('cls', 0, (2, 32)), ('none', 0, (2, 10, 32)),
])
@pytest.mark.parametrize('float_input', [False, True])
def test_output_shapes(pool, num_classes, shape, float_input):
  model = TransformerEncoder(num_classes, pool=pool, **SMALL)
  inputs = (jnp.zeros((2, 10, 5)) if float_input
            else jnp.zeros((2, 10), jnp.int32))
  variables = jax.eval_shape(model.init, key(), inputs)
  params = variables['params']
  assert ('input_embed' in params) == float_input
  assert ('token_embed' in params) != float_input
  # Float inputs have no tokenizer to put a [CLS] first: a learned one.
  assert ('cls' in params) == (float_input and pool == 'cls')
  out = jax.eval_shape(model.apply, variables, inputs)
  chex.assert_shape(out, shape)
  assert out.dtype == jnp.float32


def test_sinusoidal_posemb_has_no_params_and_is_bounded():
  model = TransformerEncoder(3, posemb='sinusoidal', **SMALL)
  variables = jax.eval_shape(model.init, key(), jnp.zeros((1, 4), jnp.int32))
  assert 'pos_embedding' not in variables['params']
  emb = sinusoidal_posemb(16, 32)
  chex.assert_shape(emb, (16, 32))
  np.testing.assert_allclose(emb[0, 0::2], 0.0)  # sin(0)
  np.testing.assert_allclose(emb[0, 1::2], 1.0)  # cos(0)
  assert np.abs(emb).max() <= 1.0


@pytest.mark.parametrize('norm,pool,float_input', [
    ('post', 'mean', False), ('pre', 'cls', False), ('pre', 'mean', True),
    ('post', 'cls', True),
])
def test_padding_mask_is_honoured(norm, pool, float_input):
  model = TransformerEncoder(0, norm=norm, pool=pool, type_vocab_size=2,
                             **SMALL)
  if float_input:
    rng = np.random.default_rng(1)
    inputs = jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.float32)
    other = inputs.at[:, 6:].set(jnp.asarray(rng.normal(size=(2, 4, 3))))
  else:
    inputs = tokens((2, 10))
    other = inputs.at[:, 6:].set(tokens((2, 4), seed=2))
  mask = jnp.arange(10)[None] < 6
  mask = jnp.broadcast_to(mask, (2, 10))
  variables = steps.init_variables(model, key(), inputs)
  apply = jax.jit(model.apply)
  pooled = apply(variables, inputs, mask=mask)
  chex.assert_shape(pooled, (2, 32))
  np.testing.assert_allclose(apply(variables, other, mask=mask), pooled,
                             atol=1e-5)
  # The same change without the mask does move the output: the test can fail.
  assert not np.allclose(apply(variables, other), apply(variables, inputs),
                         atol=1e-3)
  # A mask of all True is the same as no mask.
  np.testing.assert_allclose(
      apply(variables, inputs, mask=jnp.ones((2, 10), bool)),
      apply(variables, inputs), atol=1e-5)


def test_token_types_change_the_output():
  model = TransformerEncoder(0, type_vocab_size=2, **SMALL)
  inputs = tokens((1, 6))
  variables = steps.init_variables(model, key(), inputs)
  apply = jax.jit(functools.partial(model.apply))
  zeros = apply(variables, inputs, token_types=jnp.zeros((1, 6), jnp.int32))
  np.testing.assert_allclose(apply(variables, inputs), zeros, atol=1e-6)
  ones = apply(variables, inputs, token_types=jnp.ones((1, 6), jnp.int32))
  assert not np.allclose(ones, zeros, atol=1e-4)


def test_dropout_only_in_train_mode(apply):
  model = TransformerEncoder(0, dropout=0.5, **SMALL)
  inputs = tokens((2, 6))
  variables = steps.init_variables(model, key(), inputs)
  eval_out = apply(model, variables, inputs)
  np.testing.assert_array_equal(apply(model, variables, inputs), eval_out)
  train_out = apply(model, variables, inputs, train=True,
                    rngs={'dropout': key(3)})
  assert not np.allclose(train_out, eval_out, atol=1e-4)


@pytest.mark.parametrize('norm', ['pre', 'post'])
def test_bf16_compute_gives_float32_logits_close_to_float32(norm):
  model = TransformerEncoder(0, norm=norm, pool='mean', **SMALL)
  inputs = tokens((2, 10))
  variables = steps.init_variables(model, key(), inputs)
  out = jax.jit(model.apply)(variables, inputs)
  bf16 = TransformerEncoder(0, norm=norm, pool='mean', dtype=jnp.bfloat16,
                            **SMALL)
  out_bf16 = jax.jit(bf16.apply)(variables, inputs)
  assert out_bf16.dtype == jnp.float32
  chex.assert_trees_all_equal_dtypes(
      jax.eval_shape(bf16.init, key(), inputs), variables)
  scale = float(jnp.abs(out).max())
  np.testing.assert_allclose(out_bf16, out, atol=0.05 * scale)
  assert not np.array_equal(out_bf16, out)


def test_bad_inputs_raise():
  model = TransformerEncoder(3, **SMALL)
  init = lambda m, x, **kw: jax.eval_shape(
      functools.partial(m.init, **kw), key(), x)
  with pytest.raises(ValueError, match='max_len'):
    init(model, jnp.zeros((1, 17), jnp.int32))
  with pytest.raises(ValueError, match='type_vocab_size'):
    init(model, jnp.zeros((1, 4), jnp.int32),
         token_types=jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match='pooler'):
    init(TransformerEncoder(3, pool='none', pooler=True, **SMALL),
         jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match='norm'):
    init(TransformerEncoder(3, norm='sandwich', **SMALL),
         jnp.zeros((1, 4), jnp.int32))
