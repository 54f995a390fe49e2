"""The log line on a compiled step's temporaries, and when it hints at fewer
CPU devices."""

import jax
import jax.numpy as jnp

from aisci.train import step_memory


def _compiled_with_a_16_mb_intermediate():
  # x @ x.T is [2048, 2048] float32 = 16.8 MB, sorted (which needs it
  # whole in memory) and cut to 4 columns: a temporary, neither an argument
  # nor an output. (XLA fuses a product that is only reduced away.)
  x = jax.ShapeDtypeStruct((2048, 64), jnp.float32)
  return jax.jit(lambda x: jnp.sort(x @ x.T, axis=1)[:, :4]).lower(x).compile()


def test_temporaries_are_read_from_the_compiled_step():
  temp_mb = step_memory.temporaries_mb(_compiled_with_a_16_mb_intermediate())
  assert 16.7 <= temp_mb < 100


def test_hint_only_for_large_steps_on_a_cpu_with_more_than_two_devices(
    monkeypatch):
  compiled = _compiled_with_a_16_mb_intermediate()
  line = step_memory.describe(compiled, 'cpu', 8)
  assert line.startswith('Train step: 17 MB of temporaries per device')
  assert '--cpu_devices' not in line  # under the threshold
  monkeypatch.setattr(step_memory, 'HINT_TEMP_MB', 10)  # 17 MB is over it
  line = step_memory.describe(compiled, 'cpu', 8)
  assert "try --cpu_devices=2" in line and "grad_accum_steps=4" in line
  assert 'grad_accum_steps' not in step_memory.describe(compiled, 'cpu', 8, 4)
  assert '--cpu_devices' not in step_memory.describe(compiled, 'cpu', 2)
  assert '--cpu_devices' not in step_memory.describe(compiled, 'gpu', 8)


def test_no_line_when_the_backend_gives_no_analysis():
  class NoAnalysis:
    def memory_analysis(self):
      return None
  assert step_memory.describe(NoAnalysis(), 'cpu', 8) is None
