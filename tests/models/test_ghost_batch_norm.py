"""aisci/models/ghost_batch_norm.py: each ghost batch is normalised as
nn.BatchNorm normalises a batch of its own, the running statistics follow
the groups' mean, and in a sharded step the statistics need no all-reduce."""

import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models.ghost_batch_norm import GhostBatchNorm
from aisci.train import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

X = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, size=(12, 5, 4, 6)),
                jnp.float32)


def _apply(module, x, variables=None):
  variables = variables or steps.init_variables(module, jax.random.PRNGKey(0),
                                                 x)
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  return variables, y, updates['batch_stats']


def test_each_ghost_batch_is_normalised_as_a_batch_of_its_own():
  _, y, stats = _apply(GhostBatchNorm(groups=3, momentum=0.9), X)
  reference = nn.BatchNorm(use_running_average=False, momentum=0.9)
  parts = [_apply(reference, part) for part in jnp.split(X, 3)]
  chex.assert_trees_all_close(y, jnp.concatenate([p[1] for p in parts]),
                              atol=1e-5)
  # Running statistics: 0.9 * initial + 0.1 * the mean of the groups'.
  for name in ('mean', 'var'):
    expected = np.mean([p[2][name] for p in parts], axis=0)
    chex.assert_trees_all_close(stats[name], expected, atol=1e-5)


def test_one_group_is_batch_norm_and_evaluation_uses_the_averages():
  ghost = GhostBatchNorm(groups=1, momentum=0.9)
  variables, y, stats = _apply(ghost, X)
  _, expected, expected_stats = _apply(
      nn.BatchNorm(use_running_average=False, momentum=0.9), X)
  chex.assert_trees_all_close((y, stats), (expected, expected_stats),
                              atol=1e-5)
  chex.assert_trees_all_equal_structs(
      variables,  # the same variables: checkpoints load
      steps.init_variables(nn.BatchNorm(use_running_average=False),
                           jax.random.PRNGKey(0), X))
  evaluating = GhostBatchNorm(groups=4, use_running_average=True)
  out = evaluating.apply({'params': variables['params'], 'batch_stats': stats}, X)
  chex.assert_trees_all_close(
      out, (X - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5), atol=1e-5)


def test_a_batch_the_groups_do_not_divide_is_a_clear_error():
  with pytest.raises(ValueError, match=r'A batch of 12 does not split into '
                     r'config.model.bn_groups=5'):
    _apply(GhostBatchNorm(groups=5), X)


_COUNT_ALL_REDUCES = """
import jax
jax.config.update('jax_num_cpu_devices', 4)
import jax.numpy as jnp
import numpy as np
from aisci.models import fastcnn
from aisci.train import steps
mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
x = jax.device_put(jnp.ones((16, 16, 16, 3)), batch)
for groups in (1, 4):
  model = fastcnn.FastCNN(num_classes=3, stem_width=8, widths=(8, 8),
                          bn_groups=groups, tta_flip=False)
  variables = steps.init_variables(model, jax.random.PRNGKey(0), x)
  def loss(params, x):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True,
                            mutable=['batch_stats'])
    return jnp.sum(logits)
  text = jax.jit(jax.grad(loss)).lower(variables['params'], x).compile().as_text()
  print(groups, text.count(' all-reduce('))
"""


def test_sharded_fast_cnn_step_has_no_batch_norm_all_reduce():
  # On a mesh of 4 CPU devices, whole-batch statistics are all-reduces in
  # the middle of the step (forward and backward of each BatchNorm); one
  # ghost batch per device needs none of those.
  result = subprocess.run([sys.executable, '-c', _COUNT_ALL_REDUCES],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  counts = dict(line.split() for line in result.stdout.split('\n') if line)
  assert int(counts['4']) < int(counts['1']), counts
