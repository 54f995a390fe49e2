"""Convolutions on CPU: XLA's kernels vs aisci/models/conv.py's patch
weight gradient and Winograd F(2x2, 3x3) (aisci/models/winograd.py).

  python -m benchmarks.conv_grad                      # layers, then train steps
  python -m benchmarks.conv_grad --parts=layers --nets=fastcnn_cpu
  python -m benchmarks.conv_grad --parts=steps --models=fastcnn_cpu:512,resnet18

layers: every distinct convolution of a network at the batch one of the
CPU devices sees (global batch / --devices), on one device with all cores,
median of repeated calls, each waited for: XLA's forward pass, input
gradient and weight gradient, the patch weight gradient; then the forward
pass and both gradients in one jitted call three ways: all XLA, XLA with
the patch weight gradient, and Winograd (3x3 stride-1 layers). The last
column says which aisci's Conv takes there (conv.use_winograd, then
conv.use_patches).

steps: the whole train step (benchmarks/train_step.py's worker: the
config's optimizer, donated state, batch sharded over --devices CPU
devices, the allocator aisci.main runs with) with XLA's convolutions
everywhere, with the patch weight gradient only, and as aisci runs it
(Winograd and patches), each in a fresh process.
"""

import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

_PARTS = flags.DEFINE_list('parts', ['layers', 'steps'], 'layers and/or steps.')
_NETS = flags.DEFINE_list('nets', ['fastcnn_cpu', 'resnet18'],
                          f'Layer tables: any of {list(bench_models.MODELS)} '
                          'with a CNN (fastcnn*, resnet18*).')
_MODELS = flags.DEFINE_list(
    'models', ['fastcnn_cpu:512', 'resnet18:128', 'resnet18_tiny:128',
               'vit_tiny_conv:128'],
    'Train steps: model:global batch.')
_DEVICES = flags.DEFINE_integer('devices', 8, 'CPU devices of the step (and '
                                'the batch split for the layer table).')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed calls (median).')
_WORKER = flags.DEFINE_bool('worker', False, 'Internal: the layer table.')
_NET = flags.DEFINE_string('net', None, 'Internal.')


