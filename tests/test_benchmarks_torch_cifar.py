"""benchmarks/torch_airbench.py, the PyTorch airbench94 reference for the fast
CNN: its network is aisci's at the same widths, its whitening whitens, its
augmentation and test-time views are what they say, and it learns."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci import models
from benchmarks import models as bench_models

torch = pytest.importorskip('torch')
from benchmarks import torch_airbench  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('variant, widths', [('gpu', (64, 256, 256)),
                                             ('cpu_airbench_opt', (32, 128, 128))])
def test_twin_has_aiscis_parameters(variant, widths):
  config = bench_models.load_config(f'configs/cifar_fast.py:{variant}')
  assert tuple(config.model.widths) == widths
  model = models.build_model(config.model, num_classes=10)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 32, 32, 3)))['params']
  aisci_shapes = sorted(tuple(x.shape) for x in jax.tree.leaves(params))
  net = torch_airbench.make_net(widths)
  # BatchNorm scales are fixed at 1 in both: aisci has none (bn_scale=False).
  bn_scales = [m.weight for m in net.modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
  twin = [p for p in net.parameters()
          if not any(p is scale for scale in bn_scales)]
  # PyTorch kernels are [out, in, h, w] / [out, in]; Flax's [h, w, in, out].
  to_flax = lambda s: tuple(s[2:]) + (s[1], s[0]) if len(s) == 4 else tuple(s[::-1])
  assert sorted(to_flax(tuple(p.shape)) for p in twin) == aisci_shapes


def test_whitening_kernel_whitens_the_patches():
  rng = np.random.default_rng(0)
  # Correlated channels and neighbouring pixels.
  base = rng.normal(size=(64, 3, 17, 17))
  images = base[:, :, 1:, 1:] + 0.8 * base[:, :, :-1, :-1]
  mixing = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
  images = np.einsum('nchw,cd->ndhw', images, mixing)
  images = torch.tensor(images, dtype=torch.float32)
  conv = torch.nn.Conv2d(3, 24, 2, bias=False)
  torch_airbench.whiten_(conv, images, eps=1e-9)
  with torch.no_grad():
    out = conv(images).permute(0, 2, 3, 1).reshape(-1, 24).double()
  half = out[:, :12]
  covariance = (half.T @ half / len(half)).numpy()
  chex.assert_trees_all_close(covariance, np.eye(12), atol=1e-4)
  chex.assert_trees_all_close(out[:, 12:].numpy(), -half.numpy(), atol=1e-6)


def test_translate_crops_each_image_at_some_offset_within_the_shift():
  generator = torch.Generator().manual_seed(0)
  padded = torch.arange(40 * 3 * 12 * 12, dtype=torch.float32).reshape(
      40, 3, 12, 12)
  out = torch_airbench._translate(padded, 2, generator)  # pylint: disable=protected-access
  chex.assert_shape(out.numpy(), (40, 3, 8, 8))
  offsets = set()
  for image, crop in zip(padded, out):
    found = [(dy, dx) for dy in range(5) for dx in range(5)
             if torch.equal(image[:, dy:dy + 8, dx:dx + 8], crop)]
    assert len(found) == 1
    offsets.add(found[0])
  assert len(offsets) > 10  # random offsets, not one for all


def test_tta_logits_are_the_six_weighted_views():
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                            torch.nn.LazyLinear(5))
  images = torch.randn(3, 3, 8, 8)
  net(images)
  with torch.no_grad():
    got = torch_airbench._tta_logits(net, images).numpy()  # pylint: disable=protected-access
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)),
                    mode='reflect')
    views = [(images.numpy(), 0.25), (padded[..., :8, :8], 0.125),
             (padded[..., 2:, 2:], 0.125)]
    want = sum(weight * (net(torch.tensor(v)) + net(torch.tensor(v[..., ::-1].copy())))
               for v, weight in views).numpy()
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_triangle_schedule():
  factors = torch_airbench.triangle(100, 0.2, 0.23, 0.07)
  assert len(factors) == 101
  chex.assert_trees_all_close(factors[[0, 23, 100]], np.array([0.2, 1.0, 0.07]))
  assert np.all(np.diff(factors[:24]) > 0) and np.all(np.diff(factors[23:]) < 0)


def test_torch_reference_learns_on_real_cifar(cifar10_dir):
  from benchmarks import gpu_cifar  # pylint: disable=g-import-not-at-top
  train = gpu_cifar.load_split(str(cifar10_dir), 'train', 4000)[:2]
  test = gpu_cifar.load_split(str(cifar10_dir), 'test', 1000)[:2]
  result = torch_airbench.train_torch(train, test, (16, 32, 32), epochs=4,
                                   batch_size=256, seed=0, device='cpu')
  assert result['steps'] == 4 * (4000 // 256)
  # Chance is 10 %; this run measured 39.6 % with the views, 38.8 % plain
  # (2026-12-05, 2 CPUs).
  assert result['tta_accuracy'] > 0.35, result
  assert result['accuracy'] > 0.3, result


def test_script_prints_both_sides(cifar10_dir):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.torch_cifar', f'--data={cifar10_dir}',
       '--limit=1024', '--widths=8,16,16', '--torch_epochs=1', '--epochs=1',
       '--batch_size=256', '--config=configs/cifar_fast.py:tiny'],
      cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines()
          if line.startswith('| PyTorch') or line.startswith('| aisci')]
  assert [r.split('|')[1].strip()[:5] for r in rows] == ['PyTor', 'aisci']


def test_train_step_twin_has_aiscis_shapes():
  # benchmarks/train_step.py's twin of fastcnn_airbench: aisci's padded
  # 32x32 stem (not airbench's 31x31), so both sides do the same work.
  assert bench_models.has_torch_twin('fastcnn_airbench')
  config = bench_models.config_for('fastcnn_airbench')
  twin = bench_models.torch_model(config)
  x = torch.zeros(2, 3, 32, 32)
  chex.assert_shape(twin[0](x).detach().numpy(), (2, 24, 32, 32))
  chex.assert_shape(twin(x).detach().numpy(), (2, 10))
  airbench = torch_airbench.make_net((32, 128, 128))
  chex.assert_shape(airbench[0](x).detach().numpy(), (2, 24, 31, 31))
  # fastcnn_airbench_valid is aisci at airbench's own shapes: so is its twin.
  config = bench_models.config_for('fastcnn_airbench_valid')
  assert config.model.stem_padding == 'VALID'
  twin = bench_models.torch_model(config)
  chex.assert_shape(twin[0](x).detach().numpy(), (2, 24, 31, 31))


@pytest.mark.parametrize('stem_padding, aisci_shapes',
                         [('VALID', False), ('SAME', True)])
def test_fastcnn_computes_what_the_torch_network_computes(stem_padding,
                                                          aisci_shapes):
  # The same weights and BatchNorm statistics in both: equal logits. VALID is
  # airbench's unpadded stem (31/15/7/3 pixels, pools dropping the odd row),
  # SAME the padded one that benchmarks/train_step.py's twin copies.
  from aisci.models import fastcnn  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  widths = (8, 16, 16)
  torch.manual_seed(0)
  net = torch_models.airbench_net(widths, aisci_shapes=aisci_shapes).eval()
  norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
  with torch.no_grad():
    for m in norms:  # trained-looking statistics, far from eps
      m.bias.uniform_(-0.5, 0.5)
      m.running_mean.uniform_(-0.3, 0.3)
      m.running_var.uniform_(0.5, 2.0)
    convs[0].weight.normal_()
    convs[0].bias.uniform_(-0.5, 0.5)
  model = fastcnn.FastCNN(
      num_classes=10, stem='whiten', stem_width=24, stem_padding=stem_padding,
      widths=widths, bn_scale=False, identity_init=True, tta_flip=False)
  hwio = lambda w: jnp.asarray(w.detach().numpy().transpose(2, 3, 1, 0))
  params = {'stem_conv': {'kernel': hwio(convs[0].weight),
                          'bias': jnp.asarray(convs[0].bias.detach().numpy())},
            'head': {'kernel': jnp.asarray(net[-2].weight.detach().numpy().T)}}
  stats = {}
  for i in range(len(widths)):
    group = f'group{i + 1}'
    params[group], stats[group] = {}, {}
    for j in (1, 2):
      conv_layer, norm = convs[1 + 2 * i + j - 1], norms[2 * i + j - 1]
      params[group][f'conv{j}'] = {'kernel': hwio(conv_layer.weight)}
      params[group][f'bn{j}'] = {'bias': jnp.asarray(norm.bias.detach().numpy())}
      stats[group][f'bn{j}'] = {
          'mean': jnp.asarray(norm.running_mean.numpy()),
          'var': jnp.asarray(norm.running_var.numpy())}
  images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  variables = {'params': params, 'batch_stats': stats}
  chex.assert_trees_all_equal_shapes(
      jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.asarray(images)),
      variables)
  got = model.apply(variables, jnp.asarray(images), train=False)
  with torch.no_grad():
    want = net(torch.tensor(images.transpose(0, 3, 1, 2))).numpy()
  chex.assert_shape(got, (4, 10))
  # BatchNorm's eps: 1e-5 in aisci, 1e-12 in airbench.
  chex.assert_trees_all_close(got, want, rtol=1e-3, atol=1e-4)
