"""Time to accuracy of the fast CNN on CIFAR-10, the data held on the device.

  python -m benchmarks.gpu_cifar --data=.cache/data/cifar10-jpeg \\
      --config=configs/cifar_fast.py:gpu --epochs=10,12,15 --target=0.94

The images are decoded once (PIL) into device memory; every epoch is
shuffled, cropped and mirrored there by aisci/train/device_input.py, as
`python -m aisci.main` does with config.input.on_device (the GPU variant of
configs/cifar_fast.py sets it). The script, not aisci.main, because it
needs no TensorFlow, which the GPU machine lent here lacks. Everything else
is aisci's own: the
config's model, task loss, optax chain and schedule, the whitening of the
first batch (aisci/train/whiten.py) and the train and eval steps jitted as
aisci/train/loop.py jits them, with the config's test-time augmentation.
Each `--epochs` value is a whole run with its own schedule (the config's
warm-up scaled to the length), as the airbench speed runs count:

  train s   the steps, from the first to the last one waited for, epoch
            augmentation included; compilation and decoding are apart;
  accuracy  the test split (10,000 images), the model at its last step.

The time to `--target` is the shortest run that reaches it. On a CPU this
runs too (slowly); tests/test_benchmarks_gpu.py runs it on a few hundred images.
"""

import concurrent.futures
import os
import statistics
import time
import types

from absl import app
from absl import flags
import numpy as np

from aisci.train import device_input
from benchmarks import common
from benchmarks import models as bench_models

_DATA = flags.DEFINE_string(
    'data', '.cache/data/cifar10-jpeg',
    'CIFAR-10 as image folders: DATA/{train,test}/<class>/*.jpg (make data).')
_CONFIG = flags.DEFINE_string('config', 'configs/cifar_fast.py:gpu',
                              'Config file:variant of a classifier.')
_EPOCHS = flags.DEFINE_list('epochs', ['10'], 'Run lengths, one run each.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds: one run per seed and '
                           'length; the table gives their mean and range.')
_TARGET = flags.DEFINE_float('target', 0.94, 'Test accuracy to reach.')
_LIMIT = flags.DEFINE_integer(
    'limit', 0, 'Use only the first LIMIT images of each split (in a '
    'shuffled order), for a quick check; 0 = all.')