def conv_layers(name: str) -> tuple[int, list[tuple]]:
  """(global batch, [(h, c_in, c_out, kernel, stride, count)]) of a CNN."""
  config = bench_models.config_for(name)
  m, size = config.model, config.input.image_size
  if m.name == 'fastcnn':
    layers = [(size, 3, m.stem_width, 3, 1, 1)]
    c, h = m.stem_width, size
    for w in m.widths:  # conv at h, pool, conv at h / 2
      layers += [(h, c, w, 3, 1, 1), (h // 2, w, w, 3, 1, 1)]
      c, h = w, h // 2
    return config.input.batch_size, layers
  if m.name == 'resnet' and m.stem == 'cifar' and m.depth == 18:
    w, h = m.width, size
    layers = [(h, 3, w, 3, 1, 1), (h, w, w, 3, 1, 4)]
    for _ in range(3):  # stages 2-4: a strided block, then 3 stride-1 convs
      layers += [(h, w, 2 * w, 3, 2, 1), (h, w, 2 * w, 1, 2, 1),
                 (h // 2, 2 * w, 2 * w, 3, 1, 3)]
      w, h = 2 * w, h // 2
    return config.input.batch_size, layers
  raise ValueError(f'No layer table for {name!r}: fastcnn* or resnet18*.')


def layer_worker(name: str) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  from jax import lax
  import jax.numpy as jnp
  from aisci.models import conv
  from aisci.models import winograd
  # pylint: enable=g-import-not-at-top
  global_batch, layers = conv_layers(name)
  batch = global_batch // _DEVICES.value
  key = jax.random.PRNGKey(0)

  def timed(fn, *args):
    fn = jax.jit(fn)
    median, _, _ = common.median_seconds(
        lambda: jax.block_until_ready(fn(*args)), warmup=2,
        repeats=_REPEATS.value)
    return 1e3 * median

  def forward_and_grads(conv_fn):
    def both(x, w, g):
      y, vjp = jax.vjp(conv_fn, x, w)
      return y, vjp(g)
    return both

  rows = []
  for h, c_in, c_out, k, stride, count in layers:
    x = jax.random.normal(key, (batch, h, h, c_in))
    w = jax.random.normal(key, (k, k, c_in, c_out)) * 0.1
    pads = ((k // 2, k // 2),) * 2
    strides = (stride, stride)
    forward = lambda x, w: lax.conv_general_dilated(  # pylint: disable=cell-var-from-loop
        x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    g = jnp.ones_like(forward(x, w))
    patches = lambda x, g, k=k, strides=strides, pads=pads: (
        conv.weight_grad_patches(x, g, (k, k), strides, pads))
    aisci_direct = lambda x, w: conv.conv_general_dilated(  # pylint: disable=cell-var-from-loop
        x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    conv.WINOGRAD_ON_CPU = False  # read when traced, inside timed()
    patches_all_ms = timed(forward_and_grads(aisci_direct), x, w, g)
    conv.WINOGRAD_ON_CPU = True
    takes_winograd = conv.use_winograd(x.shape, w.shape, strides, pads,
                                       x.dtype)
    if (k, stride) == (3, 1):
      winograd_ms = timed(forward_and_grads(
          lambda x, w, pads=pads: winograd.conv3x3(x, w, pads)), x, w, g)
    else:
      winograd_ms = None
    rows.append(dict(
        layer=f'{h}x{h} {c_in}->{c_out} {k}x{k}/{stride}', count=count,
        gflop=2 * g.size * k * k * c_in / 1e9,
        forward_ms=timed(forward, x, w),
        input_grad_ms=timed(lambda x, w, g: jax.vjp(  # pylint: disable=g-long-lambda
            lambda x_: forward(x_, w), x)[1](g)[0], x, w, g),
        xla_ms=timed(lambda x, w, g: jax.vjp(  # pylint: disable=g-long-lambda
            lambda w_: forward(x, w_), w)[1](g)[0], x, w, g),
        patches_ms=timed(patches, x, g),
        xla_all_ms=timed(forward_and_grads(forward), x, w, g),
        patches_all_ms=patches_all_ms, winograd_ms=winograd_ms,
        chosen=('winograd' if takes_winograd else
                'patches' if conv.use_patches(x.shape, g.shape, w.shape,
                                              strides) else 'xla')))
  return dict(batch=batch, rows=rows)


def layer_table(name: str) -> None:
  result = common.run_worker(
      'benchmarks.conv_grad',
      ['--worker', f'--net={name}', f'--devices={_DEVICES.value}',
       f'--repeats={_REPEATS.value}'],
      # One device with every core, as the devices of a step share them.
      env=dict(common.main_env(),
               XLA_FLAGS='--xla_force_host_platform_device_count=1'))
  keys = ('forward_ms', 'input_grad_ms', 'xla_ms', 'patches_ms', 'xla_all_ms',
          'patches_all_ms', 'winograd_ms', 'chosen_ms')
  rows, totals = [], dict.fromkeys(keys, 0.0)
  for r in result['rows']:
    r['chosen_ms'] = r[{'winograd': 'winograd_ms', 'patches': 'patches_all_ms',
                        'xla': 'xla_all_ms'}[r['chosen']]]
    for key in keys:  # Winograd's total: other layers as aisci takes them
      value = r[key] if r[key] is not None else r['chosen_ms']
      totals[key] += r['count'] * value
    gflop = r['gflop']
    rows.append([r['layer'], r['count'], f'{r["forward_ms"]:.1f}',
                 f'{r["input_grad_ms"]:.1f}',
                 f'{r["xla_ms"]:.1f} ({gflop / r["xla_ms"] * 1e3:.0f})',
                 f'{r["patches_ms"]:.1f} ({gflop / r["patches_ms"] * 1e3:.0f})',
                 f'{r["xla_all_ms"]:.1f}', f'{r["patches_all_ms"]:.1f}',
                 '-' if r['winograd_ms'] is None else f'{r["winograd_ms"]:.1f}',
                 r['chosen']])
  rows.append(['all layers (x count)', '', *(f'{totals[k]:.1f}' for k in keys[:6]),
               f'{totals["winograd_ms"]:.1f}', f'{totals["chosen_ms"]:.1f} ms'])
  print(f'\n{bench_models.MODELS[name][2]}, batch {result["batch"]} (one of '
        f'{_DEVICES.value} devices), ms (GFLOP/s of the direct convolution\'s '
        f'work); load {common.load()}')
  print(common.table(['layer', 'count', 'forward', 'input grad',
                      'weight grad XLA', 'weight grad patches',
                      'all XLA', 'all patches', 'all Winograd',
                      'aisci takes'], rows))


def step_table() -> None:
  env = common.main_env()
  rows = []
  for spec in _MODELS.value:
    name, _, batch = spec.partition(':')
    batch = int(batch or bench_models.config_for(name).input.batch_size)
    rates = {}
    for setting in ('xla', 'patches', 'auto'):
      result = common.run_worker('benchmarks.train_step', [
          '--worker=jax', f'--model={name}', f'--num_devices={_DEVICES.value}',
          f'--batch_size={batch}', f'--repeats={_REPEATS.value}', '--warmup=2',
          f'--conv={setting}'], env=env)
      rates[setting] = batch / result['median_s']
      print(f'#   {name} batch {batch}, convolutions {setting}: '
            f'{rates[setting]:.1f} img/s (step {result["median_s"]:.3f} s, CPU '
            f'{statistics.median(result["cpu"]):.3f} s); load {common.load()}',
            flush=True)
    rows.append([bench_models.MODELS[name][2], batch, f'{rates["xla"]:.1f}',
                 f'{rates["patches"]:.1f}', f'{rates["auto"]:.1f}',
                 f'{rates["auto"] / rates["xla"]:.2f}',
                 f'{rates["auto"] / rates["patches"]:.2f}'])
  print()
  print(common.table(['model', 'batch', 'img/s XLA', 'img/s patches only',
                      'img/s aisci (Winograd + patches)', 'vs XLA',
                      'vs patches only'], rows))


def main(argv):
  del argv
  if _WORKER.value:
    common.emit(layer_worker(_NET.value))
    return
  common.header(f'convolutions, {_DEVICES.value} CPU devices')
  if 'layers' in _PARTS.value:
    for name in _NETS.value:
      layer_table(name)
  if 'steps' in _PARTS.value:
    print()
    step_table()


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  app.run(main)
