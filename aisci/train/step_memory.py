"""How much memory a compiled step allocates per device, for the log.

XLA allocates an execution's temporaries (the activations kept for the
backward pass, gradients, scratch) as one block per device. On a CPU that
block is mapped fresh and zeroed by the kernel at every step, which costs
time that grows with its size and with the number of devices faulting at
once (benchmarks/README.md, "Fresh memory every step"); so on a CPU with
more than 2 devices and a large block, the log suggests fewer devices.
"""

from typing import Any, Optional

# Per device, with more than 2 CPU devices. Measured over 8 devices on 2
# cores (benchmarks/README.md): the steps of ViT-Ti/4 and ResNet-18 at batch
# 128 (259, 255 MB) trained 1.5x faster over 2 devices. Below, size alone
# does not tell: the fast CNN (126 MB) ran faster over 8, the U-Net (54 MB)
# and ResNet-18 tiny (45 MB) ~10 % faster over 2, the ViT tiny (56 MB) and
# SST-2's transformer (43 MB) as fast over both.
HINT_TEMP_MB = 200


def temporaries_mb(compiled: Any) -> Optional[float]:
  """Temporary memory per device of a `jax.stages.Compiled`, in MB (None if
  the backend does not say)."""
  try:
    analysis = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, RuntimeError):
    return None
  if analysis is None:
    return None
  return analysis.temp_size_in_bytes / 1e6


def describe(compiled: Any, platform: str, devices: int,
             grad_accum_steps: int = 1) -> Optional[str]:
  """One log line on the step's temporaries, with the CPU hint when due."""
  temp_mb = temporaries_mb(compiled)
  if temp_mb is None:
    return None
  line = f'Train step: {temp_mb:,.0f} MB of temporaries per device per step'
  if platform == 'cpu' and devices > 2 and temp_mb >= HINT_TEMP_MB:
    line += (f'; on a CPU, steps this large ran 1.5x faster over 2 devices '
             f'than over 8: try --cpu_devices=2 or config.cpu_devices = 2')
    if grad_accum_steps == 1:
      line += (', without BatchNorm also --config.grad_accum_steps=4 (the '
               'same update in micro-batches)')
    line += ' (benchmarks/README.md, "Fresh memory every step")'
  return line + '.'
