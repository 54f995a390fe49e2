"""A split of a dataset, as this process sees it: random access by index.

Random access (rather than a stream) is what makes the input pipeline exactly
resumable: the example at any position of any epoch is a pure function of
(seed, position), so a restarted run continues mid-epoch without replaying.
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a dataset, this process's share of it.

  Attributes:
    get: tf function, int64 index in [0, num_examples) -> dict(image=uint8
      [height, width, channels], label=int32 []); usable inside tf.data.
    num_examples: examples in this process's share.
    total_examples: examples in the split, over all processes.
    class_names: label i is class_names[i].
    description: where the data comes from, for logs.
  """
  get: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  num_examples: int
  total_examples: int
  class_names: Sequence[str]
  description: str


def in_memory_source(images: np.ndarray, labels: np.ndarray,
                     total_examples: int, class_names: Sequence[str],
                     description: str) -> Source:
  """Source over decoded arrays. images: [n, height, width, channels] uint8."""
  images_t = tf.constant(images)
  labels_t = tf.constant(labels.astype(np.int32))

  def get(index):
    return {'image': tf.gather(images_t, index),
            'label': tf.gather(labels_t, index)}

  return Source(get=get, num_examples=len(images),
                total_examples=total_examples, class_names=list(class_names),
                description=description)
