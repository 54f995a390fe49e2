"""On a GPU: train-step throughput and model-FLOPs utilisation (MFU), aisci
vs PyTorch eager, with the chip's matrix-product rate measured in the same run.

  python -m benchmarks.gpu                    # ViT-B/16 bf16, both attentions
  python -m benchmarks.gpu --batch_sizes=256,512 --models=vit_b16 --parts=matmul,aisci
  python -m benchmarks.gpu --parts=aisci --profile_dir=/tmp/prof \
      --xla_variants=';--xla_gpu_enable_latency_hiding_scheduler=true'

aisci runs its real step (aisci/train/steps.py, the config's optax chain,
donated state, jitted as aisci/train/loop.py does) on each of `--models`
(benchmarks/models.py; 'vit_b16' is ViT-B/16 at 224x224 in bf16 with
float32 parameters, 'vit_b16_fused' the same with
config.model.attention='fused'); PyTorch runs the twin (benchmarks/torch_models.py)
under torch.autocast(bfloat16) with float32 parameters, the same AdamW and
clipping. Each side runs in a fresh process; images/s is batch / median step
time over `--repeats` steps after `--warmup`, each step waited for.

MFU = model FLOPs per image (3 x the forward pass's matrix products and
attention, counted from the shapes: benchmarks/models.py vit_train_flops)
x images/s / the chip's peak. The peak is `--peak_tflops` (H100/H200 SXM datasheet: 989 dense
bf16); the table also divides by the bf16 matrix-product rate measured by the
`matmul` part, which no real program exceeds. XLA's own FLOP count of the
compiled step is printed beside (on a GPU it leaves out the cuBLAS calls).
Where MFU is lost: `--xla_variants` runs aisci's step once per set of XLA
flags (added to XLA_FLAGS; '' is the default), and `--profile_dir` keeps,
for each aisci run, the compiled step's optimised HLO (`step.hlo.txt`: the
fusions and library calls XLA chose) and a jax.profiler trace of 3 steps
(`plugins/profile/*/*.xplane.pb`, for TensorBoard's profiler or xprof):
what a session lent a GPU brings back to study offline.

On a CPU the script runs as well, which is how tests/test_benchmarks_gpu.py
checks it (with a small model).
"""

import os
import re

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

_PARTS = flags.DEFINE_list('parts', ['matmul', 'aisci', 'torch'],
                           'Any of matmul, aisci, torch.')
_MODELS = flags.DEFINE_list(
    'models', ['vit_b16', 'vit_b16_fused'], 'ViTs of benchmarks/models.py; '
    "the first one's PyTorch twin is the reference.")
_BATCHES = flags.DEFINE_list('batch_sizes', ['256'], 'Global batch sizes.')
_XLA_VARIANTS = flags.DEFINE_string(
    'xla_variants', '', "';'-separated sets of XLA flags, each added to "
    "XLA_FLAGS for its own aisci run ('' in the list: the default).")
_PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', '', 'Keep each aisci run\'s optimised HLO and a profiler '
    'trace of 3 steps under this folder.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
_REPEATS = flags.DEFINE_integer('repeats', 20, 'Timed steps (median taken).')
_PEAK = flags.DEFINE_float(
    'peak_tflops', 989.4, 'Peak dense TFLOP/s of the chip in the compute '
    'dtype, the MFU denominator (H100/H200 SXM bf16: 989.4).')
_MATMUL_SIZE = flags.DEFINE_integer(
    'matmul_size', 8192, 'n of the n x n x n bf16 product timed by `matmul`.')
_WORKER = flags.DEFINE_enum('worker', None, ['matmul', 'aisci', 'torch'],
                            'Internal: measure one thing and emit it.')
_MODEL = flags.DEFINE_string('model', None, "Internal: the worker's model.")
_BATCH = flags.DEFINE_integer('batch_size', 256, "Internal: the worker's batch.")


def _device_name() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.devices()[0].device_kind


def matmul_worker() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = _MATMUL_SIZE.value
  # Random operands: zeros multiply faster on some chips (device/METHOD.md).
  a_key, b_key = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(a_key, (n, n), jnp.bfloat16)
  b = jax.random.normal(b_key, (n, n), jnp.bfloat16)
  product = jax.jit(jnp.matmul)
  median, _, _ = common.median_seconds(
      lambda: product(a, b).block_until_ready(), warmup=3,
      repeats=_REPEATS.value)
  return dict(tflops=2 * n**3 / median / 1e12, device=_device_name(),
              jax=jax.__version__)


def _xla_flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', float('nan')))


