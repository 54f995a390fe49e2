"""tf.data pipelines over a `Source`: endless shuffled training batches and
padded, masked evaluation batches. Each process builds its own, holding
`global_batch_size / process_count` examples per batch.

Training example number k of this process (k = step * local_batch_size + i)
is the example at position k % used of epoch k // used, where `used` is the
number of examples per epoch, and its permutation and augmentation are
stateless functions of (seed, k): starting the pipeline at any step
reproduces exactly the batches an uninterrupted run sees from that step on.
"""

import math
from typing import Callable, Sequence

import tensorflow as tf

from aisci.data import augment as augment_lib
from aisci.data import source as source_lib

_MAX_INT64 = 2**62


def steps_per_epoch(source: source_lib.Source, local_batch_size: int,
                    process_count: int) -> int:
  """Full training batches per epoch; every process takes the same number."""
  steps = (source.total_examples // process_count) // local_batch_size
  if steps == 0:
    raise ValueError(
        f'The batch of {local_batch_size * process_count} examples is larger '
        f'than the training split ({source.total_examples} examples, '
        f'{source.description}): lower config.input.batch_size.')
  return steps


def train_dataset(source: source_lib.Source, *, local_batch_size: int,
                  process_index: int, process_count: int, seed: int,
                  start_step: int, augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                  mean: Sequence[float], std: Sequence[float]) -> tf.data.Dataset:
  """Endless batches {image: [b, h, w, c] float32, label: [b] int32}, b local."""
  used = steps_per_epoch(source, local_batch_size, process_count) * local_batch_size
  max_index = source.num_examples - 1
  augment_seed = seed + 1_000_003 * (process_index + 1)

  def example(k):
    epoch, position = k // used, k % used
    index = tf.random.experimental.index_shuffle(
        position, seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
        max_index=tf.constant(max_index, tf.int64))
    ex = source.get(index)
    image = augment(ex['image'],
                    tf.stack([tf.constant(augment_seed, tf.int64), k]))
    return {'image': augment_lib.normalize(image, mean, std),
            'label': ex['label']}

  ds = tf.data.Dataset.range(start_step * local_batch_size, _MAX_INT64)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_steps(source: source_lib.Source, local_batch_size: int,
               process_count: int) -> int:
  """Batches that cover the largest process's share; all processes agree."""
  largest_share = math.ceil(source.total_examples / process_count)
  return math.ceil(largest_share / local_batch_size)


def eval_dataset(source: source_lib.Source, *, local_batch_size: int,
                 process_count: int, mean: Sequence[float],
                 std: Sequence[float]) -> tf.data.Dataset:
  """Every example of the share once, in order, padded to whole batches.

  Yields {image: [b, h, w, c] float32, label: [b] int32, mask: [b] bool};
  padding rows repeat an example and carry mask False, so metrics that
  weight by the mask count each real example exactly once.
  """
  padded = eval_steps(source, local_batch_size, process_count) * local_batch_size
  n = source.num_examples

  def example(i):
    ex = source.get(tf.minimum(i, n - 1))
    return {'image': augment_lib.normalize(ex['image'], mean, std),
            'label': ex['label'], 'mask': i < n}

  ds = tf.data.Dataset.range(padded)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(local_batch_size).prefetch(tf.data.AUTOTUNE)
