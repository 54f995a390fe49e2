"""aisci/train/background_compile.py: the compiled function comes back from
the worker thread, and so do errors."""

import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.train import background_compile


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
