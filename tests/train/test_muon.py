"""Muon on the hidden matrices, AdamW on the rest (aisci/train/muon.py)."""

import functools

import chex
import jax
import numpy as np
import pytest

from aisci import tasks
from aisci.models import vit
from aisci.train import checkpoint
from aisci.train import muon
from aisci.train import optimizer
from aisci.train import steps
from configs import vit_cifar


@pytest.fixture(scope='module')
def params():
  """A one-block ViT with a conv stem: every kind of parameter muon.py sorts."""
  model = vit.ViT(num_classes=3, variant=None, width=16, depth=1, mlp_dim=32,
                  num_heads=2, patch_size=4, stem='conv', stem_width=8)
  return steps.init_variables(model, jax.random.PRNGKey(0),
                              np.zeros((1, 16, 16, 3), np.float32))['params']


def _by_name(tree):
  return {'/'.join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _muon(learning_rate, weight_decay):
  """muon.muon with optimizer.py's weight-decay mask and AdamW-only rule,
  as make_optimizer builds it."""
  return muon.muon(learning_rate, momentum=0.95, weight_decay=weight_decay,
                   b1=0.9, b2=0.999,
                   weight_decay_mask=optimizer.weight_decay_mask,
                   adamw_only=optimizer.muon_adamw_only)


def test_only_hidden_kernels_are_muon(params):
  labels = _by_name(muon.labels(params, optimizer.muon_adamw_only))
  muon_names = sorted(n for n, label in labels.items() if label == 'muon')
  block = 'Transformer/encoderblock_0/'
  assert muon_names == sorted(
      [block + f'MultiHeadDotProductAttention_1/{p}/kernel'
       for p in ('key', 'out', 'query', 'value')]
      + [block + f'MlpBlock_3/Dense_{i}/kernel' for i in (0, 1)])
  # The stem, the patch embedding and the head stay with AdamW.
  assert labels['head/kernel'] == 'adamw'
  assert labels['embedding/kernel'] == 'adamw'
  assert any(n.startswith('stem_') and labels[n] == 'adamw' for n in labels)


def _as_matrix(name, x):
  if x.ndim == 3 and name.endswith('out/kernel'):
    return x.reshape(-1, x.shape[-1])
  return x.reshape(x.shape[0], -1)


def test_first_update_is_orthogonal_at_adamw_rms(params):
  """Each Muon update, read as the matrix it multiplies with, has nearly
  equal singular values, at an RMS of 0.2 x the learning rate; AdamW's
  first update is -lr x sign(grad), plus decay on kernels only."""
  lr, wd = 0.01, 0.1
  tx = _muon(lr, wd)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(
      lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  labels = _by_name(muon.labels(params, optimizer.muon_adamw_only))
  updates, grads, values = _by_name(updates), _by_name(grads), _by_name(params)
  for name, label in labels.items():
    update = np.asarray(updates[name])
    if label == 'muon':
      # Decay is added before the learning rate: take it out again.
      orthogonal = _as_matrix(name, -update / lr - wd * values[name])
      singular = np.linalg.svd(orthogonal, compute_uv=False)
      # Five Newton-Schulz steps leave singular values near 1 (here
      # 0.7-1.2 x), times sqrt(max(fan_in, fan_out)) * 0.2.
      scale = 0.2 * np.sqrt(max(orthogonal.shape))
      assert 0.6 * scale < singular.min() <= singular.max() < 1.3 * scale, name
    else:
      decay = wd * np.asarray(values[name]) if name.endswith('kernel') else 0
      np.testing.assert_allclose(
          update, -lr * (np.sign(grads[name]) + decay), rtol=1e-4, atol=1e-7,
          err_msg=name)


def test_make_optimizer_builds_muon_and_the_train_step_fits_a_batch():
  config = vit_cifar.get_config('tiny')
  config.optimizer.name = 'muon'
  config.optimizer.momentum = 0.95
  config.total_steps = 10
  config.schedule.warmup_steps = 0
  config.optimizer.learning_rate = 1e-2
  tx, schedule = optimizer.make_optimizer(config)
  model = vit.ViT(num_classes=3, variant=None, width=16, depth=1, mlp_dim=32,
                  num_heads=2, patch_size=4)
  rng = np.random.default_rng(1)
  batch = {'image': rng.standard_normal((8, 16, 16, 3)).astype(np.float32),
           'label': (np.arange(8) % 3).astype(np.int32)}
  # One program, not model.init op by op (slow to compile: steps.py).
  state = jax.jit(lambda key, x: steps.init_state(key, model, tx, x))(
      jax.random.PRNGKey(0), batch['image'])
  step = jax.jit(functools.partial(
      steps.train_step, model=model,
      task=tasks.build_task(config.task, num_classes=3), tx=tx,
      schedule=schedule))
  losses = []
  for _ in range(10):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.8 * losses[0], losses

def test_state_survives_a_checkpoint(params, tmp_path):
  """Muon's state holds optax's masked nodes: orbax saves and restores it
  as the loop does (abstract state, then restore), values unchanged."""
  tx = _muon(0.01, 0.1)
  grads = jax.tree.map(lambda p: np.ones_like(p), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  state = {'params': params, 'opt_state': opt_state}
  saver = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=1)
  saver.save(1, state)
  saver.close()
  abstract = jax.eval_shape(lambda: {'params': params,
                                     'opt_state': tx.init(params)})
  restored = checkpoint.Checkpointer(str(tmp_path), every_steps=1,
                                     keep=1).restore(1, abstract)
  chex.assert_trees_all_equal(restored, state)
