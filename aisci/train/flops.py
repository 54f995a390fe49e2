"""FLOPs of the train step and model-FLOPs utilisation (MFU) for the log.

The count walks the step's jaxpr, as traced for compilation, and adds up
its matrix products and convolutions (2 FLOPs per multiply-add): the
forward pass, the backward pass, and any optimizer matrix products (Muon's
orthogonalisation). Norms, activations and the optimizer's elementwise
updates are left out, as in the usual MFU (PaLM, appendix B); they are a
few per cent of a ViT's or a ResNet's step. With config.model.remat the
recomputed forward pass counts too (hardware rather than model FLOPs).

Why not XLA's cost analysis: on a GPU the compiled program's count leaves
out the cuBLAS matrix products (benchmarks/results/2026-12-04_gpu_h200.txt:
4.0 G per ViT-B/16 image of 52.7 G), and `Lowered.cost_analysis` is not
implemented on a GPU or TPU (their PJRT C API). The jaxpr is the same on
every platform and counts a scan's body (gradient accumulation) as often as
it runs, where XLA counts it once.
"""

import math
from typing import Any, Optional, Sequence

from jax.extend import core as jax_core

# Dense bf16 TFLOP/s per chip from the vendors' datasheets (sparsity's
# doubled figures halved), keyed by a part of `jax.Device.device_kind`; the
# first match wins, so longer names come before the names they contain.
PEAK_TFLOPS = (
    ('H100 PCIe', 756.0),
    ('H100 NVL', 835.0),
    ('H200 NVL', 835.0),
    ('H100', 989.4),
    ('H200', 989.4),
    ('A100', 312.0),
    ('L40S', 362.0),
    ('L40', 181.0),
    ('L4', 121.0),
    ('TPU v4', 275.0),
    ('TPU v5 lite', 197.0),
    ('TPU v5', 459.0),  # v5p
    ('TPU v6 lite', 918.0),  # v6e
)


def peak_tflops(device_kind: str, configured: float = 0.0) -> Optional[float]:
  """Peak TFLOP/s of one device: `configured` (config.peak_tflops) if > 0,
  else the datasheet figure for `device_kind`, else None (CPUs, other
  chips)."""
  if configured > 0:
    return configured
  for name, tflops in PEAK_TFLOPS:
    if name in device_kind:
      return tflops
  return None


def _dot_flops(eqn) -> float:
  (lhs_contracting, _), _ = eqn.params['dimension_numbers']
  lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
  return 2.0 * out.size * math.prod(lhs.shape[d] for d in lhs_contracting)


def _conv_flops(eqn) -> float:
  # Each output element sums over the kernel's input features and window:
  # the kernel's size over its output features (groups included). An input
  # dilated by d (the input gradient of a stride-d convolution) is mostly
  # inserted zeros: 1 in prod(d) of those products is real, which makes
  # that gradient cost what its forward convolution costs.
  rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
  out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
  return (2.0 * out.size * rhs.size / rhs.shape[out_feature_dim]
          / math.prod(eqn.params['lhs_dilation']))


def matmul_flops(jaxpr: Any,
                 used_outputs: Optional[Sequence[bool]] = None) -> float:
  """FLOPs of the matrix products and convolutions of a (closed) jaxpr that
  reach its (used) outputs, sub-programs included: a scan's body `length`
  times, a cond's costliest branch, a while loop's body once (the program
  does not hold its trip count).

  Dead code is skipped as XLA skips it: a custom VJP's backward pass that
  recomputes its forward output only to take the VJP, the gradient of the
  images, which no one reads."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)  # a ClosedJaxpr's Jaxpr
  used_outputs = used_outputs or [True] * len(jaxpr.outvars)
  live = {v for v, used in zip(jaxpr.outvars, used_outputs)
          if used and isinstance(v, jax_core.Var)}
  total = 0.0
  for eqn in reversed(jaxpr.eqns):
    used = [v in live for v in eqn.outvars]
    if not any(used) and not eqn.effects:
      continue
    live.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
    total += _eqn_flops(eqn, used)
  return total


def _eqn_flops(eqn, used: Sequence[bool]) -> float:
  name = eqn.primitive.name
  if name == 'dot_general':
    return _dot_flops(eqn)
  if name == 'conv_general_dilated':
    return _conv_flops(eqn)
  if name == 'cond':
    return max(matmul_flops(branch, used) for branch in eqn.params['branches'])
  inner = 0.0
  for sub in jax_core.jaxprs_in_params(eqn.params):
    # A loop's outputs feed its next iteration: all of them count there.
    same_outputs = name not in ('scan', 'while') and len(sub.outvars) == len(used)
    inner += matmul_flops(sub, used if same_outputs else None)
  return inner * (eqn.params['length'] if name == 'scan' else 1)


def describe(flops_per_step: float, batch_size: int, device_kind: str,
             peak: Optional[float]) -> str:
  """The log line on the step's FLOPs and what MFU is measured against."""
  line = (f'Train step: {flops_per_step / 1e9:,.1f} GFLOP of matrix products '
          f'and convolutions ({flops_per_step / batch_size / 1e9:.3g} per '
          f'example)')
  if peak is None:
    return (line + f'; no peak FLOP/s known for {device_kind!r}: '
            'config.peak_tflops (per device) adds MFU to the progress line.')
  return line + f'; MFU against {peak:g} TFLOP/s per {device_kind} device.'
