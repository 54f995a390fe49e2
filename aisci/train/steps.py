"""Pure train and eval steps. The loop jits them with explicit shardings;
nothing here does I/O. (init_variables and initial_state compile model.init
and init_state on their own, for code outside the loop.)"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from aisci.train import grad_accum
from aisci.train.state import TrainState


def _apply(model: nn.Module, params: Any, model_state: Any, inputs: jax.Array,
           *, train: bool, rng: jax.Array | None = None):
  """model.apply that also returns the updated non-param collections."""
  variables = {'params': params, **model_state}
  if not train or not model_state:
    outputs = model.apply(variables, inputs, train=train,
                          rngs={'dropout': rng} if train else None)
    return outputs, model_state
  return model.apply(variables, inputs, train=True, rngs={'dropout': rng},
                     mutable=list(model_state))


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               model: nn.Module, task: Any, tx: optax.GradientTransformation,
               schedule: optax.Schedule, grad_accum_steps: int = 1,
               input_key: str = 'image'
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on one global batch.

  input_key: the batch's feature the model takes (the data source says).
  grad_accum_steps: k > 1 computes the gradient over k micro-batches of
    B/k examples one after another (grad_accum.py): the update of the whole
    batch with the activation memory of a k-times smaller one.
  Returns the new state and scalar metrics (loss, task metrics, learning
  rate, gradient norm), left on device: the loop fetches them only when it
  logs, so steps are dispatched without waiting for each other.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params, batch, model_state, rng):
    outputs, model_state = _apply(model, params, model_state,
                                  batch[input_key], train=True, rng=rng)
    loss, metrics = task.loss(outputs, batch)
    return loss, (metrics, model_state)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps > 1:
    (loss, (metrics, model_state)), grads = grad_accum.accumulate(
        grad_fn, state.params, batch, state.model_state, rng, grad_accum_steps)
  else:
    (loss, (metrics, model_state)), grads = grad_fn(
        state.params, batch, state.model_state, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, learning_rate=schedule(state.step),
                 grad_norm=optax.tree.norm(grads))
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state, model_state=model_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              model: nn.Module, task: Any, input_key: str = 'image'
              ) -> tuple[dict[str, jax.Array], Any]:
  """(The task's sums over the real examples of one padded batch, the
  model's outputs for the batch): the report draws its examples from the
  final evaluation's outputs instead of running the model again."""
  outputs, _ = _apply(model, state.params, state.model_state,
                      batch[input_key], train=False)
  return task.eval_sums(outputs, batch), outputs


# init_state runs once, so how fast it compiles matters, not how fast it
# runs. XLA:CPU's LLVM at -O1 compiled unet_membrane.py:multitask's in 4.2
# s instead of 10.5, ResNet-18's in 2.9 instead of 6.3, ViT-Ti/4's in 6.6
# instead of 7.9, to the same bits (2 cores, `python -m
# benchmarks.init_compile`); -O0 changes the normal draws by up to 3 ulp.
# tests/train/test_background_compile.py checks the bits.
INIT_CPU_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options(backend: str) -> dict[str, Any] | None:
  """XLA options to compile init_state with on `backend` (None: defaults)."""
  return dict(INIT_CPU_COMPILER_OPTIONS) if backend == 'cpu' else None


def init_state(rng: jax.Array, model: nn.Module,
               tx: optax.GradientTransformation,
               example_input: jax.Array) -> TrainState:
  """A fresh state; rng: [2] uint32 key, split for init and for the steps."""
  init_rng, step_rng = jax.random.split(rng)
  variables = model.init({'params': init_rng, 'dropout': init_rng},
                         example_input, train=False)
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=dict(variables), opt_state=tx.init(params),
                    rng=step_rng)


def init_variables(model: nn.Module, rngs: Any, *inputs: Any,
                   **static_kwargs: Any) -> dict[str, Any]:
  """`model.init(rngs, *inputs, **static_kwargs)` as one program, compiled
  as init_state is (init_compiler_options). For code outside the loop
  (notebooks, tests, conversions): called op by op, model.init compiles
  every random draw of a new shape on its own, and on a CPU a small 4-d
  kernel's draw takes seconds to compile (the fast CNN: 19.6 s op by op,
  1.0 s this way, 2 cores; `python -m benchmarks.init_compile`). Deep
  models of identical blocks can lose (ViT-Ti/4: 5.0 s against 6.1).
  inputs: arrays, e.g. [1, height, width, channels]; static_kwargs: Python
  values such as train=False."""
  return _run_as_init(functools.partial(model.init, **static_kwargs), rngs,
                      *inputs)


def initial_state(rng: jax.Array, model: nn.Module,
                  tx: optax.GradientTransformation,
                  example_input: jax.Array) -> TrainState:
  """`init_state` as one program, compiled as the loop compiles it: for
  code outside the loop, where init_state called op by op would compile
  each random draw and optimizer-state leaf on its own (see
  init_variables)."""
  return _run_as_init(lambda key, x: init_state(key, model, tx, x), rng,
                      example_input)


def _run_as_init(fn: Callable[..., Any], *args: Any) -> Any:
  """fn(*args) jitted and compiled with init_compiler_options."""
  compiled = jax.jit(fn).lower(*args).compile(
      compiler_options=init_compiler_options(jax.default_backend()))
  return compiled(*args)
