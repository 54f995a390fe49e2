"""The speed-run CNN in PyTorch eager on the same JPEG copy of CIFAR-10: the
reference for aisci's fast CNN (configs/cifar_fast.py) and its time to
accuracy, measured in the same run.

  python -m benchmarks.torch_cifar --widths=32,128,128 --torch_epochs=9.9 \\
      --config=configs/cifar_fast.py:cpu_airbench_opt --epochs=9   # 2 CPUs
  python -m benchmarks.torch_cifar --torch_epochs=9.9,20 --epochs=10,20  # GPU

The network and recipe are airbench94's (Keller Jordan, cifar10-airbench;
Page's ResNet-9 before it), rewritten here from its published recipe:

  network   a frozen 2x2 patch-whitening conv (its kernel the whitening
            transform of 5,000 training images' patches, +/- copies; its bias
            trained for 3 epochs), GELU, then three groups of conv 3x3 ->
            max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU
            (the 3x3 convs start as the identity on their first filters;
            BatchNorm scales fixed at 1, eps 1e-12, running statistics at
            momentum 0.6), max-pool 3, a linear layer scaled by 1/9;
  data      normalised; a random half mirrored once, then every image
            mirrored in odd epochs (alternating flip); random translation by
            up to 2 pixels of the reflect-padded image;
  optimizer SGD, Nesterov momentum 0.85, on the summed label-smoothed (0.2)
            cross-entropy; learning rate 11.5 and weight decay 0.0153 per
            1,024 examples in airbench's decoupled form, BatchNorm biases at
            64x the rate; a triangle schedule 0.2 -> 1 (23 % of the steps)
            -> 0.07; batch 1,024;
  lookahead from epoch 3, every 5 steps the weights move to an EMA whose
            decay rises as 0.95^5 (step / steps)^3;
  test      logits averaged over the mirror image and one-pixel shifts
            (6 views, weights 1/4 unshifted, 1/8 each shifted).

Only `--widths` (airbench94's are 64,256,256), the epochs and the batch size
change. The images are decoded with PIL into memory as aisci's image
folders are (benchmarks/gpu_cifar.py's load_split). Then aisci's `--config`
(default configs/cifar_fast.py:gpu) is trained for each of `--epochs` on
the same data and machine, as benchmarks/gpu_cifar.py trains it (its
model, optax chain, batches made on the device), and shown in the same
table (--noaisci: PyTorch only). Each run is a fresh process (JAX's and
PyTorch's thread pools do not share the cores well); aisci's runs with
the allocator `python -m aisci.main` restarts with (aisci/allocator.py),
PyTorch's with the same where that is a preloaded tcmalloc or jemalloc
(PyTorch gains from them too), else with the default malloc.

Columns: train s is the training steps only (epoch augmentation included;
decoding, whitening and evaluation apart); accuracy is on all 10,000 test
images, plain and with the test-time views.
"""

import statistics
import time

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import gpu_cifar
from benchmarks import torch_airbench

FLAGS = flags.FLAGS

# --data, --epochs, --seeds, --limit and --config (aisci's side) are
# benchmarks/gpu_cifar.py's flags, shared.
_WIDTHS = flags.DEFINE_list('widths', ['64', '256', '256'],
                            "The three groups' widths (airbench94's: "
                            '64,256,256; configs/cifar_fast.py:cpu: 32,128,128).')
_TORCH_EPOCHS = flags.DEFINE_list(
    'torch_epochs', ['9.9'], "PyTorch's run lengths in epochs, fractions "
    "allowed (airbench94's 9.9); one run each.")
_BATCH = flags.DEFINE_integer('batch_size', 1024, "PyTorch's batch size.")
_DEVICE = flags.DEFINE_string('device', '', "'cpu' or 'cuda'; '' = cuda "
                              'where there is one.')
_THREADS = flags.DEFINE_integer('threads', 0, 'torch CPU threads; 0 = '
                                "torch's default (the cores).")
# Internal: one run in this process.
_WORKER = flags.DEFINE_enum('worker', None, ['torch', 'aisci'], 'Internal.')
_RUN_EPOCHS = flags.DEFINE_string('run_epochs', None, 'Internal.')
_RUN_SEED = flags.DEFINE_integer('run_seed', 0, 'Internal.')
_AISCI = flags.DEFINE_bool(
    'aisci', True, 'Also train aisci\'s --config for each of --epochs on the '
    'same data, as benchmarks/gpu_cifar.py does.')

def _load(limit):
  start = time.perf_counter()
  train = gpu_cifar.load_split(FLAGS.data, 'train', limit)[:2]
  test = gpu_cifar.load_split(FLAGS.data, 'test', limit)[:2]
  return train, test, time.perf_counter() - start


