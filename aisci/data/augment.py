"""Image augmentation and normalization, as stateless tf ops.

Every random choice takes an explicit seed, so an example's augmentation is
a pure function of (run seed, example position): the property that lets a
resumed run see exactly the batches an uninterrupted run would have seen.
"""

from typing import Sequence

import tensorflow as tf


def cifar_augment(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
  """Pad-and-random-crop plus horizontal flip (He et al. 2016).

  Args:
    image: [height, width, channels] uint8.
    seed: [2] int stateless seed.
    pad: pixels of reflection padding on each side before the crop.
  Returns:
    [height, width, channels] uint8.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  height, width, channels = image.shape
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  image = tf.image.stateless_random_crop(
      padded, (height, width, channels), seed=crop_seed)
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


AUGMENTATIONS = {
    'none': lambda image, seed: image,
    'flip': flip,
    'cifar': cifar_augment,
}


def get_augmentation(name: str):
  if name not in AUGMENTATIONS:
    raise ValueError(f'Unknown config.input.augment {name!r}; known: '
                     f'{sorted(AUGMENTATIONS)}.')
  return AUGMENTATIONS[name]
