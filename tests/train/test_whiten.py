"""Patch-whitening initialisation (aisci/train/whiten.py): the kernel whitens
patches, the state is rebuilt around it, and a run on real CIFAR-10 images
starts from it and keeps it frozen."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from aisci import models
from aisci.data import augment
from aisci.models.fastcnn import FastCNN
from aisci.train import loop
from aisci.train import optimizer as optimizer_lib
from aisci.train import steps
from aisci.train import whiten
from configs import cifar_fast


def smooth_images(n=32, size=12, seed=0):
  """Random images whose neighbouring pixels and channels are correlated, as
  in photographs, so that whitening has something to undo."""
  noise = np.random.default_rng(seed).normal(size=(n, size + 1, size + 1, 3))
  x = noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1]
  x = x + 0.5 * x.mean(axis=-1, keepdims=True) + 0.3
  return jnp.asarray(x, jnp.float32)


def conv_valid(images, kernel):
  return jax.lax.conv_general_dilated(
      images, kernel, (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def second_moment(outputs):
  flat = outputs.reshape(-1, outputs.shape[-1])
  return flat.T @ flat / flat.shape[0]


def test_patches_are_the_windows_a_convolution_sees():
  x = smooth_images(n=3, size=6)
  kernel = np.random.default_rng(0).normal(size=(2, 2, 3, 5)).astype(
      np.float32)
  np.testing.assert_allclose(
      whiten.patches(x, 2) @ kernel.reshape(12, 5),
      conv_valid(x, kernel).reshape(-1, 5), rtol=1e-5, atol=1e-5)


def test_kernel_outputs_are_white_and_mirrored():
  x = smooth_images()
  raw = second_moment(whiten.patches(x, 2))
  assert np.abs(raw - np.diag(np.diag(raw))).max() > 0.5  # correlated input
  kernel = whiten.whitening_kernel(x, size=2, eps=0.0)
  chex.assert_shape(kernel, (2, 2, 3, 24))
  out = conv_valid(x, kernel)
  np.testing.assert_allclose(second_moment(out[..., :12]), np.eye(12),
                             atol=2e-3)
  np.testing.assert_array_equal(out[..., 12:], -out[..., :12])
  # Channels in order of decreasing eigenvalue: the unscaled projections'
  # variances decrease.
  unscaled = whiten.whitening_kernel(x, size=2, eps=1e6) * 1e3
  variances = np.diag(second_moment(conv_valid(x, unscaled[..., :12])))
  assert np.all(np.diff(variances) < 0), variances


def fresh_state(x):
  config = cifar_fast.get_config('tiny')
  config.model.update(stem='whiten', stem_width=24, widths=(8, 16, 16))
  config.optimizer.freeze = ('stem_conv/kernel',)
  model = models.build_model(config.model, num_classes=10)
  tx, _ = optimizer_lib.make_optimizer(config)
  return steps.initial_state(jax.random.PRNGKey(0), model, tx, x[:1]), tx


def test_whiten_state_sets_the_kernel_and_a_matching_optimizer_state():
  x = smooth_images(size=16)
  state, tx = fresh_state(x)
  new = whiten.whiten_state(state, x, tx, 'stem_conv', eps=5e-4)
  np.testing.assert_allclose(new.params['stem_conv']['kernel'],
                             whiten.whitening_kernel(x, 2, 5e-4),
                             rtol=1e-3, atol=1e-4)
  others = lambda p: {k: v for k, v in p.items() if k != 'stem_conv'}
  chex.assert_trees_all_equal(others(new.params), others(state.params))
  # The lookahead's slow weights start at the whitened kernel too.
  chex.assert_trees_all_close(new.opt_state, tx.init(new.params))
  chex.assert_trees_all_equal_shapes_and_dtypes(new, state)


def test_bad_whitening_configs_name_the_fix():
  x = smooth_images(size=16)
  state, tx = fresh_state(x)
  with pytest.raises(ValueError, match="names no convolution.*'stem_conv'"):
    whiten.whiten_state(state, x, tx, 'stem', eps=5e-4)
  with pytest.raises(ValueError, match='2 \\* k \\* k \\* channels'):
    whiten.whiten_state(state, x, tx, 'head', eps=5e-4)
  with pytest.raises(ValueError, match='config.model.stem_width=24'):
    steps.init_variables(FastCNN(num_classes=10, stem='whiten', stem_width=16),
                         jax.random.PRNGKey(0), x[:1])
  with pytest.raises(ValueError, match="known: 'conv', 'whiten'"):
    steps.init_variables(FastCNN(num_classes=10, stem='patch'),
                         jax.random.PRNGKey(0), x[:1])


def real_train_images(folder, config, count=100):
  """`count` CIFAR-10 training images [n, 32, 32, 3], normalised."""
  files = sorted(tf.io.gfile.glob(os.path.join(folder, 'train', '*', '*')))
  files = files[::len(files) // count][:count]
  return np.stack([augment.normalize(
      tf.io.decode_image(tf.io.read_file(f)), config.input.mean,
      config.input.std).numpy() for f in files])


def test_run_on_real_images_starts_whitened_and_keeps_the_kernel(
    cifar10_small, tmp_path):
  config = cifar_fast.get_config('cpu_whiten')
  config.dataset = f'imagefolder:{cifar10_small}'
  config.model.widths = (16, 32, 32)
  config.input.update(batch_size=64, eval_batch_size=250)
  config.update(total_steps=4, log_every_steps=2, eval_every_steps=100,
                checkpoint_every_steps=2, keep_checkpoints=3)
  config.schedule.warmup_steps = 1
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config, workdir)
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  stems = [manager.restore(step)['params']['stem_conv'] for step in (2, 4)]
  manager.close()
  # Frozen kernel, trained bias.
  np.testing.assert_array_equal(stems[0]['kernel'], stems[1]['kernel'])
  assert not np.allclose(stems[0]['bias'], stems[1]['bias'])
  # Whitened on the first (augmented) batch, it whitens other real images
  # too: small correlations, and variances near 1 where eps is small next
  # to the patch eigenvalue, lambda / (lambda + eps) in general.
  images = jnp.asarray(real_train_images(cifar10_small, config), jnp.float32)
  moment = second_moment(conv_valid(images, stems[1]['kernel'][..., :12]))
  eigenvalues = np.linalg.eigvalsh(second_moment(whiten.patches(images, 2)))
  eigenvalues = eigenvalues[::-1]
  expected = eigenvalues / (eigenvalues + config.init.whiten_eps)
  assert expected.min() < 0.7  # eps matters for the smallest
  assert np.all(np.abs(np.diag(moment) - expected) < 0.35), (
      np.diag(moment), expected)
  assert np.abs(moment - np.diag(np.diag(moment))).max() < 0.3, moment
