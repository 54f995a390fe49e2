"""Per-example preprocessing by kind of data: augmentation for training,
normalization for both, as stateless tf functions for the pipeline.

Segmentation masks go through exactly the same crop, flip and rotation as
their image: both are stacked as channels of one tensor first, so the
random choices cannot differ, and the mask is never interpolated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from aisci.data import augment as augment_lib
from aisci.data import source as source_lib
from aisci.tf_import import tf

TrainFn = Callable[[dict[str, 'tf.Tensor'], 'tf.Tensor'], dict[str, 'tf.Tensor']]
EvalFn = Callable[[dict[str, 'tf.Tensor']], dict[str, 'tf.Tensor']]


def _normalize(features, options):
  features = dict(features)
  features['image'] = augment_lib.normalize(
      features['image'], tuple(options['mean']), tuple(options['std']))
  return features


def _jitter_intensity(image, seed, strength):
  """Random brightness and contrast, +-strength, on uint8 [h, w, c]: slices
  of a volume differ in staining and exposure, their geometry does not."""
  brightness_seed, contrast_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  x = tf.cast(image, tf.float32)
  mean = tf.reduce_mean(x)
  contrast = tf.random.stateless_uniform((), contrast_seed, 1 - strength, 1 + strength)
  brightness = tf.random.stateless_uniform((), brightness_seed, -strength, strength)
  x = (x - mean) * contrast + mean + 255.0 * brightness
  return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def _with_class_fractions(features, num_classes):
  # Per-example share of each class's pixels [num_classes]: a free regression
  # target for multi-task learning (e.g. membrane area of a crop).
  one_hot = tf.one_hot(features['label'], num_classes, dtype=tf.float32)
  return dict(features, class_fractions=tf.reduce_mean(one_hot, axis=(0, 1)))


def make_preprocess(options: Mapping[str, Any], source: source_lib.Source
                    ) -> tuple[TrainFn, EvalFn]:
  """(train_fn(features, seed), eval_fn(features)) for `source.kind`.

  options: config.input; reads `augment`, and for images `mean`, `std`, for
  segmentation also `crop_size` (0: no crop) and `intensity_jitter`
  (brightness/contrast strength on the image only; 0: none).
  """
  augment = augment_lib.get_augmentation(options['augment'])
  kind = source.kind
  if kind == 'image':
    def train_fn(features, seed):
      return _normalize(dict(features, image=augment(features['image'], seed)),
                        options)
    return train_fn, lambda features: _normalize(features, options)

  if kind == 'segmentation':
    crop_size = int(options['crop_size'])
    jitter = float(options.get('intensity_jitter', 0.0))
    num_classes = len(source.class_names)

    def train_fn(features, seed):
      crop_seed, augment_seed, jitter_seed = tf.unstack(
          tf.random.experimental.stateless_split(seed, num=3))
      image = features['image']
      channels = image.shape[-1]
      # Labels are < 256 (checked by the source): uint8 holds them exactly.
      both = tf.concat([image, tf.cast(features['label'], tf.uint8)[..., None]],
                       axis=-1)
      if crop_size:
        both = augment_lib.random_crop(both, crop_seed, crop_size)
      both = augment(both, augment_seed)
      image = both[..., :channels]
      if jitter:
        image = _jitter_intensity(image, jitter_seed, jitter)
      features = dict(features, image=image,
                      label=tf.cast(both[..., channels], tf.int32))
      return _with_class_fractions(_normalize(features, options), num_classes)

    def eval_fn(features):
      return _with_class_fractions(_normalize(features, options), num_classes)
    return train_fn, eval_fn

  if options['augment'] != 'none':
    raise ValueError(f"config.input.augment={options['augment']!r} is for "
                     f"images; {kind} data takes 'none'.")
  return (lambda features, seed: features), (lambda features: features)
