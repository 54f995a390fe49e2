"""Gradient accumulation: one optimizer step over k micro-batches.

The gradient of a batch's mean loss is the mean of its k equal
micro-batches' gradients, so k micro-batches of B/k give the update of one
batch of B while holding the activations of only B/k examples:
`jax.lax.scan` runs the micro-batches one after another inside the jitted
step and carries the gradient sum (and the model state, e.g. BatchNorm
statistics, which each micro-batch updates in turn as consecutive steps
would; BatchNorm normalises by each micro-batch's own statistics, so for
BatchNorm models the update is close to, not equal to, the big batch's).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp


def split_micro_batches(batch: Any, k: int) -> Any:
  """Every leaf [B, ...] -> [k, B/k, ...].

  Micro-batch i holds rows i, i+k, i+2k, ...: a batch split over devices
  in contiguous blocks of rows keeps every micro-batch split over all the
  devices (the reshape to [B/k, k, ...] keeps the split on the first axis),
  so no data moves between devices.
  """
  def split(x):
    if x.shape[0] % k:
      raise ValueError(
          f'The batch of {x.shape[0]} examples does not split into '
          f'config.grad_accum_steps={k} equal micro-batches: make '
          'config.input.batch_size a multiple of it.')
    return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def accumulate(grad_fn: Callable[..., Any], params: Any, batch: Any,
               model_state: Any, rng: jax.Array, k: int):
  """Mean loss, metrics and gradients of `batch` over k micro-batches.

  grad_fn(params, micro_batch, model_state, rng) ->
    ((loss, (metrics, model_state)), grads), as jax.value_and_grad(...,
    has_aux=True) of a loss function returns; micro-batch i gets
    fold_in(rng, i). Returns the same structure for the whole batch: loss
    and metrics are the micro-batch means (equal to the batch means, as the
    micro-batches are equal), gradients the mean gradient.
  """
  def body(carry, xs):
    grad_sum, model_state = carry
    i, micro_batch = xs
    (loss, (metrics, model_state)), grads = grad_fn(
        params, micro_batch, model_state, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grad_sum, grads), model_state), (loss, metrics)

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grad_sum, model_state), (losses, metrics) = jax.lax.scan(
      body, (zeros, model_state),
      (jnp.arange(k), split_micro_batches(batch, k)))
  grads = jax.tree.map(lambda g: g / k, grad_sum)
  metrics = jax.tree.map(lambda m: m.mean(axis=0), metrics)
  return (losses.mean(), (metrics, model_state)), grads
