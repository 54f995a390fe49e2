"""Skipping non-finite updates (`config.optimizer.skip_nonfinite_updates`).

By default a non-finite loss or gradient norm stops the run (loop.py). With
the option, a step whose loss, gradient norm or updated model state is
NaN/Inf keeps the state it started from: parameters, optimizer state and
model state (e.g. BatchNorm statistics, which a bad batch would poison too);
only the step counter moves on, so the next step reads the next batch, and the data order and the
per-step randomness stay those of a run without the bad batch. Each step
reports `skipped` (1.0 or 0.0); the loop logs the count per log interval.

The train state keeps its structure (unlike wrapping the optimizer in
`optax.apply_if_finite`, which adds counters to the optimizer state), so a
run can switch the option on or off and still resume its checkpoints.
"""

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

SKIPPED = 'skipped'


def keep_finite(old_state: Any, new_state: Any,
                metrics: Mapping[str, jax.Array]
                ) -> tuple[Any, dict[str, jax.Array]]:
  """new_state if metrics' loss and grad_norm and new_state's model state
  are finite, else old_state with new_state's step; adds
  metrics['skipped'] ([] float32, 1 = skipped).

  old_state, new_state: TrainState before and after the update (jittable).
  """
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
  # A NaN input can vanish from the loss (relu(NaN) is 0 in XLA) and still
  # poison the BatchNorm statistics.
  for leaf in jax.tree.leaves(new_state.model_state):
    finite &= jnp.all(jnp.isfinite(leaf))
  kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                      new_state, old_state)
  kept = kept.replace(step=new_state.step)
  return kept, dict(metrics, **{SKIPPED: 1.0 - finite.astype(jnp.float32)})


def guard(train_step: Callable[..., Any]) -> Callable[..., Any]:
  """train_step(state, batch) -> (state, metrics), skipping non-finite
  updates (see keep_finite); jit the result, as the plain step."""

  @functools.wraps(train_step)
  def guarded(state, batch):
    new_state, metrics = train_step(state, batch)
    return keep_finite(state, new_state, metrics)

  return guarded


def interval_means(fetched: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """What the loop logs for a log interval's steps (host values).

  Each metric is the mean over the steps whose update was applied (a skipped
  step's NaN loss would make every mean NaN); `skipped` is the count of
  skipped steps. Without a `skipped` metric, plain means over all steps.
  """
  applied = [m for m in fetched if not float(m.get(SKIPPED, 0.0))]
  means = {k: (sum(float(m[k]) for m in applied) / len(applied)
               if applied else float('nan'))
           for k in fetched[0] if k != SKIPPED}
  if SKIPPED in fetched[0]:
    means[SKIPPED] = float(sum(float(m[SKIPPED]) for m in fetched))
  return means
