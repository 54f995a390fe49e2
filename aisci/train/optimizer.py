"""optax optimizer and learning-rate schedule from `config.optimizer` and
`config.schedule`."""

from typing import Any

import jax
import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to the peak rate, then `decay` to the end rate."""
  peak = config.optimizer.learning_rate
  warmup = config.schedule.warmup_steps
  end = peak * config.schedule.end_learning_rate_factor
  decay_steps = max(config.total_steps - warmup, 1)
  if config.schedule.decay == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif config.schedule.decay == 'linear':
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif config.schedule.decay == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f'Unknown config.schedule.decay {config.schedule.decay!r}; '
                     "known: 'cosine', 'linear', 'constant'.")
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(params: Any) -> Any:
  """True for weight matrices and conv kernels only.

  Norm scales and biases, position/class/token embeddings (`pos_embedding`,
  `cls`, `nn.Embed`'s `embedding`) are all named otherwise in Flax, so the
  parameter name alone decides.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer chain (clip -> update) and its learning-rate schedule."""
  opt = config.optimizer
  schedule = make_schedule(config)
  chain = []
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2,
                             weight_decay=opt.weight_decay,
                             mask=weight_decay_mask))
  elif opt.name == 'sgd':
    # Weight decay added to the gradient before momentum, as PyTorch's SGD
    # does, so that recipes carry over with the same numbers.
    if opt.weight_decay:
      chain.append(optax.add_decayed_weights(opt.weight_decay,
                                             mask=weight_decay_mask))
    chain.append(optax.sgd(schedule, momentum=opt.momentum or None,
                           nesterov=opt.nesterov))
  else:
    raise ValueError(f"Unknown config.optimizer.name {opt.name!r}; known: "
                     "'adamw', 'sgd'.")
  return optax.chain(*chain), schedule
