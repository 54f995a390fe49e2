"""ViT: parameter counts of the published sizes, shapes, dtypes, errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from aisci.data import augment
from aisci.models import vit
from aisci.train import optimizer
from aisci.train import steps
from configs import vit_cifar


def count_params(model, image_size):
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0),
                         jnp.zeros((1, image_size, image_size, 3)), train=False))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


def test_vit_b16_has_published_parameter_count():
  model = models.build_model({'name': 'vit', 'variant': 'B/16'}, num_classes=1000)
  assert count_params(model, 224) == 86_567_656


def test_vit_s16_gap_has_no_class_token():
  token = vit.ViT(num_classes=1000, variant='S/16', pool='token')
  gap = vit.ViT(num_classes=1000, variant='S/16', pool='gap')
  # ViT-S/16 (DeiT-S) is 22,050,664 with a class token; GAP drops 384 + one
  # position embedding of 384.
  assert count_params(token, 224) == 22_050_664
  assert count_params(token, 224) - count_params(gap, 224) == 2 * 384


@pytest.mark.parametrize('pool', ['token', 'gap'])
def test_vit_outputs_logits_and_features(pool, apply):
  model = vit.ViT(num_classes=7, variant=None, width=32, depth=2, mlp_dim=64,
                  num_heads=4, patch_size=4, pool=pool)
  images = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype(
      np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), images)
  logits = apply(model, variables, images)
  chex.assert_shape(logits, (3, 7))
  chex.assert_type(logits, jnp.float32)
  features = apply(model.clone(num_classes=0), variables, images)
  chex.assert_shape(features, (3, 32))


def test_vit_dropout_and_stochastic_depth_use_the_rng(apply):
  model = vit.ViT(num_classes=5, variant=None, width=32, depth=2, mlp_dim=64,
                  num_heads=4, patch_size=4, dropout=0.1, stochastic_depth=0.5,
                  head_zero_init=False)
  images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), images)
  train = lambda seed: apply(model, variables, images, train=True,
                             rngs={'dropout': jax.random.PRNGKey(seed)})
  chex.assert_trees_all_close(train(3), train(3))
  assert not np.allclose(train(3), train(4))
  # Evaluation uses no rng and drops nothing: it computes what the same
  # model without dropout and stochastic depth computes in training mode.
  plain = model.clone(dropout=0.0, stochastic_depth=0.0)
  chex.assert_trees_all_close(
      apply(model, variables, images),
      apply(plain, variables, images, train=True,
            rngs={'dropout': jax.random.PRNGKey(3)}), rtol=1e-6, atol=1e-6)


def test_vit_bfloat16_compute_keeps_float32_params_and_logits(apply):
  kwargs = dict(num_classes=5, variant=None, width=32, depth=2, mlp_dim=64,
                num_heads=4, patch_size=4, head_zero_init=False)
  images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
  f32 = vit.ViT(**kwargs)
  variables = steps.init_variables(f32, jax.random.PRNGKey(0), images)
  bf16 = vit.ViT(**kwargs, dtype=jnp.bfloat16)
  chex.assert_trees_all_equal_dtypes(
      variables, steps.init_variables(bf16, jax.random.PRNGKey(0), images))
  logits = apply(bf16, variables, images)
  chex.assert_type(logits, jnp.float32)
  np.testing.assert_allclose(logits, apply(f32, variables, images), atol=0.1)


def test_remat_gives_the_same_gradients():
  kwargs = dict(num_classes=5, variant=None, width=32, depth=2, mlp_dim=64,
                num_heads=4, patch_size=4, head_zero_init=False)
  images = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  plain, remat = vit.ViT(**kwargs), vit.ViT(**kwargs, remat=True)
  variables = steps.init_variables(plain, jax.random.PRNGKey(0), images)
  # Jitted, as training runs it (and one program compiles faster than its
  # primitives one by one).
  grad = lambda m: jax.jit(jax.grad(lambda v: m.apply(v, images).sum()))(
      variables)
  chex.assert_trees_all_close(grad(plain), grad(remat), atol=1e-6)


def test_patch_size_must_divide_the_image():
  model = vit.ViT(num_classes=2, variant='Ti/16')
  with pytest.raises(ValueError, match='not divisible by the ViT patch size 16'):
    steps.init_variables(model, jax.random.PRNGKey(0),
                         jnp.zeros((1, 40, 40, 3)))


def test_unknown_variant_and_model_name_are_clear_errors():
  with pytest.raises(ValueError, match='SIZE/PATCH'):
    vit.decode_variant('Huge/14')
  with pytest.raises(ValueError, match="Unknown model name 'vitt'.*'vit'"):
    models.build_model({'name': 'vitt'}, num_classes=10)
  with pytest.raises(TypeError, match='Valid fields of ViT'):
    models.build_model({'name': 'vit', 'widht': 3}, num_classes=10)


def test_conv_stem_embeds_patches_with_strided_convs():
  model = vit.ViT(num_classes=10, variant=None, width=32, depth=1, mlp_dim=64,
                  num_heads=2, patch_size=4, pool='gap', stem='conv',
                  stem_width=8, head_zero_init=False)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(
      np.float32)
  variables = steps.init_variables(model, jax.random.PRNGKey(1), images)
  params = variables['params']
  # Two 3x3 stride-2 convs take 32x32 to the 8x8 grid of patch 4.
  chex.assert_shape(params['stem_conv1']['kernel'], (3, 3, 3, 8))
  chex.assert_shape(params['embedding']['kernel'], (3, 3, 8, 32))
  logits, state = jax.jit(functools.partial(
      model.apply, capture_intermediates=True))(variables, images)
  chex.assert_shape(state['intermediates']['embedding']['__call__'][0],
                    (2, 8, 8, 32))
  chex.assert_shape(logits, (2, 10))
  with pytest.raises(ValueError, match='power of 2'):
    steps.init_variables(
        vit.ViT(num_classes=10, variant=None, width=32, depth=1, mlp_dim=64,
                num_heads=2, patch_size=6, stem='conv'),
        jax.random.PRNGKey(0), jnp.zeros((1, 36, 36, 3)))


def test_tta_flip_averages_image_and_mirror_at_evaluation_only(apply):
  kwargs = dict(num_classes=10, variant=None, width=32, depth=1, mlp_dim=64,
                num_heads=2, patch_size=4, head_zero_init=False)
  plain, tta = vit.ViT(**kwargs), vit.ViT(**kwargs, tta_flip=True)
  images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(
      np.float32)
  variables = steps.init_variables(plain, jax.random.PRNGKey(1), images)
  expected = (apply(plain, variables, images)
              + apply(plain, variables, images[:, :, ::-1])) / 2
  chex.assert_trees_all_close(apply(tta, variables, images), expected,
                              atol=1e-5)
  assert not np.allclose(expected, apply(plain, variables, images), atol=1e-4)
  chex.assert_trees_all_close(apply(tta, variables, images, train=True),
                              apply(plain, variables, images, train=True))


def test_tta_translate_averages_shifted_views_with_airbench_weights(apply):
  kwargs = dict(num_classes=10, variant=None, width=32, depth=1, mlp_dim=64,
                num_heads=2, patch_size=4, stem='conv', head_zero_init=False)
  plain = vit.ViT(**kwargs)
  tta = vit.ViT(**kwargs, tta_flip=True, tta_translate=True)
  images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(
      np.float32)
  variables = steps.init_variables(plain, jax.random.PRNGKey(1), images)
  # Shifted copies built independently: numpy's reflection padding, then
  # the up-left and down-right 16x16 windows.
  padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)),
                  'reflect')
  np.testing.assert_array_equal(padded[:, 1:17, 1:17], images)

  def flipped_mean(x):
    return (apply(plain, variables, x)
            + apply(plain, variables, x[:, :, ::-1])) / 2

  expected = (flipped_mean(images) / 2 + flipped_mean(padded[:, :16, :16]) / 4
              + flipped_mean(padded[:, 2:, 2:]) / 4)
  logits = apply(tta, variables, images)
  chex.assert_shape(logits, (3, 10))
  chex.assert_trees_all_close(logits, expected, atol=1e-5)
  # The shifted views change the prediction: not flip TTA under another name.
  assert not np.allclose(logits, flipped_mean(images), atol=1e-4)
  chex.assert_trees_all_close(apply(tta, variables, images, train=True),
                              apply(plain, variables, images, train=True))


@pytest.mark.parametrize('variant', vit_cifar.VARIANTS)
def test_vit_cifar_variants_build_and_fit_the_input_pipeline(variant):
  config = vit_cifar.get_config(variant)
  model = models.build_model(config.model, num_classes=10)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((2, 32, 32, 3)))
  width = model.width or vit.decode_variant(model.variant)['width']
  chex.assert_shape(shapes['params']['head']['kernel'], (width, 10))
  augment.get_augmentation(config.input.augment)
  if config.input.alternating_flip:  # the loop's own check
    augment.check_alternating_flip(config.input.augment, 'image')
  tx, _ = optimizer.make_optimizer(config)
  opt_shapes = jax.eval_shape(tx.init, shapes['params'])
  # AdamW's two moments, Muon's one on its matrices and two on the rest:
  # more optimizer state than parameters either way.
  assert (sum(x.size for x in jax.tree.leaves(opt_shapes))
          > sum(x.size for x in jax.tree.leaves(shapes['params'])))


def test_fused_attention_computes_the_same_function():
  # jax.nn.dot_product_attention (cuDNN's flash attention on GPUs) against
  # Flax's einsum attention, same weights: outputs and gradients.
  x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
  xla = vit.ViT(num_classes=5, variant=None, width=32, depth=1, mlp_dim=64,
                num_heads=2, patch_size=4, head_zero_init=False)
  fused = xla.clone(attention='fused')
  params = steps.init_variables(xla, jax.random.PRNGKey(0), x)
  chex.assert_trees_all_close(jax.jit(fused.apply)(params, x),
                              jax.jit(xla.apply)(params, x),
                              rtol=1e-5, atol=1e-5)
  grad = lambda m: jax.jit(jax.grad(lambda p: (m.apply(p, x)**2).sum()))(params)
  # Gradients of magnitude ~40: float32 summation order shows at 1e-5.
  chex.assert_trees_all_close(grad(fused), grad(xla), rtol=1e-4, atol=1e-4)


def test_fused_attention_refuses_attention_dropout():
  x = jnp.zeros((1, 16, 16, 3))
  model = vit.ViT(num_classes=5, variant=None, width=32, depth=1, mlp_dim=64,
                  num_heads=2, patch_size=4, attention='fused',
                  attention_dropout=0.1)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='attention_dropout=0'):
    jax.eval_shape(lambda p: model.apply(
        p, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)}), params)
  with pytest.raises(ValueError, match="one of \\('xla', 'fused'\\)"):
    jax.eval_shape(vit.ViT(num_classes=5, variant='Ti/16',
                           attention='flash').init, jax.random.PRNGKey(0), x)
