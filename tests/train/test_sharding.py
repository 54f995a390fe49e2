"""Mesh construction, and the data-parallel step on 8 emulated CPU devices
against the same step on 1 device."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from aisci.train import sharding

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mesh_sizes_from_config():
  devices = jax.devices()
  mesh = sharding.make_mesh({'data': -1}, devices)
  assert dict(mesh.shape) == {'data': len(devices)}
  with pytest.raises(ValueError, match="'data' axis"):
    sharding.make_mesh({'model': -1}, devices)
  with pytest.raises(ValueError, match='needs 4 devices'):
    sharding.make_mesh({'data': 4}, devices)


def test_batch_not_divisible_by_devices_is_a_clear_error():
  class FakeMesh:  # only .shape is read
    shape = {'data': 8}
  with pytest.raises(ValueError, match='batch_size=12 is not divisible by the 8'):
    sharding.check_batch_size(12, FakeMesh(), 'config.input.batch_size')


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
    model = models.build_model(config.model, num_classes=10)
    task = tasks.build_task(config.task, num_classes=10)
    tx, schedule = optimizer.make_optimizer(config)
    rng = np.random.default_rng(0)
    batches = [{'image': rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
                'label': rng.integers(0, 10, 16).astype(np.int32),
                'mask': np.arange(16) < 13} for _ in range(3)]

    def run(devices):
      mesh = sharding.make_mesh({'data': -1}, devices)
      init = functools.partial(steps.init_state, model=model, tx=tx,
                               example_input=jnp.zeros((1, 32, 32, 3)))
      abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
      state_sharding = sharding.state_sharding(abstract, mesh)
      batch_sharding = sharding.batch_sharding(mesh)
      state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(0))
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
      sums = evaluate(state, sharding.to_global(batches[0], batch_sharding))
      return jax.device_get((state.params, losses, sums))

    one, eight = run(jax.devices()[:1]), run(jax.devices())
    chex.assert_trees_all_close(one[0], eight[0], atol=2e-5, rtol=1e-4)
    chex.assert_trees_all_close(one[1], eight[1], atol=1e-5, rtol=1e-5)
    assert int(eight[2]['count']) == 13
    chex.assert_trees_all_equal(one[2]['confusion'], eight[2]['confusion'])
    print('EIGHT_DEVICES_MATCH')
''')


def test_eight_device_step_equals_one_device_step():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', EIGHT_DEVICE_CHECK], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'EIGHT_DEVICES_MATCH' in result.stdout
