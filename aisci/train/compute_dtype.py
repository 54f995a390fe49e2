"""config.dtype, the model's compute dtype: checked, and a warning where it
makes the step slower.

'float32' runs everywhere; 'bfloat16' is for GPUs and TPUs, whose matrix
units run it several times faster than float32. Parameters, norms, logits
and the loss stay float32 either way (the models' `dtype` fields).

On a CPU it gains nothing: XLA:CPU computes bfloat16 matrix products and
convolutions in float32 and converts around them (its compiled programs
show it), so bfloat16 adds conversions. Measured on 2 cores of an AMD EPYC
with AVX512-BF16 (benchmarks/README.md, "bfloat16 on a CPU"): the ViT tiny
step at 0.8x float32's rate, ResNet-18's at 0.9-1.1x. PyTorch's autocast does
use such a CPU's bfloat16 instructions (its ResNet-18 ran 1.8x faster
there); XLA 0.10 does not.
"""

from absl import logging
import jax.numpy as jnp

# float16 is left out: training in it needs loss scaling, which aisci does not do.
KNOWN = ('float32', 'bfloat16')


def parse(name: str) -> jnp.dtype:
  """config.dtype -> the dtype; ValueError naming the choices otherwise."""
  if name not in KNOWN:
    raise ValueError(
        f'Unknown config.dtype {name!r}; known: {KNOWN} (float32 on CPUs, '
        "'bfloat16' on GPUs and TPUs; parameters stay float32 either way).")
  return jnp.dtype(name)


def warn_if_slow(dtype: jnp.dtype, platform: str) -> bool:
  """Logs a warning (and returns True) when `dtype` on `platform` makes the
  step slower than float32 would."""
  if platform != 'cpu' or dtype == jnp.float32:
    return False
  logging.warning(
      'config.dtype=%r on CPU: XLA:CPU computes %s matrix products and '
      'convolutions in float32 and converts around them, so the step is no '
      'faster and may be slower (ViT tiny 0.8x, ResNet-18 0.9-1.1x float32 on a '
      'CPU with bfloat16 instructions). Train on CPUs with '
      '--config.dtype=float32; keep %r for GPUs and TPUs.',
      dtype.name, dtype.name, dtype.name)
  return True
