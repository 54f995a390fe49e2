"""BatchNorm with the batch statistics of each of `groups` equal slices of
the batch ("ghost batches", Hoffer et al. 2017; Page's CIFAR-10 speed runs
used them at batch 512).

Why: a batch sharded over several devices makes nn.BatchNorm's statistics
an all-reduce across them, in the middle of the forward and backward
passes. With the batch split into as many ghost batches as devices (or a
multiple), each device normalises its own rows: the fast CNN's step on 8
CPU devices ran 1.05-1.06x faster (benchmarks/README.md). The statistics
of smaller batches also differ from the whole batch's, so this is a
modelling choice (config.model.bn_groups), not a free speed-up.

The same variables as nn.BatchNorm ('params': scale, bias; 'batch_stats':
mean, var) and the same statistics (E[x^2] - E[x]^2, float32); the running
averages move towards the mean of the groups' statistics.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class GhostBatchNorm(nn.Module):
  """[batch, ..., features] -> the same shape, normalised per ghost batch."""
  groups: int
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    mean_average = self.variable('batch_stats', 'mean', jnp.zeros,
                                 (features,), jnp.float32)
    var_average = self.variable('batch_stats', 'var', jnp.ones,
                                (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      y = (x32 - mean_average.value) * jax.lax.rsqrt(var_average.value
                                                     + self.epsilon)
    else:
      batch = x.shape[0]
      if batch % self.groups:
        raise ValueError(
            f'A batch of {batch} does not split into '
            f'config.model.bn_groups={self.groups} equal ghost batches: '
            'use a batch size divisible by it, or bn_groups=1.')
      ghosts = x32.reshape(self.groups, batch // self.groups, *x.shape[1:])
      axes = tuple(range(1, ghosts.ndim - 1))
      mean = ghosts.mean(axis=axes, keepdims=True)
      var = jnp.maximum(
          0.0, jnp.square(ghosts).mean(axis=axes, keepdims=True)
          - jnp.square(mean))
      y = ((ghosts - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(
          x.shape)
      if not self.is_initializing():
        m = self.momentum
        mean_average.value = (m * mean_average.value
                              + (1 - m) * mean.reshape(-1, features).mean(0))
        var_average.value = (m * var_average.value
                             + (1 - m) * var.reshape(-1, features).mean(0))
    if self.use_scale:
      y = y * self.param('scale', nn.initializers.ones, (features,),
                         jnp.float32)
    y = y + self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    return y.astype(self.dtype)
