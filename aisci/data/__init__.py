"""Dataset registry: `config.dataset` -> a `Source` for one split.

`config.dataset` is either `PREFIX:ARGUMENT` with a prefix from `SOURCES`
(e.g. `imagefolder:/data/cifar10-jpeg`) or a tensorflow-datasets name
(e.g. `cifar10`). A new kind of data is one new module plus one line here.
"""

from typing import Optional, Sequence

import tensorflow as tf

from aisci.data import imagefolder
from aisci.data import tfds_source
from aisci.data.source import Source

# tf.data is only the input pipeline here: keep TensorFlow off the GPU so it
# does not take the accelerator memory that JAX needs.
tf.config.set_visible_devices([], 'GPU')

# prefix -> make_source(argument, split, **kwargs)
SOURCES = {
    'imagefolder': imagefolder.make_source,
}


def make_source(dataset: str, split: str, *, image_size: int,
                data_dir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                class_names: Optional[Sequence[str]] = None,
                cache: bool = True) -> Source:
  """This process's share of `split` of `dataset` (see module docstring)."""
  prefix, sep, argument = dataset.partition(':')
  if sep and prefix in SOURCES:
    kwargs = dict(image_size=image_size, process_index=process_index,
                  process_count=process_count, cache=cache)
    if class_names is not None:
      kwargs['class_names'] = class_names
    return SOURCES[prefix](argument, split, **kwargs)
  # A tfds name may carry a version after a colon ('cifar10:3.0.2').
  name = argument if prefix == 'tfds' else dataset
  return tfds_source.make_source(
      name, split, image_size=image_size, data_dir=data_dir,
      process_index=process_index, process_count=process_count,
      known_prefixes=sorted(SOURCES))