def _decode(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'), np.uint8)


def load_split(root: str, split: str, limit: int = 0
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(images uint8 [n, h, w, 3], labels int32 [n], class names): the
  sorted class folders of root/split, as aisci's imagefolder source reads
  them."""
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(
        f'No folder {folder}: --data must hold train/ and test/ with one '
        'folder per class (`make data` extracts CIFAR-10 to '
        '.cache/data/cifar10-jpeg).')
  classes = sorted(d for d in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, d)))
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = sorted(os.listdir(os.path.join(folder, name)))
    paths += [os.path.join(folder, name, f) for f in files]
    labels += [label] * len(files)
  if limit:
    keep = np.random.default_rng(0).permutation(len(paths))[:limit]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    images = np.stack(list(pool.map(_decode, paths, chunksize=256)))
  return images, np.asarray(labels, np.int32), classes


def scaled_config(spec: str, epochs: int, seed: int, train_size: int):
  """The config of `spec` run for `epochs` epochs of `train_size` images:
  total_steps, warm-up and evaluation interval scaled alike."""
  config = bench_models.load_config(spec)
  steps_per_epoch = train_size // config.input.batch_size
  total = epochs * steps_per_epoch
  scale = total / config.total_steps
  config.schedule.warmup_steps = round(config.schedule.warmup_steps * scale)
  config.total_steps = total
  config.seed = seed
  return config


def run(config, train, test) -> dict:
  """Trains `config` on `train` = (images, labels) in host memory, its
  batches made on the device as config.input.on_device makes them, then
  evaluates on `test` (held on the device); returns accuracy and times."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from aisci.train import loop
  from aisci.train import whiten
  # pylint: enable=g-import-not-at-top
  parts = bench_models.aisci_parts_for(config)
  # What device_input reads of an aisci.data Source (which needs TensorFlow).
  source = types.SimpleNamespace(
      kind='image', load_arrays=lambda: {'image': train[0], 'label': train[1]},
      num_examples=len(train[1]), total_examples=len(train[1]),
      description='CIFAR-10 train')
  steps_per_epoch = len(train[1]) // config.input.batch_size
  batches = device_input.train_batches(
      source, config.input, batch_sharding=parts['batch_sharding'],
      global_batch_size=config.input.batch_size, seed=config.seed,
      start_step=0)
  start = time.perf_counter()
  state = parts['init'](parts['rng'])
  batch = next(batches)
  whiten_layer = config.init.get('whiten_layer', '')
  if whiten_layer:
    state = whiten.whiten_state(state, batch['image'], parts['tx'],
                                whiten_layer, config.init.whiten_eps)
  compiled_step = parts['train_step'].lower(state, batch).compile()
  eval_batch_size = min(config.input.eval_batch_size, len(test[1]))
  eval_batches = -(-len(test[1]) // eval_batch_size)
  padded = eval_batches * eval_batch_size
  test_x = device_input.normalize(
      jnp.pad(test[0], ((0, padded - len(test[1])),) + ((0, 0),) * 3),
      config.input.mean, config.input.std)
  test_y = jnp.pad(test[1], (0, padded - len(test[1])))
  mask = jnp.arange(padded) < len(test[1])
  # Sharded as the loop shards batches (over all devices: 8 on a CPU split
  # as aisci.main splits it).
  eval_batch = lambda i: jax.device_put({
      'image': test_x[i * eval_batch_size:(i + 1) * eval_batch_size],
      'label': test_y[i * eval_batch_size:(i + 1) * eval_batch_size],
      'mask': mask[i * eval_batch_size:(i + 1) * eval_batch_size]},
                                        parts['batch_sharding'])
  compiled_eval = parts['eval_step'].lower(state, eval_batch(0)).compile()
  jax.block_until_ready((state, test_x))
  compile_s = time.perf_counter() - start

  start = time.perf_counter()
  pending = []
  for step in range(config.total_steps):
    if step:  # step 0 trains on the batch the compilation saw
      batch = next(batches)
    state, metrics = compiled_step(state, batch)
    # Bounded run-ahead, as the loop's: XLA:CPU split into devices hangs
    # when too many steps are queued (aisci/train/loop.py).
    pending.append(metrics)
    if len(pending) > loop.MAX_STEPS_AHEAD:
      jax.block_until_ready(pending.pop(0))
  jax.block_until_ready((state, metrics))
  train_s = time.perf_counter() - start

  start = time.perf_counter()
  confusion = sum(compiled_eval(state, eval_batch(i))[0]['confusion']
                  for i in range(eval_batches))
  confusion = np.asarray(confusion)
  eval_s = time.perf_counter() - start
  return dict(accuracy=float(np.trace(confusion) / confusion.sum()),
              train_s=train_s, eval_s=eval_s, compile_s=compile_s,
              final_loss=float(metrics['loss']),
              epochs=config.total_steps // steps_per_epoch,
              steps=config.total_steps)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  train = load_split(_DATA.value, 'train', _LIMIT.value)[:2]
  test = load_split(_DATA.value, 'test', _LIMIT.value)[:2]
  decode_s = time.perf_counter() - start
  device = jax.devices()[0]
  common.header(
      f'time to accuracy, {_CONFIG.value} on {device.device_kind} '
      f'(jax {jax.__version__}); {len(train[1])} train / {len(test[1])} test '
      f'images decoded in {decode_s:.1f} s, held on the device')
  test = tuple(jax.device_put(a, device) for a in test)
  rows, reached = [], []
  for epochs in [int(e) for e in _EPOCHS.value]:
    results = []
    for seed in [int(s) for s in _SEEDS.value]:
      config = scaled_config(_CONFIG.value, epochs, seed, len(train[1]))
      result = run(config, train, test)
      results.append(result)
      print(f'#   {epochs} epochs ({result["steps"]} steps) seed {seed}: '
            f'accuracy {100 * result["accuracy"]:.2f} %, train '
            f'{result["train_s"]:.1f} s, eval {result["eval_s"]:.1f} s, '
            f'compile {result["compile_s"]:.1f} s, last loss '
            f'{result["final_loss"]:.3f}', flush=True)
    accuracies = [100 * r['accuracy'] for r in results]
    train_s = statistics.median(r['train_s'] for r in results)
    mean_accuracy = statistics.fmean(accuracies)
    if mean_accuracy >= 100 * _TARGET.value:
      reached.append((train_s, epochs))
    rows.append([epochs, len(results), f'{mean_accuracy:.2f}',
                 f'{min(accuracies):.2f}-{max(accuracies):.2f}',
                 f'{train_s:.1f}',
                 f'{len(train[1]) * epochs / train_s:,.0f}'])
  print()
  print(common.table(['epochs', 'runs', 'accuracy % (mean)', 'range',
                      'train s (median)', 'img/s'], rows))
  if reached:
    train_s, epochs = min(reached)
    print(f'# time to {100 * _TARGET.value:g} %: {train_s:.1f} s '
          f'({epochs} epochs, mean over seeds)')
  else:
    print(f'# {100 * _TARGET.value:g} % not reached by the mean of any '
          'run length')


if __name__ == '__main__':
  app.run(main)
