"""FastCNN: shapes, parameter count, test-time flip, BatchNorm state, config."""

import importlib.util
import pathlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from aisci.data import augment
from aisci.models import fastcnn
from aisci.models.fastcnn import FastCNN
from aisci.train import steps

CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'cifar_fast.py'


def images(n=4, size=16, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 3)),
                     jnp.float32)


def small(**kw):
  return FastCNN(num_classes=7, stem_width=8, widths=(8, 16), **kw)


def test_parameter_count_matches_the_architecture():
  stem, widths, classes = 32, (64, 256, 256), 10
  expected = 27 * stem + 2 * stem  # stem conv (no bias) + BatchNorm
  c = stem
  for w in widths:
    expected += 9 * c * w + 9 * w * w + 4 * w  # two convs, two BatchNorms
    c = w
  expected += c * classes  # head, no bias
  shapes = jax.eval_shape(FastCNN(num_classes=classes).init,
                          jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))
  assert count == expected == 1_978_016


def test_max_pool_2x2_matches_flax_values_and_gradient():
  x = images(2, 8)
  pooled = fastcnn.max_pool_2x2(x)
  np.testing.assert_array_equal(pooled, nn.max_pool(x, (2, 2), strides=(2, 2)))
  # Without ties (random floats) the gradients are the same too.
  weights = images(2, 4)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * weights))(x)
  np.testing.assert_array_equal(
      grad(fastcnn.max_pool_2x2),
      grad(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))))


def test_logits_features_and_batch_stats(apply):
  model = small(tta_flip=False)
  x = images()
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  logits = apply(model, variables, x)
  chex.assert_shape(logits, (4, 7))
  chex.assert_type(logits, jnp.float32)
  chex.assert_shape(apply(model.clone(num_classes=0), variables, x), (4, 16))
  _, updates = apply(model, variables, x, train=True, mutable=('batch_stats',))
  # Running mean of the stem BatchNorm moves (1 - momentum) of the way from
  # 0 to the batch mean of the stem convolution's output.
  stem = jax.lax.conv_general_dilated(
      x, variables['params']['stem_conv']['kernel'], (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(
      updates['batch_stats']['stem_bn']['mean'],
      (1 - model.bn_momentum) * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_tta_flip_averages_image_and_mirror_at_evaluation_only(apply):
  plain = small(tta_flip=False)
  tta = small(tta_flip=True)
  x = images()
  variables = steps.init_variables(plain, jax.random.PRNGKey(0), x)
  expected = (apply(plain, variables, x)
              + apply(plain, variables, x[:, :, ::-1])) / 2
  np.testing.assert_allclose(apply(tta, variables, x), expected, rtol=1e-5,
                             atol=1e-6)
  # A mirrored image gets the same TTA prediction.
  np.testing.assert_allclose(apply(tta, variables, x[:, :, ::-1]), expected,
                             rtol=1e-5, atol=1e-6)
  # Training is unchanged by the flag.
  train = lambda m: apply(m, variables, x, train=True,
                          mutable=('batch_stats',))[0]
  np.testing.assert_array_equal(train(tta), train(plain))


@pytest.mark.parametrize('flip', [True, False])
def test_tta_translate_weights_the_shifted_views(flip, apply):
  plain = small(tta_flip=False)
  tta = small(tta_flip=flip, tta_translate=True)
  x = images(size=8)
  variables = steps.init_variables(plain, jax.random.PRNGKey(0), x)
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), 'reflect')
  shifted = [padded[:, :8, :8], padded[:, 2:, 2:]]
  # Shifted by one pixel: row 1 of the up-left view is row 0 of the image.
  np.testing.assert_array_equal(shifted[0][:, 1:, 1:], x[:, :-1, :-1])
  np.testing.assert_array_equal(shifted[1][:, :-1, :-1], x[:, 1:, 1:])

  def view(v):
    logits = apply(plain, variables, v)
    return (logits + apply(plain, variables, v[:, :, ::-1])) / 2 if flip else logits

  expected = view(x) / 2 + view(shifted[0]) / 4 + view(shifted[1]) / 4
  np.testing.assert_allclose(apply(tta, variables, x), expected, rtol=1e-5,
                             atol=1e-6)
  chex.assert_shape(apply(tta.clone(num_classes=0), variables, x), (4, 16))


def test_residual_changes_the_function_not_the_parameters(apply):
  x = images()
  variables = steps.init_variables(small(), jax.random.PRNGKey(0), x)
  residual = small(residual=True)
  chex.assert_trees_all_equal_shapes(
      variables, steps.init_variables(residual, jax.random.PRNGKey(0), x))
  assert not np.allclose(apply(small(), variables, x),
                         apply(residual, variables, x))


@pytest.mark.parametrize('c_in,c_out', [(4, 6), (6, 4)])
def test_identity_init_passes_the_first_channels_through(c_in, c_out):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, c_in)),
                  jnp.float32)
  layer = nn.Conv(c_out, (3, 3), padding='SAME', use_bias=False,
                  kernel_init=fastcnn.identity_init())
  variables = steps.init_variables(layer, jax.random.PRNGKey(0), x)
  y = layer.apply(variables, x)
  n = min(c_in, c_out)
  chex.assert_trees_all_close(y[..., :n], x[..., :n], atol=1e-6)
  # The other filters keep the base initializer's random values.
  rest = variables['params']['kernel'][..., n:]
  assert rest.size == 0 or float(jnp.std(rest)) > 0.05


