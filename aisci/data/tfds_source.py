"""A tensorflow-datasets image classification set by name (`cifar10`, ...).

The split is decoded into memory once (resized to image_size), which suits
the CIFAR- and MNIST-sized sets these configs use; the prepared files are
read from `data_dir` (or `TFDS_DATA_DIR`, or ~/tensorflow_datasets) and
downloaded there first when absent and a network is reachable.
"""

import socket
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from aisci import tf_import
from aisci.data import pipeline
from aisci.data import source as source_lib
from aisci.data import textfile
from aisci.tf_import import tf
from aisci.train import progress as progress_lib

# Imported through aisci first, so that TensorFlow sees no GPU before
# tensorflow-datasets starts it.
tf_import.load()
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,g-bad-import-order,wrong-import-position

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


def _text_source(builder, name, split, *, options, workdir, class_names,
                 process_index, process_count):
  """A tfds text classification split (glue/sst2, imdb_reviews), tokenized."""
  column = options['text_column']
  features = builder.info.features
  texts, labels = [], []
  for example in pipeline.read_once(builder.as_dataset(
      split=split, shuffle_files=False)).as_numpy_iterator():
    texts.append(example[column].decode('utf-8'))
    labels.append(int(example['label']))
  ids = np.asarray(labels, np.int32)
  if ids.min() < 0:
    raise ValueError(
        f'tfds {name}:{split} has unlabelled examples (label -1, e.g. GLUE\'s '
        "hidden test labels): evaluate on 'validation' instead "
        '(--config.eval_split=validation).')
  return textfile.from_texts(
      texts, ids, class_names or features['label'].names, options=options,
      workdir=workdir, is_training_split=class_names is None,
      process_index=process_index, process_count=process_count,
      description=f'tfds {name}:{split}')


def _segmentation_source(builder, name, split, *, options, class_names,
                         process_index, process_count):
  """A tfds image + mask set (e.g. oxford_iiit_pet's 'segmentation_mask'),
  resized to config.input.image_size (the mask by nearest neighbour)."""
  mask_feature = options['mask_feature']
  size = int(options['image_size'])
  channels = int(options.get('channels', 3))
  offset = int(options.get('mask_offset', 0))
  total = builder.info.splits[split].num_examples
  split_part = tfds.even_splits(split, n=process_count)[process_index]
  images, masks = [], []
  for example in pipeline.read_once(builder.as_dataset(
      split=split_part, shuffle_files=False)).as_numpy_iterator():
    image = tf.image.resize(example['image'], (size, size))
    if channels == 1 and image.shape[-1] == 3:
      image = tf.image.rgb_to_grayscale(image)
    elif channels == 3 and image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    mask = example[mask_feature]
    mask = mask if mask.ndim == 3 else mask[..., None]
    mask = tf.image.resize(mask, (size, size), method='nearest')[..., 0]
    images.append(np.asarray(tf.cast(tf.clip_by_value(tf.round(image), 0, 255),
                                     tf.uint8)))
    masks.append(np.asarray(mask, np.int64) - offset)
  masks = np.stack(masks)
  class_names = list(class_names or options.get('class_names') or [
      f'class_{i}' for i in range(int(masks.max()) + 1)])
  if masks.min() < 0 or masks.max() >= len(class_names):
    raise ValueError(
        f'tfds {name}:{split} {mask_feature!r} holds values '
        f'{sorted(set(np.unique(masks + offset).tolist()))[:10]}; minus '
        f'config.input.mask_offset={offset} they must index the '
        f'{len(class_names)} classes {class_names}.')
  return source_lib.array_source(
      {'image': np.stack(images), 'label': masks.astype(np.int32)},
      total_examples=total, class_names=class_names, kind='segmentation',
      description=f'tfds {name}:{split} ({total} image/mask pairs, {size}x{size})',
      info=dict(channels=channels, image_size=size))


def make_source(name: str, split: str, *, image_size: Optional[int] = None,
                data_dir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                known_prefixes: Sequence[str] = (),
                options: Optional[Mapping[str, Any]] = None,
                workdir: Optional[str] = None,
                class_names: Optional[Sequence[str]] = None
                ) -> source_lib.Source:
  """This process's share of a tfds split: uint8 images in memory, or, for
  a text set (a feature named config.input.text_column), tokenized texts."""
  builder = load_builder(name, data_dir, known_prefixes)
  if split not in builder.info.splits:
    raise ValueError(f'tfds dataset {name!r} has no split {split!r}; its '
                     f'splits are {list(builder.info.splits)}.')
  features = builder.info.features
  mask_feature = (options or {}).get('mask_feature')
  if 'image' in features and mask_feature and mask_feature in features:
    return _segmentation_source(builder, name, split, options=options,
                                class_names=class_names,
                                process_index=process_index,
                                process_count=process_count)
  text_column = (options or {}).get('text_column')
  if 'image' not in features and text_column in features and 'label' in features:
    return _text_source(builder, name, split, options=options, workdir=workdir,
                        class_names=class_names, process_index=process_index,
                        process_count=process_count)
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'tfds dataset {name!r} has features {list(features)}; '
                     "image classification needs 'image' and 'label', text "
                     'classification config.input.text_column '
                     f'({text_column!r}) and \'label\'.')
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
  batches = pipeline.read_once(pipeline.parallel_map(ds, prepare).batch(1024))
  for image_batch, label_batch in progress_lib.track(  # a line every 30 s
      batches.as_numpy_iterator(), total // process_count,
      f'Decoding tfds {name}:{split}', unit='images', size=lambda b: len(b[1])):
    images.append(image_batch)
    labels.append(label_batch)
  return source_lib.in_memory_source(
      np.concatenate(images), np.concatenate(labels), total,
      features['label'].names, f'tfds {name}:{split} ({total} images)')
