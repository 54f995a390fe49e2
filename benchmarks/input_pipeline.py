"""Input pipeline throughput vs what the train step consumes.

  python -m benchmarks.input_pipeline
  python -m benchmarks.input_pipeline --data=.cache/data/cifar10-jpeg --batches=100

Measures, on the CIFAR-10 JPEG folder, aisci's own data path
(aisci/data: imagefolder source, preprocess, tf.data pipeline), as
aisci/train/loop.py builds it:
  decode (cache)   first epoch: every training JPEG decoded into memory
                   (config.input.cache=True, the default);
  cached epochs    later epochs: augmented, normalized, batched from memory;
  streamed         config.input.cache=False: each image read and decoded from
                   disk inside tf.data, every epoch;
against the images/s of the ViT tiny train step (8 CPU devices, as
`aisci.main` runs it) measured in the same run, in a fresh process. The
pipeline is measured alone: in training it shares the cores with the step.
"""

import os
import time

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

_DATA = flags.DEFINE_string('data', '.cache/data/cifar10-jpeg',
                            'Image folder with train/<class>/*.jpg.')
_CONFIGS = flags.DEFINE_list(
    'configs', ['vit_tiny', 'fastcnn_cpu'],
    'Benchmark models whose config.input (augmentation, batch) to use.')
_BATCHES = flags.DEFINE_integer('batches', 60, 'Timed batches per measurement.')
_STREAM_BATCHES = flags.DEFINE_integer('stream_batches', 20,
                                       'Timed batches of the streamed mode.')
_REFERENCE = flags.DEFINE_string('reference', 'vit_tiny',
                                 'Model whose train step is the consumer.')


def source(config, cache: bool):
  from aisci import data  # pylint: disable=g-import-not-at-top
  options = dict(config.input.to_dict(), cache=cache)
  return data.make_source(f'imagefolder:{_DATA.value}', config.train_split,
                          options=options)


def batches_per_second(src, config, batches: int) -> float:
  """Batches/s of aisci's training pipeline over `src`, after a warm-up."""
  # pylint: disable=g-import-not-at-top
  from aisci.data import pipeline
  from aisci.data import preprocess as preprocess_lib
  # pylint: enable=g-import-not-at-top
  train_fn, _ = preprocess_lib.make_preprocess(config.input, src)
  iterator = pipeline.train_dataset(
      src, local_batch_size=config.input.batch_size, process_index=0,
      process_count=1, seed=0, start_step=0,
      preprocess=train_fn).as_numpy_iterator()
  for _ in range(5):  # tf.data's threads and autotuning start up
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches / (time.perf_counter() - start)


def main(argv):
  del argv
  if not os.path.isdir(os.path.join(_DATA.value, 'train')):
    raise FileNotFoundError(
        f'{_DATA.value}/train does not exist: run `make data` (extracts '
        '../shared/data/cifar10-jpeg.tar.gz into .cache/data) or pass --data.')
  common.header(f'input pipeline on {_DATA.value}')
  reference = common.run_worker('benchmarks.train_step', [
      '--worker=jax', f'--model={_REFERENCE.value}', '--num_devices=8',
      f'--batch_size={bench_models.config_for(_REFERENCE.value).input.batch_size}',
      '--warmup=3', '--repeats=10'], env=common.main_env())
  ref_config = bench_models.config_for(_REFERENCE.value)
  consumption = ref_config.input.batch_size / reference['median_s']
  print(f'#   consumer: {_REFERENCE.value} train step, 8 CPU devices: '
        f'{consumption:.1f} img/s, load {common.load()}', flush=True)

  rows = []

  def add(what, augment, batch, rate):
    rows.append([what, augment, batch, f'{rate:,.0f}',
                 f'{rate / consumption:.1f}x', common.load().split()[0]])
    print(f'#   {what} ({augment}, batch {batch}): {rate:,.0f} img/s, load '
          f'{common.load()}', flush=True)

  first = bench_models.config_for(_CONFIGS.value[0])
  from aisci import data  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  start = time.perf_counter()  # TensorFlow imported: only decoding is timed
  cached = source(first, cache=True)
  add('decode (cache), 1st epoch', 'none', '-',
      cached.num_examples / (time.perf_counter() - start))
  for name in _CONFIGS.value:
    config = bench_models.config_for(name)
    rate = batches_per_second(cached, config, _BATCHES.value)
    add(f'cached epochs ({name})', config.input.augment,
        config.input.batch_size, rate * config.input.batch_size)
  streamed = source(first, cache=False)
  rate = batches_per_second(streamed, first, _STREAM_BATCHES.value)
  add(f'streamed from disk ({_CONFIGS.value[0]})', first.input.augment,
      first.input.batch_size, rate * first.input.batch_size)
  print()
  print(common.table(['stage', 'augment', 'batch', 'images/s',
                      f'x {_REFERENCE.value} step ({consumption:.0f} img/s)',
                      'load'], rows))


if __name__ == '__main__':
  app.run(main)
