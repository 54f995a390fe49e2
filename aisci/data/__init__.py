"""Dataset registry: `config.dataset` -> a `Source` for one split.

`config.dataset` is either `PREFIX:ARGUMENT` with a prefix from `SOURCES`
(e.g. `imagefolder:/data/cifar10-jpeg`, `segfolder:/data/isbi`,
`tsv:/data/sst2`, `npz:/data/signals.npz`) or a tensorflow-datasets name
(e.g. `cifar10`). A new kind of data is one new module plus one line here.
"""

from typing import Any, Mapping, Optional, Sequence

from aisci.data import imagefolder
from aisci.data import npz_source
from aisci.data import segfolder
from aisci.data import textfile
from aisci.data.source import Source


def _imagefolder(argument, split, *, options, workdir, **kwargs):
  del workdir  # unused
  return imagefolder.make_source(argument, split,
                                 image_size=options['image_size'],
                                 cache=options.get('cache', True),
                                 skip_corrupt=options.get('skip_corrupt', False),
                                 **kwargs)


# prefix -> make_source(argument, split, *, options, workdir, process_index,
#                       process_count, class_names=...)
SOURCES = {
    'imagefolder': _imagefolder,
    'segfolder': segfolder.make_source,
    'tsv': textfile.make_source,
    'csv': textfile.make_source,
    'npz': npz_source.make_source,
}


def make_source(dataset: str, split: str, *, image_size: Optional[int] = None,
                options: Optional[Mapping[str, Any]] = None,
                workdir: Optional[str] = None,
                data_dir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                class_names: Optional[Sequence[str]] = None,
                cache: bool = True) -> Source:
  """This process's share of `split` of `dataset` (see module docstring).

  options: config.input (each source reads the fields it documents);
    `image_size` and `cache` stand in for it where it is not given.
  workdir: where sources keep what they learn from the training split
    (the text tokenizer), reused for the other splits and for prediction.
  """
  options = dict(options if options is not None else
                 dict(image_size=image_size, cache=cache))
  prefix, sep, argument = dataset.partition(':')
  if sep and prefix in SOURCES:
    if prefix in ('tsv', 'csv'):
      options.setdefault('delimiter', '\t' if prefix == 'tsv' else ',')
    kwargs = dict(options=options, workdir=workdir,
                  process_index=process_index, process_count=process_count)
    if class_names is not None:
      kwargs['class_names'] = class_names
    return SOURCES[prefix](argument, split, **kwargs)
  # A tfds name may carry a version after a colon ('cifar10:3.0.2').
  name = argument if prefix == 'tfds' else dataset
  # Imported here: tensorflow-datasets adds ~0.3 s to every start-up, and
  # runs on local folders never need it.
  from aisci.data import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.make_source(
      name, split, image_size=options.get('image_size'), data_dir=data_dir,
      process_index=process_index, process_count=process_count,
      known_prefixes=sorted(SOURCES), options=options, workdir=workdir,
      class_names=class_names)
