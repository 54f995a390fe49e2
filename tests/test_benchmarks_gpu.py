"""The GPU benchmarks (benchmarks/gpu.py, gpu_cifar.py), checked on the CPU:
their FLOP count, the schedule stretching, and that they run."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from aisci import models
from benchmarks import models as bench_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table(stdout: str, first_cell: str) -> list[list[str]]:
  return [[c.strip() for c in line.split('|')[1:-1]]
          for line in stdout.splitlines() if line.startswith(f'| {first_cell}')]


def test_vit_b16_flops_are_the_published_count():
  # ViT-B/16 at 224: 17.6 GMACs forward with its class token and a
  # 1000-class head (fvcore, as timm and DeiT quote it); here 196 tokens
  # and 10 classes, 0.6 % less. Training counts 3 forward passes.
  macs = bench_models.model_flops('vit_b16') / 3 / 2
  assert 17.3e9 < macs < 17.6e9


@pytest.mark.parametrize('name', ['vit_tiny', 'vit_ti4'])
def test_vit_flops_are_xlas_count_less_the_elementwise_work(name):
  config = bench_models.config_for(name)
  model = models.build_model(config.model, num_classes=10)
  x = jnp.zeros((4, config.input.image_size, config.input.image_size, 3))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  analysis = jax.jit(model.apply).lower(params, x).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  xla = analysis['flops'] / 4
  # XLA also counts norms, GELU, softmax and adds: a few % more.
  assert 0.95 * xla < bench_models.model_flops(name) / 3 < xla


def test_gpu_benchmark_runs_and_divides_by_the_reference(tmp_path):
  pytest.importorskip('torch')  # the reference (make test installs it)
  variant = '--xla_cpu_enable_fast_math=false'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.gpu', '--models=vit_tiny',
       '--batch_sizes=8', '--matmul_size=128', '--repeats=1', '--warmup=0',
       f'--xla_variants=;{variant}', f'--profile_dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  default, flagged = _table(result.stdout, 'aisci')
  torch_row, = _table(result.stdout, 'torch')
  assert default[1] == 'vit_tiny' and default[2] == '8'
  assert (default[-1], flagged[-1]) == ('-', variant)
  assert torch_row[-2] == '1.00'
  for aisci in default, flagged:
    rates = float(aisci[3]), float(torch_row[3])
    ratio = rates[0] / rates[1]
    # The printed rates are rounded to 0.1, the ratio to 0.01.
    slack = ratio * (0.05 / rates[0] + 0.05 / rates[1]) + 0.005
    assert abs(float(aisci[-2]) - ratio) <= slack + 1e-9
  # model TFLOP/s is the analytic FLOPs x images/s.
  assert 'model FLOPs per image: vit_tiny 0.2 G' in result.stdout
  # Each aisci run kept its optimised program and a trace of its steps.
  runs = sorted(p.name for p in tmp_path.iterdir())
  assert runs == ['vit_tiny_b8', 'vit_tiny_b8_xla_cpu_enable_fast_math=false']
  for run in runs:
    assert 'ENTRY' in (tmp_path / run / 'step.hlo.txt').read_text()
    assert list((tmp_path / run).glob('plugins/profile/*/*.xplane.pb'))


def test_scaled_config_stretches_the_schedule():
  # In the test: benchmark modules define absl flags of the same names.
  from benchmarks import gpu_cifar  # pylint: disable=g-import-not-at-top
  spec = 'configs/cifar_fast.py:gpu'
  base = bench_models.load_config(spec)
  assert base.total_steps == 10 * 97 and base.dtype == 'bfloat16'
  config = gpu_cifar.scaled_config(spec, 20, seed=3, train_size=50_000)
  assert config.total_steps == 20 * 97 and config.seed == 3
  assert config.schedule.warmup_steps == round(
      base.schedule.warmup_steps * 2)


def test_gpu_cifar_trains_and_evaluates_on_real_images(cifar10_dir):
  # The tiny fast CNN on 600 images: one step, then 600 test images. (The
  # GPU recipe's whitening and alternating flip on device batches:
  # tests/train/test_device_input.py.)
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.gpu_cifar', f'--data={cifar10_dir}',
       '--config=configs/cifar_fast.py:tiny', '--limit=600',
       '--epochs=1', '--target=0.0'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '600 train / 600 test images' in result.stdout
  row, = _table(result.stdout, '1 ')
  assert row[1] == '1' and 0.0 < float(row[2]) <= 100.0
  assert '# time to 0 %:' in result.stdout


def test_gpu_cifar_names_a_missing_folder(tmp_path):
  from benchmarks import gpu_cifar  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match='make data'):
    gpu_cifar.load_split(str(tmp_path), 'train')
