"""Mixed precision (config.dtype='bfloat16'): parameters, norms, logits and
the loss stay float32, matmuls and convolutions run in bfloat16, and a step's
loss is that of the float32 step within bfloat16 round-off."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aisci import models, tasks
from aisci.train import optimizer, steps
from configs import resnet_cifar, vit_cifar


def _operand_dtypes(jaxpr, primitive: str) -> list:
  """dtypes of the first operand of every `primitive` in a jaxpr (nested too)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      found.append(eqn.invars[0].aval.dtype)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          found += _operand_dtypes(inner, primitive)
  return found


def _setup(config, dtype):
  model = models.build_model(config.model, num_classes=10, dtype=jnp.dtype(dtype))
  task = tasks.build_task(config.task, num_classes=10)
  tx, schedule = optimizer.make_optimizer(config)
  step = functools.partial(steps.train_step, model=model, task=task, tx=tx,
                           schedule=schedule)
  return model, tx, step


def _vit_config():
  config = vit_cifar.get_config('tiny')
  config.model.update(width=32, depth=2, mlp_dim=64, num_heads=2,
                      patch_size=8, head_zero_init=False)
  config.schedule.warmup_steps = 0
  return config


BATCH = {'image': np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype(np.float32),
         'label': np.random.default_rng(1).integers(0, 10, 16).astype(np.int32)}


def test_bf16_step_matches_f32_step_with_float32_params_and_loss():
  config = _vit_config()
  results = {}
  for dtype in ('float32', 'bfloat16'):
    model, tx, step = _setup(config, dtype)
    # Parameters are created float32 whatever the compute dtype.
    abstract = jax.eval_shape(functools.partial(
        steps.init_state, model=model, tx=tx,
        example_input=jnp.zeros((1, 32, 32, 3))), jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree.leaves(abstract.params)} == {jnp.dtype(jnp.float32)}
    if dtype == 'float32':  # the same parameters for both
      state = steps.initial_state(jax.random.PRNGKey(0), model, tx,
                                  jnp.zeros((1, 32, 32, 3)))
    matmuls = _operand_dtypes(jax.make_jaxpr(step)(state, BATCH).jaxpr,
                              'dot_general')
    new_state, metrics = jax.jit(step)(state, BATCH)
    results[dtype] = (state, new_state, metrics, matmuls)
  f32, bf16 = results['float32'], results['bfloat16']
  # float32 computes every matmul in float32; bfloat16 most of them (the
  # head's logits and the backward pass of float32 ops stay float32).
  assert set(f32[3]) == {jnp.dtype(jnp.float32)}
  bf16_share = np.mean([d == jnp.bfloat16 for d in bf16[3]])
  assert bf16_share > 0.5, bf16_share
  # Updated parameters, loss and gradient norm are float32.
  chex.assert_trees_all_equal_dtypes(bf16[1].params, f32[1].params)
  assert bf16[2]['loss'].dtype == jnp.float32
  # The same loss within bfloat16 round-off (8 bits of mantissa), and not
  # bit-equal (else the bfloat16 path would not be in use).
  np.testing.assert_allclose(bf16[2]['loss'], f32[2]['loss'], rtol=2e-2)
  np.testing.assert_allclose(bf16[2]['grad_norm'], f32[2]['grad_norm'], rtol=1e-1)
  assert float(bf16[2]['loss']) != float(f32[2]['loss'])


def test_bf16_activations_with_float32_norms_and_logits():
  config = _vit_config()
  for dtype in ('float32', 'bfloat16'):
    model, tx, _ = _setup(config, dtype)
    # Shapes and dtypes only: nothing is computed.
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), BATCH['image'][:2])
    logits, state = jax.eval_shape(functools.partial(
        model.apply, capture_intermediates=True), variables, BATCH['image'][:2])
    block = state['intermediates']['Transformer']['encoderblock_0']
    assert block['MlpBlock_3']['__call__'][0].dtype == jnp.dtype(dtype)
    assert block['LayerNorm_0']['__call__'][0].dtype == jnp.float32
    assert logits.dtype == jnp.float32


def test_resnet_bf16_convolutions_float32_batchnorm():
  config = resnet_cifar.get_config('tiny')
  config.model.width = 4
  model, _, _ = _setup(config, 'bfloat16')
  images = jnp.zeros((2, 16, 16, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             jax.random.PRNGKey(0), images)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  jaxpr = jax.make_jaxpr(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(variables, images).jaxpr
  convs = _operand_dtypes(jaxpr, 'conv_general_dilated')
  # stem, 2 per block x 8 blocks, 3 projection shortcuts
  assert len(convs) == 20 and set(convs) == {jnp.dtype(jnp.bfloat16)}, convs
  # BatchNorm statistics: the batch means are float32 reductions.
  means = [e for e in jaxpr.eqns if e.primitive.name == 'reduce_sum']
  assert means and all(e.outvars[0].aval.dtype == jnp.float32 for e in means)