def torch_worker(epochs: float, seed: int) -> dict:
  """One PyTorch run in this process."""
  import torch  # pylint: disable=g-import-not-at-top
  device = _DEVICE.value or ('cuda' if torch.cuda.is_available() else 'cpu')
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  # The reference runs half precision on a GPU, float32 on a CPU (where
  # torch's half/bfloat16 convolutions are slower).
  dtype = 'float16' if device.startswith('cuda') else 'float32'
  train, test, decode_s = _load(FLAGS.limit)
  result = torch_airbench.train_torch(train, test, [int(w) for w in _WIDTHS.value], epochs,
                       _BATCH.value, seed, device, dtype)
  where = (torch.cuda.get_device_name() if device.startswith('cuda')
           else f'CPU, {torch.get_num_threads()} threads')
  return dict(result, decode_s=decode_s, train_size=len(train[1]),
              test_size=len(test[1]),
              side=f'PyTorch {torch.__version__} eager, {dtype}, {where}')


def aisci_worker(epochs: float, seed: int) -> dict:
  """One run of aisci's --config in this process, as gpu_cifar.py runs it
  (whole epochs)."""
  epochs = int(epochs)
  # pylint: disable=g-import-not-at-top
  from aisci import cpu_devices
  from benchmarks import models as bench_models
  # pylint: enable=g-import-not-at-top
  # As aisci.main splits the CPU (no effect where JAX runs on a GPU).
  cpu_devices.split(*cpu_devices.choose(
      None, bench_models.load_config(FLAGS.config)))
  import jax  # pylint: disable=g-import-not-at-top
  train, test, decode_s = _load(FLAGS.limit)
  test = tuple(jax.device_put(a, jax.devices()[0]) for a in test)
  config = gpu_cifar.scaled_config(FLAGS.config, epochs, seed, len(train[1]))
  result = gpu_cifar.run(config, train, test)
  # aisci's evaluation applies the config's test-time views; no plain figure.
  device = jax.devices()[0]
  return dict(result, tta_accuracy=result['accuracy'], accuracy=None,
              decode_s=decode_s, train_size=len(train[1]),
              test_size=len(test[1]),
              side=(f'jax {jax.__version__}, {config.dtype}, '
                    f'{jax.device_count()} x {device.device_kind}'))


def main(argv):
  del argv
  if _WORKER.value:
    run = torch_worker if _WORKER.value == 'torch' else aisci_worker
    common.emit(run(float(_RUN_EPOCHS.value), _RUN_SEED.value))
    return
  widths = [int(w) for w in _WIDTHS.value]
  common.header(
      f'time to accuracy on CIFAR-10 (JPEG copy), each run a fresh process: '
      f'PyTorch eager with the airbench94 recipe at widths {widths}, batch '
      f'{_BATCH.value}' + (f', beside aisci {FLAGS.config}' if _AISCI.value
                           else ''))
  plans = [('torch', float(e)) for e in _TORCH_EPOCHS.value]
  if _AISCI.value:
    plans += [('aisci', int(e)) for e in FLAGS.epochs]
  rows = []
  for side, epochs in plans:
    results = []
    for seed in [int(s) for s in FLAGS.seeds]:
      args = [f'--worker={side}', f'--run_epochs={epochs}',
              f'--run_seed={seed}', f'--data={FLAGS.data}',
              f'--limit={FLAGS.limit}', f'--widths={",".join(_WIDTHS.value)}',
              f'--batch_size={_BATCH.value}', f'--config={FLAGS.config}',
              f'--device={_DEVICE.value}', f'--threads={_THREADS.value}']
      # Each side with its allocator (module docstring; common.main_env).
      env = common.main_env()
      result = common.run_worker(
          'benchmarks.torch_cifar', args,
          env=env if side == 'aisci' or 'LD_PRELOAD' in env else None,
          timeout=4 * 3600)
      results.append(result)
      plain = (f'{100 * result["accuracy"]:.2f} % plain, '
               if result['accuracy'] is not None else '')
      print(f'#   {side} {epochs:g} epochs ({result["steps"]} steps) seed '
            f'{seed} [{result["side"]}]: {plain}'
            f'{100 * result["tta_accuracy"]:.2f} % with TTA; train '
            f'{result["train_s"]:.1f} s, eval {result["eval_s"]:.1f} s; '
            f'{result["train_size"]} / {result["test_size"]} images decoded '
            f'in {result["decode_s"]:.1f} s; load {common.load()}', flush=True)
    plain = [100 * r['accuracy'] for r in results
             if r['accuracy'] is not None]
    tta = [100 * r['tta_accuracy'] for r in results]
    train_s = statistics.median(r['train_s'] for r in results)
    name = ('PyTorch (airbench94 recipe)' if side == 'torch'
            else f'aisci {FLAGS.config}')
    rows.append([name, f'{epochs:g}', results[0]['steps'], len(results),
                 f'{statistics.fmean(plain):.2f}' if plain else '-',
                 f'{statistics.fmean(tta):.2f}',
                 f'{min(tta):.2f}-{max(tta):.2f}', f'{train_s:.1f}',
                 f'{results[0]["train_size"] * epochs / train_s:,.0f}'])
  print()
  print(common.table(['run', 'epochs', 'steps', 'seeds', 'accuracy % (plain)',
                      'accuracy % (TTA)', 'TTA range', 'train s (median)',
                      'img/s'], rows))


if __name__ == '__main__':
  app.run(main)
