"""How many devices a command splits the CPU into (aisci.main, aisci.predict).

XLA:CPU runs each device's share of a jitted program on its own threads, so
the count decides how a step uses the cores: each config names the count it
trained fastest with (`config.cpu_devices`; benchmarks/README.md, "Fresh
memory every step"), a command-line flag overrides it, and
XLA_FLAGS=--xla_force_host_platform_device_count overrides both.
"""

import os
from typing import Any, Mapping, Optional, Union

import jax
import ml_collections

# For configs and workdirs from before the field: what aisci.main used then.
DEFAULT = 8
_XLA_FLAG = 'xla_force_host_platform_device_count'


def choose(flag_value: Optional[int],
           config: Union[ml_collections.ConfigDict, Mapping[str, Any], None]
           ) -> tuple[int, str]:
  """(count, where it came from): the flag, else config['cpu_devices'], else
  DEFAULT. A config value that is not a positive integer is a ValueError."""
  if flag_value is not None:
    return flag_value, '--cpu_devices'
  if config is None or 'cpu_devices' not in config:
    return DEFAULT, 'the default; the config has no cpu_devices field'
  value = config['cpu_devices']
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(
        f'config.cpu_devices must be a positive integer (the devices the CPU '
        f'is split into, e.g. 2 or 8); got {value!r}.')
  return value, 'config.cpu_devices'


def split(count: int, source: str) -> str:
  """Splits the CPU into `count` devices unless XLA_FLAGS already does;
  returns what decided the count. Call before JAX touches its backends."""
  if _XLA_FLAG in os.environ.get('XLA_FLAGS', ''):
    return f'XLA_FLAGS --{_XLA_FLAG}, which wins'
  jax.config.update('jax_num_cpu_devices', count)
  return source
