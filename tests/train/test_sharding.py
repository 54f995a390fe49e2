"""Mesh construction, sharding rules and the table; the step on 8 emulated
CPU devices (fsdp, fsdp x model) against the same step on 1 device."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from aisci.train import sharding

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mesh_sizes_from_config():
  devices = jax.devices()
  mesh = sharding.make_mesh({'data': -1}, devices)
  assert dict(mesh.shape) == {'data': len(devices)}
  # Axes of size 1 (the configs declare fsdp=1, model=1) are left out.
  mesh = sharding.make_mesh({'data': -1, 'fsdp': 1, 'model': 1}, devices)
  assert dict(mesh.shape) == {'data': len(devices)}
  with pytest.raises(ValueError, match="'data' axis"):
    sharding.make_mesh({'model': -1}, devices)
  with pytest.raises(ValueError, match='needs 4 devices'):
    sharding.make_mesh({'data': 4}, devices)
  with pytest.raises(ValueError, match=r"unknown axes \['tensor'\]"):
    sharding.make_mesh({'data': -1, 'tensor': 1}, devices)


class FakeMesh:  # check_batch_size reads only .shape

  def __init__(self, **shape):
    self.shape = shape


def test_batch_not_divisible_by_devices_is_a_clear_error():
  with pytest.raises(ValueError, match='batch_size=12 is not divisible by the 8'):
    sharding.check_batch_size(12, FakeMesh(data=8), 'config.input.batch_size')
  # fsdp splits the batch too: data 2 x fsdp 4 = 8 shards.
  with pytest.raises(ValueError, match=r'the 8 devices of the batch axes '
                     r'\(data x fsdp\).*multiple of 8'):
    sharding.check_batch_size(12, FakeMesh(data=2, fsdp=4), 'batch_size')
  # ... and the micro-batches of gradient accumulation must split again.
  with pytest.raises(ValueError, match='4 micro-batches.*multiple of 32'):
    sharding.check_batch_size(48, FakeMesh(data=8), 'batch_size', 4)
  sharding.check_batch_size(64, FakeMesh(data=8), 'batch_size', 4)
  sharding.check_batch_size(8, FakeMesh(data=2, fsdp=4, model=2), 'batch_size')


def test_a_split_smaller_than_the_eval_batch_gets_a_fitted_batch():
  # ISBI's 5 validation slices on 2 devices: one batch of 6, not 8.
  assert sharding.fitted_eval_batch_size(8, 5, FakeMesh(data=2)) == 6
  assert sharding.fitted_eval_batch_size(8, 5, FakeMesh(data=8)) == 8
  # The model axis does not split the batch; data x fsdp does.
  assert sharding.fitted_eval_batch_size(64, 5, FakeMesh(data=2, model=4)) == 6
  assert sharding.fitted_eval_batch_size(64, 5, FakeMesh(data=2, fsdp=2)) == 8
  # A split of many batches keeps the configured size.
  assert sharding.fitted_eval_batch_size(200, 10_000, FakeMesh(data=8)) == 200
  assert sharding.fitted_eval_batch_size(8, 9, FakeMesh(data=2)) == 8
  for configured in (8, 64):
    for examples in (1, 3, 5, 63):
      for devices in (1, 2, 8):
        batch = sharding.fitted_eval_batch_size(configured, examples,
                                                FakeMesh(data=devices))
        # Divides over the devices, holds the split or is the configured size.
        assert batch % devices == 0 and batch <= configured
        assert batch >= examples or batch == configured
        assert batch - examples < devices or batch == configured


def test_param_spec_rules():
  sizes = {'data': 2, 'fsdp': 4, 'model': 2}
  mlp = 'Transformer/encoderblock_0/MlpBlock_3/'
  attention = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_1/'
  # Megatron MLP: columns of the first Dense, rows of the second; fsdp takes
  # the other dimension.
  assert sharding.param_spec(mlp + 'Dense_0/kernel', (128, 256), sizes) == P('fsdp', 'model')
  assert sharding.param_spec(mlp + 'Dense_1/kernel', (256, 128), sizes) == P('model', 'fsdp')
  assert sharding.param_spec(mlp + 'Dense_0/bias', (256,), sizes) == P('model')
  # Attention by heads; the optimizer state's copy gets the same spec.
  assert sharding.param_spec(attention + 'query/kernel', (128, 4, 32), sizes) == P('fsdp', 'model', None)
  assert sharding.param_spec('0/mu/' + attention + 'out/kernel', (4, 32, 128), sizes) == P('model', None, 'fsdp')
  # 3 heads do not split in 2: replicated on model, fsdp still applies.
  assert sharding.param_spec(attention + 'key/kernel', (192, 3, 64), sizes) == P('fsdp', None, None)
  # fsdp: the largest dimension it divides; none divides -> replicated.
  assert sharding.param_spec('embedding/kernel', (4, 4, 3, 12), sizes) == P(None, None, None, 'fsdp')
  assert sharding.param_spec('head/kernel', (128, 10), sizes) == P('fsdp', None)
  assert sharding.param_spec('head/bias', (10,), sizes) == P(None)
  assert sharding.param_spec('count', (), sizes) == P()
  # Pure data parallel: everything replicated.
  assert sharding.param_spec(mlp + 'Dense_0/kernel', (128, 256), {'data': 8}) == P(None, None)


def test_sharding_table_lists_parameters_and_bytes_per_device(tmp_path):
  from aisci.train.state import TrainState  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh({'data': -1}, jax.devices()[:1])
  abstract = TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32),
      params={'dense': {'kernel': jax.ShapeDtypeStruct((256, 4), jnp.float32)}},
      model_state={}, rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
      opt_state={'mu': {'dense': {'kernel': jax.ShapeDtypeStruct((256, 4), jnp.float32)}}})
  table = sharding.sharding_table(abstract, sharding.state_sharding(abstract, mesh), mesh)
  lines = table.split('\n')
  assert lines[1].split() == ['dense/kernel', '(256,', '4)', 'replicated', '4.0', 'KiB']
  assert lines[-1] == ('per device: parameters 4.0 KiB, optimizer state 4.0 KiB, '
                       'model state 0 B')
  sharding.log_sharding_table(table, str(tmp_path))
  assert (tmp_path / 'sharding.txt').read_text() == table + '\n'


EIGHT_DEVICE_CHECK = textwrap.dedent('''
    import functools
    import chex, jax, jax.numpy as jnp, numpy as np
    from aisci import models, tasks
    from aisci.train import optimizer, sharding, steps
    from configs import vit_cifar

    assert jax.device_count() == 8, jax.devices()
    config = vit_cifar.get_config('tiny')
    config.model.update(width=32, depth=2, mlp_dim=64, num_heads=2,
                        patch_size=8, dropout=0.1)
    config.schedule.warmup_steps = 1
    model = models.build_model(config.model, num_classes=10)
    task = tasks.build_task(config.task, num_classes=10)
    tx, schedule = optimizer.make_optimizer(config)
    rng = np.random.default_rng(0)
    batches = [{'image': rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
                'label': rng.integers(0, 10, 16).astype(np.int32),
                'mask': np.arange(16) < 13} for _ in range(2)]

    def run(mesh_config, devices):
      mesh = sharding.make_mesh(mesh_config, devices)
      init = functools.partial(steps.init_state, model=model, tx=tx,
                               example_input=jnp.zeros((1, 32, 32, 3)))
      abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
      state_sharding = sharding.state_sharding(abstract, mesh)
      batch_sharding = sharding.batch_sharding(mesh)
      # Compiled as the loop compiles it (steps.init_compiler_options).
      state = jax.jit(init, out_shardings=state_sharding).lower(
          jax.random.PRNGKey(0)).compile(
              compiler_options=steps.init_compiler_options('cpu'))(
                  jax.random.PRNGKey(0))
      train = jax.jit(functools.partial(steps.train_step, model=model, task=task,
                                        tx=tx, schedule=schedule),
                      in_shardings=(state_sharding, batch_sharding),
                      out_shardings=(state_sharding, sharding.replicated(mesh)))
      evaluate = jax.jit(functools.partial(steps.eval_step, model=model, task=task),
                         in_shardings=(state_sharding, batch_sharding))
      losses = []
      for batch in batches:
        global_batch = sharding.to_global(batch, batch_sharding)
        assert len(global_batch['image'].sharding.device_set) == len(devices)
        state, metrics = train(state, global_batch)
        losses.append(metrics['loss'])
      kernel = state.params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']['kernel']
      adam_mu = [x for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
                 if jax.tree_util.keystr(path, simple=True, separator='/').endswith(
                     'mu/Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel')][0]
      sums, outputs = evaluate(state, sharding.to_global(batches[0], batch_sharding))
      # The report reads the final evaluation's outputs back per process.
      local_outputs = sharding.to_local(outputs, batch_sharding)
      assert isinstance(local_outputs, np.ndarray)
      chex.assert_shape(local_outputs, (16, 10))
      return (jax.device_get((state.params, losses, sums)),
              kernel.addressable_shards[0].data.shape,
              adam_mu.addressable_shards[0].data.shape, local_outputs)

    one = run({'data': -1}, jax.devices()[:1])
    assert one[1] == (32, 64), one[1]
    # (data 2 x fsdp 4 covers data parallelism too.)
    for mesh_config, shard in (({'data': -1, 'fsdp': 4}, (32, 16)),
                               ({'data': -1, 'fsdp': 2, 'model': 2}, (16, 32))):
      other = run(mesh_config, jax.devices())
      # Parameters and optimizer state really are split as the rules say.
      assert other[1] == shard and other[2] == shard, (mesh_config, other[1:])
      chex.assert_trees_all_close(one[0][0], other[0][0], atol=2e-5, rtol=1e-4)
      chex.assert_trees_all_close(one[0][1], other[0][1], atol=1e-5, rtol=1e-5)
      assert int(other[0][2]['count']) == 13
      chex.assert_trees_all_equal(one[0][2]['confusion'], other[0][2]['confusion'])
      chex.assert_trees_all_close(one[3], other[3], atol=1e-4, rtol=1e-4)
      print('MATCH', mesh_config)
    print('EIGHT_DEVICES_MATCH')
''')


def test_eight_device_steps_equal_one_device_step():
  """data 2 x fsdp 4 and data 2 x fsdp 2 x model 2 over 8 devices: the
  same parameters, losses, eval sums and eval outputs after 2 steps as on
  1 device."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', EIGHT_DEVICE_CHECK], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'EIGHT_DEVICES_MATCH' in result.stdout
  assert result.stdout.count('MATCH {') == 2
