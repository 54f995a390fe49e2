"""The GPU benchmarks (benchmarks/gpu.py, gpu_cifar.py), checked on the CPU:
their FLOP count, their on-device augmentation and that they run."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from benchmarks import gpu
from benchmarks import gpu_cifar
from benchmarks import models as bench_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(REPO, '.cache', 'data', 'cifar10-jpeg')


def _table(stdout: str, first_cell: str) -> list[list[str]]:
  return [[c.strip() for c in line.split('|')[1:-1]]
          for line in stdout.splitlines() if line.startswith(f'| {first_cell}')]


def test_vit_b16_flops_are_the_published_count():
  # ViT-B/16 at 224: 17.6 GMACs forward with its class token and a
  # 1000-class head (fvcore, as timm and DeiT quote it); here 196 tokens
  # and 10 classes, 0.6 % less. Training counts 3 forward passes.
  macs = gpu.model_flops('vit_b16') / 3 / 2
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
  assert 0.95 * xla < gpu.model_flops(name) / 3 < xla


def test_gpu_benchmark_runs_and_divides_by_the_reference():
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.gpu', '--models=vit_tiny',
       '--batch_sizes=8', '--matmul_size=128', '--repeats=1', '--warmup=0'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  aisci, = _table(result.stdout, 'aisci')
  torch_row, = _table(result.stdout, 'torch')
  assert aisci[1] == 'vit_tiny' and aisci[2] == '8'
  assert torch_row[-1] == '1.00'
  ratio = float(aisci[3]) / float(torch_row[3])
  assert abs(float(aisci[-1]) - ratio) < 0.02
  # model TFLOP/s is the analytic FLOPs x images/s.
  assert 'model FLOPs per image: vit_tiny 0.2 G' in result.stdout


def _unnormalise(x, mean, std):
  return np.rint((np.asarray(x) * np.asarray(std) + np.asarray(mean)) * 255)


def test_epoch_batches_are_reflect_padded_crops_with_alternating_flips():
  n, size, pad, batch = 10, 6, 2, 4
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
  labels = np.arange(n, dtype=np.int32)  # the label says which image it is
  coins = rng.integers(0, 2, n).astype(np.int32)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  for epoch in (0, 1):
    x, y = gpu_cifar.epoch_batches(
        images, labels, jax.random.PRNGKey(epoch), epoch, coins, steps=2,
        batch_size=batch, pad=pad, flip=False, alternating=True, mean=mean,
        std=std)
    chex.assert_shape(x, (2, batch, size, size, 3))
    chex.assert_shape(y, (2, batch))
    y = np.asarray(y).ravel()
    assert len(set(y)) == 2 * batch  # a permutation: no image twice
    pixels = _unnormalise(x, mean, std).reshape(-1, size, size, 3)
    for image, index in zip(pixels, y):
      padded = np.pad(images[index], ((pad, pad), (pad, pad), (0, 0)),
                      mode='reflect')
      if (coins[index] + epoch) % 2:
        padded = padded[:, ::-1]  # a mirrored crop of the padded image
      crops = [padded[i:i + size, j:j + size]
               for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
      assert any(np.array_equal(image, c) for c in crops), (epoch, index)


def test_scaled_config_stretches_the_schedule():
  spec = 'configs/cifar_fast.py:gpu'
  base = bench_models.load_config(spec)
  assert base.total_steps == 10 * 97 and base.dtype == 'bfloat16'
  config = gpu_cifar.scaled_config(spec, 20, seed=3, train_size=50_000)
  assert config.total_steps == 20 * 97 and config.seed == 3
  assert config.schedule.warmup_steps == round(
      base.schedule.warmup_steps * 2)


@pytest.mark.skipif(not os.path.isdir(CIFAR),
                    reason='CIFAR-10 not extracted (make data)')
def test_gpu_cifar_trains_the_airbench_recipe_on_real_images():
  # The CPU variant of the GPU recipe (whitening, alternating flip, shifted
  # TTA views) on 600 images: one step, then the test images.
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.gpu_cifar', f'--data={CIFAR}',
       '--config=configs/cifar_fast.py:cpu_airbench_opt', '--limit=600',
       '--epochs=1', '--target=0.0'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '600 train / 600 test images' in result.stdout
  row, = _table(result.stdout, '1 ')
  assert row[1] == '1' and 0.0 < float(row[2]) <= 100.0
  assert '# time to 0 %:' in result.stdout


def test_gpu_cifar_names_a_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='make data'):
    gpu_cifar.load_split(str(tmp_path), 'train')
