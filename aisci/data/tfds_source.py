"""A tensorflow-datasets image classification set by name (`cifar10`, ...).

The split is decoded into memory once (resized to image_size), which suits
the CIFAR- and MNIST-sized sets these configs use; the prepared files are
read from `data_dir` (or `TFDS_DATA_DIR`, or ~/tensorflow_datasets) and
downloaded there first when absent and a network is reachable.
"""

import socket
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aisci.data import source as source_lib
from aisci.train import progress as progress_lib

# tfds first tries its mirror on Google Cloud Storage.
_PROBE_HOST = 'storage.googleapis.com'


def _network_reachable(timeout: float = 5.0) -> bool:
  # tfds retries a failed download with back-off for minutes; a DNS look-up
  # tells at once whether trying is worth it.
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(timeout)
  try:
    socket.getaddrinfo(_PROBE_HOST, 443)
    return True
  except OSError:
    return False
  finally:
    socket.setdefaulttimeout(previous)


def _offline_hint(name: str, data_dir: str) -> str:
  return (
      f'To train offline, point at local data instead: '
      f'--config.dataset=imagefolder:PATH with PATH/train/<class>/*.jpg and '
      f'PATH/test/<class>/*.jpg (e.g. make train '
      f'DATASET=imagefolder:PATH), or copy a prepared tfds folder '
      f'"{name}/<version>" into {data_dir} (or set --config.data_dir / '
      'TFDS_DATA_DIR to where it is).')


def load_builder(name: str, data_dir: Optional[str],
                 known_prefixes: Sequence[str] = ()) -> tfds.core.DatasetBuilder:
  """The prepared builder for `name`, downloading it when needed and possible."""
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'Unknown dataset {name!r} in config.dataset: it is neither a '
        f'tensorflow-datasets name nor PREFIX:ARGUMENT with a known prefix '
        f'{list(known_prefixes)} (e.g. imagefolder:PATH). '
        f'(tfds says: {str(e).splitlines()[0]})') from e
  if builder.is_prepared():
    return builder
  where = str(builder.data_dir)
  if not _network_reachable():
    raise RuntimeError(
        f'tfds dataset {name!r} is not prepared in {where} and there is no '
        f'network to download it (cannot resolve {_PROBE_HOST}). '
        + _offline_hint(name, where))
  try:
    builder.download_and_prepare()
  except Exception as e:  # Any failure of tfds's download/preparation.
    raise RuntimeError(
        f'tfds could not download and prepare {name!r} into {where}: '
        f'{type(e).__name__}: {e}. ' + _offline_hint(name, where)) from e
  return builder


def make_source(name: str, split: str, *, image_size: int,
                data_dir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                known_prefixes: Sequence[str] = ()) -> source_lib.Source:
  """This process's share of a tfds split, as uint8 images in memory."""
  builder = load_builder(name, data_dir, known_prefixes)
  if split not in builder.info.splits:
    raise ValueError(f'tfds dataset {name!r} has no split {split!r}; its '
                     f'splits are {list(builder.info.splits)}.')
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'tfds dataset {name!r} has features {list(features)}; '
                     "image classification needs 'image' and 'label'.")
  total = builder.info.splits[split].num_examples
  split_part = tfds.even_splits(split, n=process_count)[process_index]
  ds = builder.as_dataset(split=split_part, shuffle_files=False)

  def prepare(example):
    image = example['image']
    if image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    image = tf.image.resize(image, (image_size, image_size))
    return (tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
            tf.cast(example['label'], tf.int32))

  images, labels = [], []
  batches = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
  for image_batch, label_batch in progress_lib.track(  # a line every 30 s
      batches.as_numpy_iterator(), total // process_count,
      f'Decoding tfds {name}:{split}', unit='images', size=lambda b: len(b[1])):
    images.append(image_batch)
    labels.append(label_batch)
  return source_lib.in_memory_source(
      np.concatenate(images), np.concatenate(labels), total,
      features['label'].names, f'tfds {name}:{split} ({total} images)')
