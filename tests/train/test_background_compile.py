"""aisci/train/background_compile.py: the compiled function comes back from
the worker thread, and so do errors; the options the loop compiles the
initial state with change its speed, not its bits."""

import functools
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aisci import models
from aisci.train import background_compile
from aisci.train import steps
from configs import cifar_fast
from configs import unet_membrane
from configs import vit_cifar


def test_the_future_gives_the_compiled_function_built_on_another_thread():
  threads = []

  def affine(x, w):
    threads.append(threading.current_thread().name)  # runs while tracing
    return x @ w + 1.0

  x = jnp.arange(6.0).reshape(2, 3)
  w = jnp.ones((3, 4))
  compiled = background_compile.start(jax.jit(affine), x, w).result(
      timeout=120)
  out = compiled(x, w)
  chex.assert_shape(out, (2, 4))
  np.testing.assert_allclose(out, np.arange(6.0).reshape(2, 3) @ np.ones((3, 4)) + 1)
  assert threads and threads[0].startswith('aisci-compile')
  assert threads[0] != threading.current_thread().name


def test_a_tracing_error_is_raised_by_result():
  future = background_compile.start(jax.jit(lambda x, w: x @ w),
                                    jnp.ones((2, 3)), jnp.ones((4, 5)))
  with pytest.raises(TypeError, match='dot_general'):
    future.result(timeout=120)


def test_compiler_options_reach_xla():
  # XLA rejects an option it does not know: so the options are passed on.
  future = background_compile.start(
      jax.jit(lambda x: x + 1.0), jnp.ones(2),
      compiler_options={'xla_no_such_option': 1})
  with pytest.raises(Exception, match='xla_no_such_option'):
    future.result(timeout=120)


def _small_model(name):
  """(model, example input shape) of the zoo, small: [1, h, w, channels]."""
  if name == 'unet':
    config = unet_membrane.get_config('multitask')
    config.model.backbone.update(depth=2, base_width=8)
    return models.build_model(config.model, num_classes=2), (1, 64, 64, 1)
  config = {'vit': vit_cifar, 'fastcnn': cifar_fast}[name].get_config()
  if name == 'vit':
    config.model.update(variant=None, width=32, depth=1, mlp_dim=64,
                        num_heads=2, patch_size=4, stem='conv')
  else:
    config.model.update(stem_width=8, widths=(8, 16, 16))
  return models.build_model(config.model, num_classes=10), (1, 32, 32, 3)


@pytest.mark.parametrize('name', ['vit', 'fastcnn', 'unet'])
def test_cpu_init_options_give_the_same_initial_state_bit_for_bit(name):
  # The loop compiles init_state with these options on a CPU, for speed
  # only: the state must be the one XLA's defaults compute (-O0 would not
  # be: its normal draws differ by a few ulp).
  assert steps.init_compiler_options('gpu') is None
  model, shape = _small_model(name)
  init = jax.jit(functools.partial(
      steps.init_state, model=model, tx=optax.adamw(1e-3),
      example_input=jnp.zeros(shape)))
  rng = jax.random.PRNGKey(3)
  default = init.lower(rng).compile()(rng)
  fast = background_compile.start(
      init, rng, compiler_options=steps.init_compiler_options('cpu')).result(
          timeout=600)(rng)
  chex.assert_trees_all_equal(fast, default)
  assert jax.tree.leaves(default.params)  # something was compared
