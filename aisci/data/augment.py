"""Image augmentation and normalization, as stateless tf ops.

Every random choice takes an explicit seed, so an example's augmentation is
a pure function of (run seed, example position): the property that lets a
resumed run see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
from typing import Sequence

from aisci.tf_import import tf


def cifar_augment(image: tf.Tensor, seed: tf.Tensor, pad: int = 4,
                  flip: bool = True) -> tf.Tensor:
  """Pad-and-random-crop plus horizontal flip (He et al. 2016).

  Args:
    image: [height, width, channels] uint8.
    seed: [2] int stateless seed.
    pad: pixels of reflection padding on each side before the crop.
    flip: False leaves the flip out (config.input.alternating_flip does it).
  Returns:
    [height, width, channels] uint8.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  height, width, channels = image.shape
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  image = tf.image.stateless_random_crop(
      padded, (height, width, channels), seed=crop_seed)
  if not flip:
    return image
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def normalize(image: tf.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> tf.Tensor:
  """uint8 [..., channels] -> float32 (image / 255 - mean) / std."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Random horizontal flip only: the lighter choice for short runs, which
  underfit rather than overfit."""
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def dihedral(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One of the 8 flips and 90-degree rotations, uniformly: the symmetries of
  microscopy and satellite images, which have no "up". Square images only."""
  rotate_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  k = tf.random.stateless_uniform((), rotate_seed, 0, 4, tf.int32)
  image = tf.image.rot90(image, k)
  return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def random_crop(image: tf.Tensor, seed: tf.Tensor, size: int) -> tf.Tensor:
  """A random size x size window of [height, width, channels]."""
  return tf.image.stateless_random_crop(
      image, (size, size, image.shape[-1]), seed=seed)


# name -> fn(image [h, w, c], seed [2]) -> image; geometric ones also serve
# segmentation, applied to the image and its mask stacked as channels.
AUGMENTATIONS = {
    'none': lambda image, seed: image,
    'flip': flip,
    'cifar': cifar_augment,
    # airbench's translate-by-2: short runs underfit with pad 4.
    'cifar_pad2': functools.partial(cifar_augment, pad=2),
    # The same crops without the flip, for config.input.alternating_flip.
    'crop_pad2': functools.partial(cifar_augment, pad=2, flip=False),
    'dihedral': dihedral,
}
# The ones that never mirror: config.input.alternating_flip flips on top of them.
WITHOUT_FLIP = frozenset({'none', 'crop_pad2'})


def check_alternating_flip(augment: str, data_kind: str) -> None:
  """Raises ValueError unless alternating flip (config.input.alternating_flip)
  can go on top of augmentation `augment` for data of kind `data_kind`."""
  if data_kind != 'image' or augment not in WITHOUT_FLIP:
    raise ValueError(
        'config.input.alternating_flip mirrors classification images itself: '
        f'it needs image data (not {data_kind!r}) and an augmentation '
        f'without a flip, config.input.augment in {sorted(WITHOUT_FLIP)} '
        f'(not {augment!r}).')


def get_augmentation(name: str):
  if name not in AUGMENTATIONS:
    raise ValueError(f'Unknown config.input.augment {name!r}; known: '
                     f'{sorted(AUGMENTATIONS)}.')
  return AUGMENTATIONS[name]
