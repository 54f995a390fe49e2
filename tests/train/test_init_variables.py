"""steps.init_variables and steps.initial_state: model.init and init_state
as one program compiled with the initial state's options, to the bits of
the jitted function with XLA's defaults."""

import chex
import jax
import jax.numpy as jnp
import optax

from aisci.models import resnet, vit
from aisci.train import steps


def test_init_variables_are_those_of_the_jitted_model_init():
  # Conv stem (truncated normal 4-d kernels), attention and MLP (xavier
  # uniform, normal biases), position embedding (normal), head (lecun).
  model = vit.ViT(num_classes=3, variant=None, width=8, depth=1, mlp_dim=16,
                  num_heads=2, patch_size=4, stem='conv', stem_width=4,
                  head_zero_init=False)
  images = jnp.zeros((1, 8, 8, 3))
  rngs = {'params': jax.random.PRNGKey(3), 'dropout': jax.random.PRNGKey(4)}
  variables = steps.init_variables(model, rngs, images, train=False)
  jitted = jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, images)
  chex.assert_trees_all_equal(variables, jitted)
  other = steps.init_variables(model, {'params': jax.random.PRNGKey(5)}, images)
  posemb = lambda v: v['params']['Transformer']['posembed_input'][
      'pos_embedding']
  assert not jnp.array_equal(posemb(variables), posemb(other))


def test_static_keyword_arguments_reach_the_model():
  # BatchNorm reads `train` in Python: traced, it could not be a bool.
  model = resnet.ResNet(num_classes=2, depth=18, stem='cifar', width=2)
  variables = steps.init_variables(model, jax.random.PRNGKey(0),
                                   jnp.zeros((1, 8, 8, 3)), train=True)
  assert set(variables) == {'params', 'batch_stats'}
  chex.assert_shape(variables['params']['head']['kernel'], (16, 2))


def test_initial_state_is_the_jitted_init_state():
  # Parameters, AdamW's moments, step and the steps' rng, as the loop's
  # compiled init makes them.
  model = vit.ViT(num_classes=3, variant=None, width=8, depth=1, mlp_dim=16,
                  num_heads=2, patch_size=4, stem='conv', stem_width=4,
                  head_zero_init=False)
  tx = optax.adamw(1e-3)
  images = jnp.zeros((1, 8, 8, 3))
  state = steps.initial_state(jax.random.PRNGKey(3), model, tx, images)
  jitted = jax.jit(lambda key, x: steps.init_state(key, model, tx, x))(
      jax.random.PRNGKey(3), images)
  chex.assert_trees_all_equal(state, jitted)
  assert int(state.step) == 0
  assert not jnp.array_equal(
      state.rng, steps.initial_state(jax.random.PRNGKey(4), model, tx,
                                     images).rng)
