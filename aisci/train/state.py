"""The train state: everything a resumed run needs, and nothing static."""

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """A pytree of arrays, checkpointed whole.

  Attributes:
    step: [] int32, optimizer steps taken.
    params: model parameters.
    model_state: the model's other variable collections (e.g. `batch_stats`
      of BatchNorm); {} for models without any.
    opt_state: optax optimizer state.
    rng: [2] uint32 base PRNG key; step s uses fold_in(rng, s), so the
      randomness of every step is restored with the step counter.
  """
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
