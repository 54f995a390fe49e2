"""Muon on the hidden matrices, AdamW on the rest (aisci/train/muon.py)."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import optax
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


def _reference_muon(learning_rate, weight_decay):
  """optax.contrib.muon on each matrix by itself, not on stacks; how each
  kernel is read as a matrix written out here by name."""
  dims = optax.contrib.MuonDimensionNumbers

  def dimension_numbers(params):
    def one(path, x):
      if jax.tree_util.keystr(path).endswith("['out']['kernel']"):
        return dims(reduction_axis=(0, 1), output_axis=2)
      if x.ndim == 3:  # query, key, value
        return dims(reduction_axis=0, output_axis=(1, 2))
      return dims(reduction_axis=tuple(range(x.ndim - 1)),
                  output_axis=x.ndim - 1)
    return jax.tree_util.tree_map_with_path(one, params)

  return optax.multi_transform({
      'muon': optax.contrib.muon(
          learning_rate, beta=0.95, nesterov=True, weight_decay=weight_decay,
          consistent_rms=0.2, muon_weight_dimension_numbers=dimension_numbers),
      'adamw': optax.adamw(learning_rate, b1=0.9, b2=0.999,
                           weight_decay=weight_decay,
                           mask=optimizer.weight_decay_mask),
  }, functools.partial(muon.labels, adamw_only=optimizer.muon_adamw_only))


def _conv_and_attention_tree(rng):
  """Every kind of kernel Muon takes, two of one shape, and AdamW's."""
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return {
      'stem_conv': {'kernel': normal(3, 3, 3, 8)},
      'Conv_0': {'kernel': normal(3, 3, 8, 8), 'bias': normal(8)},
      'Conv_1': {'kernel': normal(3, 3, 8, 8)},
      'Dense_0': {'kernel': normal(8, 16)},
      'attention': {'query': {'kernel': normal(16, 2, 4)},
                    'out': {'kernel': normal(2, 4, 16)}},
      'norm': {'scale': normal(16)},
      'head': {'kernel': normal(16, 3), 'bias': normal(3)},
  }


@pytest.mark.parametrize('tree', ['vit', 'conv_and_attention'])
def test_muon_on_stacks_equals_muon_on_each_matrix(params, tree):
  """Stacking same-shaped matrices changes nothing but the speed: three
  steps (momentum included) give optax's per-matrix Muon's updates."""
  rng = np.random.default_rng(2)
  if tree == 'conv_and_attention':
    params = _conv_and_attention_tree(rng)
  tx, reference = _muon(0.01, 0.1), _reference_muon(0.01, 0.1)
  state, reference_state = tx.init(params), reference.init(params)
  for _ in range(3):
    grads = jax.tree.map(
        lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    updates, state = tx.update(grads, state, params)
    expected, reference_state = reference.update(grads, reference_state,
                                                 params)
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-7)


def test_stacks_group_matrices_by_shape_and_unstack_back():
  tree = _conv_and_attention_tree(np.random.default_rng(3))
  matrices = {'Conv_0': {'kernel': tree['Conv_0']['kernel']},
              'Conv_1': tree['Conv_1'], 'Dense_0': tree['Dense_0'],
              'attention': tree['attention']}
  stacks = muon.stack(matrices, optimizer.muon_adamw_only)
  assert {k: v.shape for k, v in stacks.items()} == {
      '72x8': (2, 72, 8), '8x16': (2, 8, 16), '16x8': (1, 16, 8)}
  # In leaf order: Conv_0, Conv_1; Dense_0, then attention/out [2, 4, 16].
  np.testing.assert_array_equal(stacks['72x8'][1],
                                tree['Conv_1']['kernel'].reshape(72, 8))
  np.testing.assert_array_equal(stacks['8x16'][1],
                                tree['attention']['out']['kernel'].reshape(8, 16))
  chex.assert_trees_all_equal(
      muon.unstack(stacks, matrices, optimizer.muon_adamw_only), matrices)
  with pytest.raises(ValueError, match=r"\['head'\]\['kernel'\].*not one of"):
    muon.stack({'head': {'kernel': tree['head']['kernel']}},
               optimizer.muon_adamw_only)


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
  state = steps.initial_state(jax.random.PRNGKey(0), model, tx,
                              batch['image'])
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



