"""Time to accuracy of the fast CNN on CIFAR-10, the data held on the device.

  python -m benchmarks.gpu_cifar --data=.cache/data/cifar10-jpeg \\
      --config=configs/cifar_fast.py:gpu --epochs=10,12,15 --target=0.94

The images are decoded once (PIL) into device memory; every epoch is
shuffled, cropped and mirrored there, as aisci/data/pipeline.py and
augment.py do it in tf.data (config.input.augment: 'cifar', 'cifar_pad2',
'crop_pad2' and alternating_flip). Everything else is aisci's own: the
config's model, task loss, optax chain and schedule, the whitening of the
first batch (aisci/train/whiten.py) and the train and eval steps jitted as
aisci/train/loop.py jits them, with the config's test-time augmentation.
Each `--epochs` value is a whole run with its own schedule (the config's
warm-up scaled to the length), as the airbench speed runs count:

  train s   the steps, from the first to the last one waited for, epoch
            augmentation included; compilation and decoding are apart;
  accuracy  the test split (10,000 images), the model at its last step.

The time to `--target` is the shortest run that reaches it. On a CPU this
runs too (slowly); tests/test_benchmarks.py runs it on a few hundred images.
"""

import concurrent.futures
import functools
import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np

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


def epoch_batches(images, labels, key, epoch, flip_coins, *, steps: int,
                  batch_size: int, pad: int, flip: bool, alternating: bool,
                  mean, std):
  """One epoch, shuffled and augmented on the device.

  images: uint8 [n, h, w, c]; flip_coins: int32 [n] (alternating flip: an
  image is mirrored in the epochs where coin + epoch is odd).
  Returns float32 images [steps, batch, h, w, c], normalised, and int32
  labels [steps, batch]; the n - steps * batch left over are dropped, as in
  aisci/data/pipeline.py.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n, h, w, _ = images.shape
  order_key, crop_key, flip_key = jax.random.split(key, 3)
  order = jax.random.permutation(order_key, n)[:steps * batch_size]
  x, y = images[order], labels[order]
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
    offsets = jax.random.randint(crop_key, (len(order), 2), 0, 2 * pad + 1)
    x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
        im, (o[0], o[1], 0), (h, w, im.shape[-1])))(x, offsets)
  if alternating:
    mirror = (flip_coins[order] + epoch) % 2 == 1
  elif flip:
    mirror = jax.random.bernoulli(flip_key, 0.5, (len(order),))
  else:
    mirror = jnp.zeros(len(order), bool)
  x = jnp.where(mirror[:, None, None, None], x[:, :, ::-1], x)
  x = (x.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)
  return (x.reshape(steps, batch_size, h, w, -1),
          y.reshape(steps, batch_size))


_AUGMENTS = {  # config.input.augment -> (crop padding, random flip)
    'none': (0, False), 'flip': (0, True), 'cifar': (4, True),
    'cifar_pad2': (2, True), 'crop_pad2': (2, False)}


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
  """Trains `config` on `train` = (images, labels) held on the device, then
  evaluates on `test`; returns accuracy and the times."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from aisci.train import steps as steps_lib
  from aisci.train import whiten
  # pylint: enable=g-import-not-at-top
  if config.input.augment not in _AUGMENTS:
    raise ValueError(f'config.input.augment={config.input.augment!r}: '
                     f'benchmarks.gpu_cifar knows {sorted(_AUGMENTS)}.')
  parts = bench_models.aisci_parts_for(config)
  batch_size = config.input.batch_size
  steps_per_epoch = len(train[1]) // batch_size
  epochs = config.total_steps // steps_per_epoch
  pad, flip = _AUGMENTS[config.input.augment]
  make_epoch = jax.jit(functools.partial(
      epoch_batches, steps=steps_per_epoch, batch_size=batch_size, pad=pad,
      flip=flip, alternating=config.input.get('alternating_flip', False),
      mean=tuple(config.input.mean), std=tuple(config.input.std)))
  train_step = jax.jit(
      functools.partial(steps_lib.train_step, model=parts['model'],
                        task=parts['task'], tx=parts['tx'],
                        schedule=parts['schedule']),
      in_shardings=(parts['state_sharding'], parts['batch_sharding']),
      out_shardings=(parts['state_sharding'], parts['replicated']),
      donate_argnums=(0,))
  eval_step = jax.jit(
      functools.partial(steps_lib.eval_step, model=parts['model'],
                        task=parts['task']),
      in_shardings=(parts['state_sharding'], parts['batch_sharding']),
      out_shardings=(parts['replicated'], parts['batch_sharding']))

  key = jax.random.PRNGKey(config.seed + 1)
  coin_key, key = jax.random.split(key)
  coins = jax.random.randint(coin_key, train[1].shape, 0, 2)
  start = time.perf_counter()
  state = parts['init'](parts['rng'])
  first_x, first_y = make_epoch(*train, jax.random.fold_in(key, 0), 0, coins)
  whiten_layer = config.init.get('whiten_layer', '')
  if whiten_layer:
    state = whiten.whiten_state(state, first_x[0], parts['tx'], whiten_layer,
                                config.init.whiten_eps)
  batch = {'image': first_x[0], 'label': first_y[0]}
  compiled_step = train_step.lower(state, batch).compile()
  eval_batch_size = min(config.input.eval_batch_size, len(test[1]))
  eval_batches = -(-len(test[1]) // eval_batch_size)
  padded = eval_batches * eval_batch_size
  mean, std = jnp.asarray(config.input.mean), jnp.asarray(config.input.std)
  test_x = (jnp.pad(test[0], ((0, padded - len(test[1])),) + ((0, 0),) * 3)
            .astype(jnp.float32) / 255.0 - mean) / std
  test_y = jnp.pad(test[1], (0, padded - len(test[1])))
  mask = jnp.arange(padded) < len(test[1])
  eval_batch = lambda i: {
      'image': test_x[i * eval_batch_size:(i + 1) * eval_batch_size],
      'label': test_y[i * eval_batch_size:(i + 1) * eval_batch_size],
      'mask': mask[i * eval_batch_size:(i + 1) * eval_batch_size]}
  compiled_eval = eval_step.lower(state, eval_batch(0)).compile()
  jax.block_until_ready((state, test_x))
  compile_s = time.perf_counter() - start

  start = time.perf_counter()
  x, y = first_x, first_y
  for epoch in range(epochs):
    if epoch:
      x, y = make_epoch(*train, jax.random.fold_in(key, epoch), epoch, coins)
    for i in range(steps_per_epoch):
      state, metrics = compiled_step(state, {'image': x[i], 'label': y[i]})
  jax.block_until_ready((state, metrics))
  train_s = time.perf_counter() - start

  start = time.perf_counter()
  confusion = sum(compiled_eval(state, eval_batch(i))[0]['confusion']
                  for i in range(eval_batches))
  confusion = np.asarray(confusion)
  eval_s = time.perf_counter() - start
  return dict(accuracy=float(np.trace(confusion) / confusion.sum()),
              train_s=train_s, eval_s=eval_s, compile_s=compile_s,
              final_loss=float(metrics['loss']), epochs=epochs,
              steps=epochs * steps_per_epoch)


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
  train = tuple(jax.device_put(a, device) for a in train)
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
