"""Backbone + named heads: shapes, and equivalence with a built-in head."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from aisci.train import steps

VIT = dict(name='vit', variant=None, width=32, depth=1, mlp_dim=64,
           num_heads=2, patch_size=4, pool='gap')


def test_classification_head_on_a_backbone_equals_the_models_own_head(apply):
  images = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype(
      np.float32)
  plain = models.build_model(dict(VIT, head_zero_init=False), num_classes=10)
  plain_vars = steps.init_variables(plain, jax.random.PRNGKey(0), images)
  multi = models.build_model(dict(name='multi_head', backbone=VIT, heads=dict(
      label=dict(kind='classification', num_outputs=10))), num_classes=10)
  params = dict(plain_vars['params'])
  head = params.pop('head')
  multi_vars = {'params': {'backbone': params, 'label': {'Dense_0': head}}}
  chex.assert_trees_all_equal_shapes(
      multi_vars, steps.init_variables(multi, jax.random.PRNGKey(0), images))
  out = apply(multi, multi_vars, images)
  chex.assert_trees_all_close(out['label'], apply(plain, plain_vars, images),
                              atol=1e-6)


def test_segmentation_and_regression_heads_on_a_unet(apply):
  model = models.build_model(dict(
      name='multi_head', backbone=dict(name='unet', depth=2, base_width=8),
      heads=dict(mask=dict(kind='segmentation', num_outputs=2),
                 area=dict(kind='regression', num_outputs=1))), num_classes=0)
  images = jnp.ones((2, 16, 16, 1))
  variables = steps.init_variables(model, jax.random.PRNGKey(0), images)
  out = apply(model, variables, images)
  chex.assert_shape(out['mask'], (2, 16, 16, 2))
  chex.assert_shape(out['area'], (2, 1))
  chex.assert_type([out['mask'], out['area']], jnp.float32)
  assert 'batch_stats' in variables  # the U-Net's BatchNorm is kept


def test_dense_head_needs_positions():
  model = models.build_model(dict(
      name='multi_head', backbone=VIT,
      heads=dict(mask=dict(kind='segmentation', num_outputs=2))), num_classes=0)
  with pytest.raises(ValueError, match='needs feature maps or tokens'):
    steps.init_variables(model, jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)))
  bad = models.build_model(dict(name='multi_head', backbone=VIT, heads=dict(
      x=dict(kind='ranking', num_outputs=2))), num_classes=0)
  with pytest.raises(ValueError, match="Unknown head kind 'ranking'"):
    steps.init_variables(bad, jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)))