# Eight 64x64 matrices on 4 CPU devices: each device should orthogonalise
# two. Prints per-device FLOPs (XLA's cost analysis of the compiled update)
# and the updates, split over the mesh (data, or data x fsdp) and not.
_SPLIT_SCRIPT = textwrap.dedent('''
    import json
    import jax
    jax.config.update('jax_num_cpu_devices', 4)
    import numpy as np
    from aisci.train import muon, optimizer, sharding

    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    params = {f'Dense_{i}': {'kernel': normal(64, 64)} for i in range(8)}
    params['head'] = {'kernel': normal(64, 10), 'bias': normal(10)}
    grads = jax.tree.map(lambda p: normal(*p.shape), params)
    mesh = sharding.make_mesh({'data': -1})
    # As the loop shards a model over data 2 x fsdp 2: parameters, gradients
    # and state split by sharding.param_spec, the stacks over both axes.
    fsdp_mesh = sharding.make_mesh({'data': 2, 'fsdp': 2})
    replicated = lambda tree: sharding.replicated(mesh)
    out = {}
    for name, split_over, place in (('split', mesh, replicated),
                                    ('whole', None, replicated),
                                    ('fsdp', fsdp_mesh,
                                     lambda tree: sharding.tree_sharding(
                                         tree, fsdp_mesh))):
      tx = muon.muon(0.01, momentum=0.95, weight_decay=0.1, b1=0.9, b2=0.999,
                     weight_decay_mask=optimizer.weight_decay_mask,
                     adamw_only=optimizer.muon_adamw_only, mesh=split_over)
      state = tx.init(params)
      update = jax.jit(lambda g, s, p: tx.update(g, s, p)[0],
                       in_shardings=(place(grads), place(state), place(params)),
                       out_shardings=place(params))
      state = jax.device_put(state, place(state))
      compiled = update.lower(grads, state, params).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      updates = compiled(grads, state, params)
      out[name] = {'flops': cost['flops'],
                   'updates': jax.tree.map(lambda u: np.asarray(u).tolist(),
                                           updates)}
    print(json.dumps({'devices': len(jax.devices()), **out}))
''')


def test_data_parallel_devices_share_the_orthogonalisation():
  """On a 4-device data mesh each device runs Newton-Schulz for a quarter
  of the matrices (XLA's per-device FLOPs drop by ~3/4 of it); there and on
  data 2 x fsdp 2 the updates are those of one device doing all of them."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  result = subprocess.run(
      [sys.executable, '-c', _SPLIT_SCRIPT], cwd=repo, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['devices'] == 4
  # Five quintic iterations on a square n x n matrix: three n^3 products.
  newton_schulz = 8 * 5 * 3 * 2 * 64**3
  saved = out['whole']['flops'] - out['split']['flops']
  assert 0.6 * newton_schulz * 3 / 4 < saved < 1.2 * newton_schulz * 3 / 4, (
      out['whole']['flops'], out['split']['flops'], newton_schulz)
  chex.assert_trees_all_close(out['split']['updates'],
                              out['whole']['updates'], rtol=1e-5, atol=1e-7)
  # Under fsdp the state is split by param_spec and the stacks over data x
  # fsdp: the same updates. (Its FLOPs are not asserted: with the state split
  # over fsdp, XLA shares the work even without the stacks' constraint,
  # 22.5 against 16.2 MFLOP per device of 65.6.)
  chex.assert_trees_all_close(out['fsdp']['updates'],
                              out['whole']['updates'], rtol=1e-5, atol=1e-7)
