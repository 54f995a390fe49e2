"""Rematerialisation (`remat=True`) recomputes blocks in the backward pass:
the same outputs and gradients as the plain model, from the same parameters.
(ViT's remat: tests/models/test_vit.py.)"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from aisci.train import steps


def _primitives(jaxpr) -> set[str]:
  """Names of all primitives in a jaxpr, nested ones included."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          names |= _primitives(inner)
  return names


CASES = {
    'resnet': (dict(name='resnet', depth=18, stem='cifar', width=2,
                    zero_init_last_bn=False),
               np.random.default_rng(0).normal(size=(4, 8, 8, 3))),
    'transformer': (dict(name='transformer', vocab_size=50, max_len=8,
                         width=16, depth=2, num_heads=2, mlp_dim=32,
                         dropout=0.1, pool='mean'),
                    np.random.default_rng(0).integers(1, 50, size=(4, 8))),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_remat_gives_the_same_outputs_and_gradients(name):
  model_config, inputs = CASES[name]
  inputs = jnp.asarray(inputs, jnp.int32 if name == 'transformer' else jnp.float32)
  # The transformer's head starts at zero: take its representation instead.
  num_classes = 0 if name == 'transformer' else 5
  plain = models.build_model(dict(model_config, remat=False),
                             num_classes=num_classes)
  remat = models.build_model(dict(model_config, remat=True),
                             num_classes=num_classes)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  # One program: op by op, initialising a ResNet-18 takes many seconds.
  variables = steps.init_variables(plain, rngs, inputs, train=False)
  params, state = variables['params'], {k: v for k, v in variables.items()
                                        if k != 'params'}

  def loss(model, params):
    # Training mode: dropout (same rng) and BatchNorm batch statistics.
    kwargs = dict(mutable=list(state)) if state else {}
    out = model.apply({'params': params, **state}, inputs, train=True,
                      rngs={'dropout': jax.random.PRNGKey(2)}, **kwargs)
    logits = out[0] if state else out
    return jnp.sum(jnp.sin(logits)), logits

  results = {}
  for key, model in (('plain', plain), ('remat', remat)):
    fn = jax.value_and_grad(lambda p, m=model: loss(m, p), has_aux=True)
    primitives = _primitives(jax.make_jaxpr(fn)(params).jaxpr)
    # The recomputation is a remat primitive in the gradient's jaxpr.
    recomputes = any(n.startswith('remat') or n == 'checkpoint'
                     for n in primitives)
    assert recomputes == (key == 'remat'), primitives
    results[key] = jax.jit(fn)(params)
  (_, logits_plain), grads_plain = results['plain']
  (_, logits_remat), grads_remat = results['remat']
  assert float(jnp.abs(logits_plain).max()) > 0  # not a trivial output
  chex.assert_trees_all_close(logits_remat, logits_plain, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(grads_remat, grads_plain, atol=1e-5, rtol=1e-4)
