"""aisci/train/compute_dtype.py: config.dtype is checked, and bfloat16 on a
CPU gets a warning with the fix."""

import jax.numpy as jnp
import pytest

from aisci.train import compute_dtype


@pytest.mark.parametrize('name', ['float32', 'bfloat16'])
def test_known_names_parse_to_their_dtype(name):
  assert compute_dtype.parse(name) == jnp.dtype(name)


@pytest.mark.parametrize('name', ['bf16', 'float16', 'float64', 'int8', ''])
def test_other_names_are_an_error_naming_the_choices(name):
  with pytest.raises(ValueError, match=r"Unknown config.dtype .*known: "
                     r"\('float32', 'bfloat16'\)"):
    compute_dtype.parse(name)


@pytest.mark.parametrize('dtype,platform,warns', [
    (jnp.bfloat16, 'cpu', True),
    (jnp.float32, 'cpu', False),
    (jnp.bfloat16, 'gpu', False),
    (jnp.bfloat16, 'tpu', False),
])
def test_warns_only_for_bfloat16_on_cpu(dtype, platform, warns, caplog):
  caplog.set_level('WARNING', logger='absl')
  assert compute_dtype.warn_if_slow(jnp.dtype(dtype), platform) == warns
  messages = [r.getMessage() for r in caplog.records]
  if warns:
    assert any("config.dtype='bfloat16' on CPU" in m
               and '--config.dtype=float32' in m for m in messages), messages
  else:
    assert not messages
