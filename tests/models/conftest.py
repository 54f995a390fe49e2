"""What the model tests share."""

import functools

import jax
import pytest


@functools.partial(jax.jit, static_argnames=('model', 'train', 'mutable'))
def _jitted_apply(model, variables, inputs, train=False, rngs=None,
                  mutable=False):
  return model.apply(variables, inputs, train=train, rngs=rngs,
                     mutable=mutable)


def _apply(model, variables, inputs, train=False, rngs=None, mutable=False):
  try:
    hash(model)
  except TypeError:  # dict fields (MultiHead): compiled for this call only
    return jax.jit(lambda v, x, r: model.apply(
        v, x, train=train, rngs=r, mutable=mutable))(variables, inputs, rngs)
  return _jitted_apply(model, variables, inputs, train, rngs, mutable)


@pytest.fixture
def apply():
  """apply(model, variables, inputs, train=False, rngs=None, mutable=False)
  (mutable a tuple of collections, if given): model.apply as one compiled
  program, kept for the next call with the same model and shapes. Op by
  op, each of a model's primitives compiles on its own (52-65 programs,
  4.6-5.0 s, for a forward pass of the small ViTs here); the ViT, fast CNN,
  U-Net, heads and transformer files took 160 s that way, 106 s this way."""
  return _apply
