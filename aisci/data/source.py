"""A split of a dataset, as this process sees it: random access by index.

Random access (rather than a stream) is what makes the input pipeline exactly
resumable: the example at any position of any epoch is a pure function of
(seed, position), so a restarted run continues mid-epoch without replaying.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from aisci.tf_import import tf

# What the examples of a source hold (the pipeline picks preprocessing by it):
#   image         image uint8 [h, w, c], label int32 []
#   segmentation  image uint8 [h, w, c], label int32 [h, w] (class per pixel)
#   text          tokens int32 [length] (padded with model_kwargs['pad_id']), label int32 []
#   sequence      x float32 [length, features], label int32 [] or float32 [targets]
KINDS = ('image', 'segmentation', 'text', 'sequence')


@dataclasses.dataclass(frozen=True)
class Source:
  """One split of a dataset, this process's share of it.

  Attributes:
    get: tf function, int64 index in [0, num_examples) -> dict of features
      (see KINDS); usable inside tf.data.
    num_examples: examples in this process's share.
    total_examples: examples in the split, over all processes.
    class_names: label i is class_names[i] (empty for regression targets).
    description: where the data comes from, for logs.
    kind: one of KINDS.
    input_key: the feature the model takes.
    model_kwargs: model fields the data decides (e.g. vocab_size, pad_id).
    info: what prediction needs to know about the data, without it
      (written to WORKDIR/dataset_info.json).
    load_arrays: () -> the features as numpy arrays [num_examples, ...]
      (read only: they may be the source's own), where the source holds
      them in memory (decoded, config.input.cache); None when `get` reads
      from disk. For the on-device pipeline (aisci/train/device_input.py).
  """
  get: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  num_examples: int
  total_examples: int
  class_names: Sequence[str]
  description: str
  kind: str = 'image'
  input_key: str = 'image'
  model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  load_arrays: Optional[Callable[[], Mapping[str, np.ndarray]]] = None


def in_memory_source(images: np.ndarray, labels: np.ndarray,
                     total_examples: int, class_names: Sequence[str],
                     description: str) -> Source:
  """Source over decoded arrays. images: [n, height, width, channels] uint8."""
  return array_source({'image': images, 'label': labels.astype(np.int32)},
                      total_examples=total_examples, class_names=class_names,
                      description=description)


def array_source(features: Mapping[str, np.ndarray], *, total_examples: int,
                 class_names: Sequence[str], description: str,
                 kind: str = 'image', input_key: Optional[str] = None,
                 model_kwargs: Optional[Mapping[str, Any]] = None,
                 info: Optional[Mapping[str, Any]] = None) -> Source:
  """Source over in-memory arrays with equal first dimensions [n, ...]."""
  lengths = {k: len(v) for k, v in features.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f'Features of different lengths: {lengths}.')
  arrays = _Arrays(features)
  return Source(get=arrays.get, num_examples=next(iter(lengths.values())),
                total_examples=total_examples, class_names=list(class_names),
                description=description, kind=kind,
                input_key=input_key or ('x' if kind == 'sequence' else
                                        'tokens' if kind == 'text' else 'image'),
                model_kwargs=dict(model_kwargs or {}), info=dict(info or {}),
                load_arrays=arrays.numpy)


class _Arrays:
  """Features held once on the host: as numpy arrays until tf.data first
  reads them, then as TensorFlow tensors (the numpy copy dropped). A run
  whose batches are made on the devices never imports TensorFlow."""

  def __init__(self, features: Mapping[str, np.ndarray]):
    self._numpy = dict(features)
    self._tensors = None
    self._lock = threading.Lock()

  def _tensor_dict(self):
    with self._lock:
      if self._tensors is None:
        # Eager tensors even when first read while tf.data traces a map
        # function: captured, not copied into the graph as constants.
        with tf.init_scope():
          self._tensors = {k: tf.constant(v) for k, v in self._numpy.items()}
        self._numpy = None
      return self._tensors

  def get(self, index):
    return {k: tf.gather(t, index) for k, t in self._tensor_dict().items()}

  def numpy(self) -> dict[str, np.ndarray]:
    with self._lock:
      if self._numpy is not None:
        return dict(self._numpy)
    return {k: t.numpy() for k, t in self._tensor_dict().items()}