def test_identity_init_starts_each_group_as_the_identity():
  variables = steps.init_variables(small(identity_init=True),
                                   jax.random.PRNGKey(0), images())
  kernel = variables['params']['group2']['conv2']['kernel']  # [3, 3, 16, 16]
  chex.assert_trees_all_equal(kernel[1, 1], jnp.eye(16))
  assert float(jnp.abs(kernel[0]).max()) == 0.0
  plain = steps.init_variables(small(), jax.random.PRNGKey(0), images())
  chex.assert_trees_all_equal_shapes(variables, plain)


def test_bn_scale_false_fixes_the_scales_at_one():
  x = images()
  with_scale = small(tta_flip=False, bn_scale=True)
  without = small(tta_flip=False, bn_scale=False)
  variables = steps.init_variables(with_scale, jax.random.PRNGKey(0), x)
  fixed = steps.init_variables(without, jax.random.PRNGKey(0), x)
  names = lambda tree: {'/'.join(k.key for k in path) for path, _ in
                        jax.tree_util.tree_flatten_with_path(tree)[0]}
  scales = {n for n in names(variables['params']) if n.endswith('/scale')}
  # stem_bn and two BatchNorms in each of the two groups.
  assert len(scales) == 5
  assert names(fixed['params']) == names(variables['params']) - scales
  # Learned scales at their initial value 1 compute the same function.
  chex.assert_trees_all_close(with_scale.apply(variables, x),
                              without.apply(fixed, x), rtol=1e-5, atol=1e-6)


def test_max_pool_2x2_drops_an_odd_row_and_column_as_torch_does():
  x = images(2, 7)
  pooled = fastcnn.max_pool_2x2(x)
  chex.assert_shape(pooled, (2, 3, 3, 3))
  np.testing.assert_array_equal(
      pooled, nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID'))


def test_unpadded_whitening_stem_gives_airbench_sizes():
  # 32 -> 31 (2x2 conv, no padding) -> 15 -> 7 -> 3: the pools floor.
  model = FastCNN(num_classes=10, stem='whiten', stem_width=24,
                  stem_padding='VALID', widths=(8, 16, 16))
  x = jnp.zeros((1, 32, 32, 3))
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  _, state = model.apply(variables, x, train=True, mutable=['intermediates',
                                                            'batch_stats'],
                         capture_intermediates=True)
  sizes = [state['intermediates'][f'group{i}']['__call__'][0].shape[1]
           for i in (1, 2, 3)]
  assert sizes == [15, 7, 3]
  assert state['intermediates']['stem_conv']['__call__'][0].shape[1] == 31
  with pytest.raises(ValueError, match='too small for the unpadded stem'):
    steps.init_variables(model, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="is for stem='whiten'"):
    steps.init_variables(small(stem_padding='VALID'), jax.random.PRNGKey(0),
                         images())
  with pytest.raises(ValueError, match="stem_padding 'valid'"):
    steps.init_variables(
        FastCNN(num_classes=10, stem='whiten', stem_width=24,
                stem_padding='valid', widths=(8,)),
        jax.random.PRNGKey(0), x)


def test_image_size_must_divide_by_the_pooling():
  with pytest.raises(ValueError, match='not divisible by 4'):
    steps.init_variables(small(), jax.random.PRNGKey(0),
                         jnp.zeros((1, 18, 18, 3)))


@pytest.mark.parametrize('variant', ['default', 'cpu', 'cpu_whiten', 'cpu_airbench',
                                     'cpu_airbench_opt', 'gpu', 'gpu95', 'tiny'])
def test_config_variants_build(variant):
  spec = importlib.util.spec_from_file_location('cifar_fast', CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  model = models.build_model(config.model, num_classes=10)
  assert isinstance(model, FastCNN)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((2, 32, 32, 3)))
  chex.assert_shape(shapes['params']['head']['kernel'],
                    (config.model.widths[-1], 10))
  augment.get_augmentation(config.input.augment)
  if config.input.alternating_flip:  # the loop's own check
    augment.check_alternating_flip(config.input.augment, 'image')
