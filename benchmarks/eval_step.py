"""Evaluation step: images/s by evaluation batch size, on one model, and
PyTorch's twin in inference mode beside it.

  python -m benchmarks.eval_step
  python -m benchmarks.eval_step --models=vit_tiny_conv --batch_sizes=128,200,400,1000
  python -m benchmarks.eval_step --models=vit_tiny,resnet18_tiny,resnet18,vit_ti4

aisci's eval step as the loop jits it (eval mode, the config's test-time
views, the task's sums and the outputs), on a synthetic batch sharded over
the config's CPU devices; median of repeated steps after warm-up, each in a
fresh process per model and device count. The ratio column compares each
batch size with the last one given (1,000: what the CIFAR configs used
before), measured in the same run. Models with a PyTorch twin
(benchmarks/models.py) and no test-time views also get the twin's forward
pass in eval mode under torch.inference_mode() (float32, channels_last for
the CNNs, one thread per core) on the same batch, and aisci's ratio to it.
"""

import statistics

from absl import app
from absl import flags

from aisci import cpu_devices
from benchmarks import common
from benchmarks import models as bench_models

_MODELS = flags.DEFINE_list(
    'models', ['vit_tiny_conv', 'resnet18_tiny', 'resnet18'],
    f'Any of {list(bench_models.MODELS)}.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['200', '1000'],
                                 'Evaluation batch sizes; the last is the reference.')
_DEVICES = flags.DEFINE_integer(
    'devices', 0, "CPU devices, as aisci.main's --cpu_devices; 0: each "
    "model's config.cpu_devices.")
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed steps per setting (median).')
_TORCH = flags.DEFINE_bool('torch', True, "Measure PyTorch's twin too, where "
                           'the model has one and no test-time views.')
# Internal: one measurement, in this process.
_WORKER = flags.DEFINE_bool('worker', False, 'Internal.')
_MODEL = flags.DEFINE_string('model', None, 'Internal.')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Internal.')
_TORCH_WORKER = flags.DEFINE_bool('torch_worker', False, 'Internal.')


def worker() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  cpu_devices.split(_DEVICES.value, '--devices')
  eval_step, state, batch = bench_models.aisci_eval_step(_MODEL.value,
                                                         _BATCH.value)
  seconds, _, cpu = common.median_seconds(
      lambda: jax.block_until_ready(eval_step(state, batch)), warmup=2,
      repeats=_REPEATS.value)
  return dict(images_per_s=_BATCH.value / seconds,
              cpu_s=statistics.median(cpu))


def torch_worker() -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  config = bench_models.config_for(_MODEL.value, _BATCH.value)
  model, x, _ = bench_models.torch_model_and_batch(config)
  model.eval()

  def forward():
    with torch.inference_mode():
      model(x)

  seconds, _, cpu = common.median_seconds(forward, warmup=2,
                                          repeats=_REPEATS.value)
  return dict(images_per_s=_BATCH.value / seconds,
              cpu_s=statistics.median(cpu), version=torch.__version__)


def main(argv):
  del argv
  if _WORKER.value:
    common.emit(worker())
    return
  if _TORCH_WORKER.value:
    common.emit(torch_worker())
    return
  common.header('Evaluation step images/s by evaluation batch size')
  sizes = [int(b) for b in _BATCH_SIZES.value]
  rows = []
  for name in _MODELS.value:
    devices = _DEVICES.value or bench_models.cpu_devices(name)
    results = [common.run_worker('benchmarks.eval_step', [
        '--worker', f'--model={name}', f'--batch_size={size}',
        f'--devices={devices}', f'--repeats={_REPEATS.value}'],
        env=common.main_env()) for size in sizes]
    twin = _TORCH.value and bench_models.has_inference_twin(name)
    # PyTorch in the same environment as aisci (aisci.main's allocator);
    # train_step.py also times it without and keeps the faster.
    torch_results = [common.run_worker('benchmarks.eval_step', [
        '--torch_worker', f'--model={name}', f'--batch_size={size}',
        f'--repeats={_REPEATS.value}'], env=common.main_env())
                     if twin else None for size in sizes]
    reference = results[-1]['images_per_s']
    for size, result, torch_result in zip(sizes, results, torch_results):
      row = [bench_models.MODELS[name][2], devices, size,
             f"{result['images_per_s']:.0f}",
             f"{result['images_per_s'] / reference:.2f}",
             f"{result['cpu_s']:.2f}"]
      if _TORCH.value:
        row += ([f"{torch_result['images_per_s']:.0f}",
                 f"{result['images_per_s'] / torch_result['images_per_s']:.2f}"]
                if torch_result else ['-', '-'])
      rows.append(row)
  print(common.table(
      ['model', 'devices', 'eval batch', 'images/s',
       f'ratio to batch {sizes[-1]}', 'CPU s per step']
      + (['PyTorch images/s', 'ratio to PyTorch'] if _TORCH.value else []),
      rows))


if __name__ == '__main__':
  app.run(main)