def aisci_worker(name: str, batch_size: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  compiled, compile_s, step, holder = bench_models.step_runner(
      *bench_models.aisci_train_step(name, batch_size))
  median, times, _ = common.median_seconds(step, warmup=_WARMUP.value,
                                           repeats=_REPEATS.value)
  stats = jax.devices()[0].memory_stats() or {}
  if _PROFILE_DIR.value:  # after the timing, which it would slow
    os.makedirs(_PROFILE_DIR.value, exist_ok=True)
    with open(os.path.join(_PROFILE_DIR.value, 'step.hlo.txt'), 'w',
              encoding='utf-8') as f:
      f.write(compiled.as_text())
    with jax.profiler.trace(_PROFILE_DIR.value):
      for _ in range(3):
        step()
  return dict(median_s=median, times=times, compile_s=compile_s,
              xla_flops=_xla_flops(compiled),
              peak_gb=stats.get('peak_bytes_in_use', float('nan')) / 1e9,
              device=_device_name(), jax=jax.__version__,
              flax=flax.__version__,
              params=sum(x.size for x in jax.tree.leaves(holder[0].params)))


def torch_worker(name: str, batch_size: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  config = bench_models.config_for(name, batch_size)
  model = bench_models.torch_model(config).to(device)
  images, labels = bench_models.synthetic_batch(batch_size,
                                                config.input.image_size)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
  y = torch.from_numpy(labels).long().to(device)
  opt_config = config.optimizer
  opt = torch.optim.AdamW(
      torch_models.decayed_groups(model, opt_config.weight_decay),
      lr=opt_config.learning_rate, betas=(opt_config.b1, opt_config.b2))
  loss_fn = torch.nn.CrossEntropyLoss(
      label_smoothing=config.task.label_smoothing)
  dtype = {'bfloat16': torch.bfloat16, 'float32': torch.float32}[config.dtype]
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
      loss = loss_fn(model(x).float(), y)
    loss.backward()
    if opt_config.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(),
                                     opt_config.grad_clip_norm)
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  median, times, _ = common.median_seconds(step, warmup=_WARMUP.value,
                                           repeats=_REPEATS.value)
  peak_gb = (torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda'
             else float('nan'))
  return dict(median_s=median, times=times, peak_gb=peak_gb,
              device=(torch.cuda.get_device_name() if device == 'cuda'
                      else 'cpu'),
              version=torch.__version__,
              params=sum(p.numel() for p in model.parameters()))


def _spread(result: dict) -> str:
  return (f'step ms median {1e3 * result["median_s"]:.1f} min '
          f'{1e3 * min(result["times"]):.1f} max {1e3 * max(result["times"]):.1f}')


def main(argv):
  del argv
  if _WORKER.value == 'matmul':
    common.emit(matmul_worker())
    return
  if _WORKER.value == 'aisci':
    common.emit(aisci_worker(_MODEL.value, _BATCH.value))
    return
  if _WORKER.value == 'torch':
    common.emit(torch_worker(_MODEL.value, _BATCH.value))
    return

  names = _MODELS.value
  flops = {name: bench_models.model_flops(name) for name in names}
  common.header(f'train step, median of {_REPEATS.value} steps after '
                f'{_WARMUP.value} warm-up steps; model FLOPs per image: '
                + ', '.join(f'{n} {f / 1e9:.1f} G' for n, f in flops.items()))
  passed = [f'--warmup={_WARMUP.value}', f'--repeats={_REPEATS.value}',
            f'--matmul_size={_MATMUL_SIZE.value}']
  matmul_tflops = float('nan')
  if 'matmul' in _PARTS.value:
    result = common.run_worker('benchmarks.gpu', ['--worker=matmul', *passed])
    matmul_tflops = result['tflops']
    print(f'# {result["device"]}, jax {result["jax"]}: bf16 '
          f'{_MATMUL_SIZE.value}^3 matrix product {matmul_tflops:.0f} TFLOP/s',
          flush=True)
  variants = [v.strip() for v in _XLA_VARIANTS.value.split(';')]
  rows = []
  for batch_size in [int(b) for b in _BATCHES.value]:
    runs = [('aisci', n, v) for n in names for v in variants
            if 'aisci' in _PARTS.value]
    if 'torch' in _PARTS.value:
      runs.append(('torch', names[0], ''))
    rates = {}
    for side, name, variant in runs:
      args = [f'--worker={side}', f'--model={name}',
              f'--batch_size={batch_size}', *passed]
      if _PROFILE_DIR.value and side == 'aisci':
        label = re.sub(r'[^A-Za-z0-9_.=-]+', '_', variant.strip('-'))
        args.append('--profile_dir=' + os.path.join(
            _PROFILE_DIR.value, f'{name}_b{batch_size}'
            + (f'_{label}' if label else '')))
      env = ({'XLA_FLAGS': f'{os.environ.get("XLA_FLAGS", "")} {variant}'.strip()}
             if variant else None)
      try:
        result = common.run_worker('benchmarks.gpu', args, env=env)
      except RuntimeError as e:  # one failing variant leaves the others
        print(f'#   {side} {name} {variant} batch {batch_size} failed: {e}',
              flush=True)
        continue
      rates[side, name, variant] = batch_size / result['median_s']
      extra = (f'compile {result["compile_s"]:.1f} s, XLA FLOPs per image '
               f'{result["xla_flops"] / batch_size / 1e9:.1f} G, jax '
               f'{result["jax"]}, flax {result["flax"]}' if side == 'aisci'
               else f'PyTorch {result["version"]}')
      print(f'#   {side} {name} {variant or "(default XLA flags)"} batch '
            f'{batch_size} on {result["device"]}: '
            f'{rates[side, name, variant]:.0f} img/s, {_spread(result)}, peak memory '
            f'{result["peak_gb"]:.1f} GB, params {result["params"]:,}, '
            f'{extra}', flush=True)
    reference = rates.get(('torch', names[0], ''))
    for (side, name, variant), rate in rates.items():
      achieved = flops[name] * rate / 1e12
      rows.append([side, name, batch_size, f'{rate:.1f}', f'{achieved:.1f}',
                   f'{100 * achieved / _PEAK.value:.1f}',
                   f'{100 * achieved / matmul_tflops:.1f}',
                   f'{rate / reference:.2f}' if reference else '-',
                   variant or '-'])
  print()
  print(common.table(
      ['side', 'model', 'batch', 'img/s', 'model TFLOP/s',
       f'MFU % of {_PEAK.value:.0f}', 'MFU % of measured matmul',
       'vs PyTorch', 'added XLA flags'], rows))


if __name__ == '__main__':
  app.run(main)
