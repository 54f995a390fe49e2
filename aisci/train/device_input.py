"""Training batches made on the devices (config.input.on_device).

The decoded training split is held in device memory and every epoch is
shuffled, cropped and mirrored there, so an accelerator never waits for the
host: tf.data made ~14,000 CIFAR images/s on 2 host cores, while the fast
CNN trains at ~200,000 images/s on an H200 (benchmarks/README.md). For
image classification sets that fit on every device (CIFAR-10: 150 MB of
uint8), decoded into memory by the source (config.input.cache).

Same augmentations as aisci/data/augment.py ('none', 'flip', 'cifar',
'cifar_pad2', 'crop_pad2') and alternating flip; same epochs as
aisci/data/pipeline.py's train_dataset (a permutation each, the incomplete
last batch dropped, resumable at any step). The random numbers are JAX's,
so one seed gives another order than the tf.data path. Evaluation batches
are cut on the host, as pipeline.py's eval_dataset cuts them. No
TensorFlow is imported here, so such runs (and benchmarks/gpu_cifar.py) work
where TensorFlow is not installed.
"""

import functools
from typing import Any, Iterator, Mapping, Sequence

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from aisci.data import pipeline  # its TensorFlow is imported on first use

# config.input.augment -> (pixels of reflection padding before the crop,
# random horizontal flip).
AUGMENTS = {'none': (0, False), 'flip': (0, True), 'cifar': (4, True),
            'cifar_pad2': (2, True), 'crop_pad2': (2, False)}


def check(options: Mapping[str, Any], source: Any) -> None:
  """Raises ValueError, naming the fix, unless `source` (a split: training
  or evaluation) and the options can run without tf.data."""
  if source.kind != 'image':
    raise ValueError(
        'config.input.on_device makes image classification batches on the '
        f'devices; {source.description} holds {source.kind!r} data: set '
        'config.input.on_device=False.')
  if source.load_arrays is None:
    raise ValueError(
        'config.input.on_device needs the data decoded into memory; '
        f'{source.description} is read from disk at each step: set '
        'config.input.cache=True (or config.input.on_device=False).')
  if options.augment not in AUGMENTS:
    raise ValueError(
        f'config.input.augment={options.augment!r} has no on-device version '
        f'(config.input.on_device); use one of {sorted(AUGMENTS)}, or set '
        'config.input.on_device=False.')


def normalize(images: jax.Array, mean: Sequence[float],
              std: Sequence[float]) -> jax.Array:
  """uint8 [..., channels] -> float32 (image / 255 - mean) / std, as
  aisci/data/augment.py's normalize does in tf.data."""
  return ((images.astype(jnp.float32) / 255.0 - jnp.asarray(mean))
          / jnp.asarray(std))


def eval_batches(source: Any, options: Mapping[str, Any], *,
                 local_batch_size: int, process_count: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of an evaluation split, as aisci/data/pipeline.py's
  eval_dataset gives it, without tf.data: every example once, in order,
  normalised (float32, the same arithmetic), padded to eval_steps whole
  batches that all processes agree on; `mask` [b] is False on padding rows,
  which repeat the last example."""
  check(options, source)
  arrays = source.load_arrays()
  images, labels = arrays['image'], arrays['label']
  n = len(images)
  mean = np.asarray(options.mean, np.float32)
  std = np.asarray(options.std, np.float32)
  for step in range(pipeline.eval_steps(source, local_batch_size,
                                        process_count)):
    rows = np.arange(step * local_batch_size, (step + 1) * local_batch_size)
    taken = np.minimum(rows, n - 1)
    image = (images[taken].astype(np.float32) / np.float32(255.0) - mean) / std
    yield {'image': image, 'label': labels[taken], 'mask': rows < n}


def epoch_batches(images: jax.Array, labels: jax.Array, key: jax.Array,
                  epoch: jax.Array, flip_coins: jax.Array, *, steps: int,
                  batch_size: int, pad: int, flip: bool, alternating: bool,
                  mean: Sequence[float], std: Sequence[float]
                  ) -> tuple[jax.Array, jax.Array]:
  """One epoch, shuffled and augmented.

  images: uint8 [n, h, w, c]; labels: int32 [n]; flip_coins: int32 [n]
  (alternating flip mirrors an image in the epochs where coin + epoch is
  odd). Returns float32 images [steps, batch, h, w, c], normalised as
  augment.normalize does, and labels [steps, batch]; the n - steps * batch
  examples left over are dropped.
  """
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
  x = normalize(x, mean, std)
  return (x.reshape(steps, batch_size, h, w, -1),
          y.reshape(steps, batch_size))


def train_batches(source: Any, options: Mapping[str, Any], *,
                  batch_sharding: NamedSharding, global_batch_size: int,
                  seed: int, start_step: int
                  ) -> Iterator[dict[str, jax.Array]]:
  """Endless global batches {'image', 'label'} with `batch_sharding`, from
  step `start_step` on; every process must pass the whole split."""
  check(options, source)
  if source.num_examples != source.total_examples:
    raise ValueError('train_batches needs the whole training split (build '
                     'the source with process_count=1).')
  mesh = batch_sharding.mesh
  replicated = NamedSharding(mesh, P())
  # [steps, batch, ...]: each device makes its own rows of every batch.
  epoch_sharding = NamedSharding(mesh, P(None, *batch_sharding.spec))
  # Every process holds the whole split: each fills its own devices (no
  # transfer between hosts).
  arrays = source.load_arrays()
  images, labels = (jax.make_array_from_callback(a.shape, replicated,
                                                 lambda index, a=a: a[index])
                    for a in (arrays['image'], arrays['label']))
  del arrays  # the host copy
  steps = source.num_examples // global_batch_size
  if not steps:
    raise ValueError(
        f'{source.description} has {source.num_examples} examples, fewer '
        f'than one batch of {global_batch_size}: lower '
        'config.input.batch_size.')
  pad, flip = AUGMENTS[options.augment]
  make_epoch = jax.jit(functools.partial(
      epoch_batches, steps=steps, batch_size=global_batch_size, pad=pad,
      flip=flip, alternating=options.get('alternating_flip', False),
      mean=tuple(options.mean), std=tuple(options.std)),
                       out_shardings=(epoch_sharding, epoch_sharding))
  take = jax.jit(lambda x, y, i: {'image': x[i], 'label': y[i]},
                 out_shardings=batch_sharding)
  coin_key, epoch_key = jax.random.split(jax.random.PRNGKey(seed))
  coins = jax.jit(lambda k: jax.random.randint(k, (source.num_examples,), 0, 2),
                  out_shardings=replicated)(coin_key)
  epoch, position = divmod(start_step, steps)
  while True:
    x, y = make_epoch(images, labels, jax.random.fold_in(epoch_key, epoch),
                      epoch, coins)
    for i in range(position, steps):
      yield take(x, y, i)
    epoch, position = epoch + 1, 0
