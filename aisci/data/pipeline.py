"""tf.data pipelines over a `Source`: endless shuffled training batches and
padded, masked evaluation batches. Each process builds its own, holding
`global_batch_size / process_count` examples per batch.

Training example k (k = step * global_batch_size + row) is the example at
position k % used of epoch k // used, where `used` is the number of examples
per epoch; its permutation and augmentation are stateless functions of
(seed, k), and process p reads rows [p * local, (p + 1) * local) of each
global batch. So the training data are the same whatever the number of
processes, and starting the pipeline at any step reproduces exactly the
batches an uninterrupted run sees from that step on.
"""

from __future__ import annotations

import math

from aisci.data import preprocess as preprocess_lib
from aisci.data import source as source_lib
from aisci.tf_import import tf

_MAX_INT64 = 2**62
# Keeps augmentation seeds of existing runs unchanged (it once depended on
# the process index, with one process: seed + _AUGMENT_SEED_OFFSET).
_AUGMENT_SEED_OFFSET = 1_000_003
# Seeds each example's fixed coin of the alternating flip.
_FLIP_SEED_OFFSET = 2_000_003


def parallel_map(ds: tf.data.Dataset, fn) -> tf.data.Dataset:
  """ds.map(fn) in parallel, traced as written: AutoGraph's conversion of
  the map functions cost 0.2-0.3 s of every start (2026-12-05,
  benchmarks/README.md "Start-up"), and their Python `if`s test Python
  values only (an `if` on a tensor is an error at tracing)."""
  return ds.map(tf.autograph.experimental.do_not_convert(fn),
                num_parallel_calls=tf.data.AUTOTUNE)


def read_once(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` for a loop that reads it to its end: without tf.data's autotuning
  thread, which an iterator's deletion waits for. After an iterator had
  returned its last element, that wait lasted until the thread's next
  wake-up, seconds later: evaluation sat 7-8 s after its last batch in 3
  of 6 runs of vit_cifar.py:tiny, and in none of 6 without the thread
  (2026-12-05, 2 CPU cores, at the same 3.7-3.9 batches/s). Such loops
  (evaluation, reading a tfds split into memory) gain nothing from
  autotuning: their parallel maps then run on every core."""
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)


def steps_per_epoch(source: source_lib.Source, global_batch_size: int) -> int:
  """Full training batches per epoch of the (whole) training split."""
  steps = source.total_examples // global_batch_size
  if steps == 0:
    raise ValueError(
        f'The batch of {global_batch_size} examples is larger than the '
        f'training split ({source.total_examples} examples, '
        f'{source.description}): lower config.input.batch_size.')
  return steps


def train_dataset(source: source_lib.Source, *, local_batch_size: int,
                  process_index: int, process_count: int, seed: int,
                  start_step: int, preprocess: preprocess_lib.TrainFn,
                  alternating_flip: bool = False) -> tf.data.Dataset:
  """Endless batches of preprocessed features, [local_batch_size, ...] each.

  source: the whole training split (every process can read any example).
  alternating_flip: mirror each example's image in every other epoch, from a
    random side of its own (airbench's derandomised flip: each image is
    seen both ways within any two epochs, where random flips repeat a side
    half the time); `preprocess` must not flip as well.
  """
  if source.num_examples != source.total_examples:
    raise ValueError('train_dataset needs the whole training split (build '
                     'the source with process_count=1).')
  global_batch_size = local_batch_size * process_count
  used = steps_per_epoch(source, global_batch_size) * global_batch_size
  max_index = source.num_examples - 1
  augment_seed = seed + _AUGMENT_SEED_OFFSET

  def example(j):
    # j counts this process's examples; k is the example's global number.
    k = ((j // local_batch_size) * global_batch_size
         + process_index * local_batch_size + j % local_batch_size)
    epoch, position = k // used, k % used
    index = tf.random.experimental.index_shuffle(
        position, seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
        max_index=tf.constant(max_index, tf.int64))
    features = preprocess(source.get(index),
                          tf.stack([tf.constant(augment_seed, tf.int64), k]))
    if alternating_flip:
      coin = tf.random.stateless_uniform(
          [], seed=tf.stack([tf.constant(seed + _FLIP_SEED_OFFSET, tf.int64),
                             index]), maxval=2, dtype=tf.int64)
      image = features['image']  # [height, width, channels]
      features = dict(features, image=tf.where(
          tf.equal((coin + epoch) % 2, 1), tf.reverse(image, axis=[1]),
          image))
    return features

  ds = tf.data.Dataset.range(start_step * local_batch_size, _MAX_INT64)
  ds = parallel_map(ds, example)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_steps(source: source_lib.Source, local_batch_size: int,
               process_count: int) -> int:
  """Batches that cover the largest process's share; all processes agree."""
  largest_share = math.ceil(source.total_examples / process_count)
  return math.ceil(largest_share / local_batch_size)


def eval_dataset(source: source_lib.Source, *, local_batch_size: int,
                 process_count: int, preprocess: preprocess_lib.EvalFn
                 ) -> tf.data.Dataset:
  """Every example of this process's share once, in order, padded to whole
  batches; adds `mask` [b] bool: padding rows repeat an example and carry
  mask False, so metrics that weight by the mask count each real example
  exactly once.
  """
  padded = eval_steps(source, local_batch_size, process_count) * local_batch_size
  n = source.num_examples

  def example(i):
    features = preprocess(source.get(tf.minimum(i, n - 1)))
    return dict(features, mask=i < n)

  ds = tf.data.Dataset.range(padded)
  ds = parallel_map(ds, example)
  return read_once(ds.batch(local_batch_size).prefetch(tf.data.AUTOTUNE))
