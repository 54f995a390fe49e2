"""`imagefolder:PATH` — the user's own images in class sub-folders.

Layout: `PATH/<split>/<class name>/<image file>`, e.g. `PATH/train/cat/0001.jpg`
and `PATH/test/cat/0001.jpg`. Labels are the class folders' positions in the
sorted list of the training split's class folders.

A file that is not a readable image (corrupt, truncated, another format) is
an error naming it; with `skip_corrupt=True` (`config.input.skip_corrupt`)
such files are left out instead, and counted in the log and the source's
description.
"""

import os
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image

from aisci.data import decoded_cache
from aisci.data import parallel_decode
from aisci.data import source as source_lib
from aisci.tf_import import tf
from aisci.train import progress as progress_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff')
# What tf.io.decode_image reads (streamed mode, cache=False): not TIFF.
_STREAMABLE_FORMATS = ('JPEG', 'PNG', 'BMP', 'GIF', 'WEBP')
# Files that operating systems drop into folders; never data.
_SYSTEM_FILES = ('thumbs.db', 'desktop.ini')
_LOGGED_SKIPS = 5  # files named in the log; the rest are only counted
_SKIP_HINT = ('or set config.input.skip_corrupt=True to leave unreadable '
              'files out (they are counted in the log)')


def _is_data_file(name: str) -> bool:
  return not name.startswith('.') and name.lower() not in _SYSTEM_FILES


def _scan(root: str, split: str, class_names: Optional[Sequence[str]]
          ) -> tuple[list[str], list[int], list[str], list[str]]:
  """(image paths, labels, class_names, paths of non-image files)."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f'Dataset folder {root!r} does not exist (config.dataset='
        f'imagefolder:{root}): check the path; it should hold '
        f'{root}/{split}/<class name>/<image files>.')
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(
        f'Dataset folder {split_dir!r} does not exist. imagefolder:{root} '
        f'expects {root}/{split}/<class name>/<image files> (and likewise '
        'for the other split); check the path, or set config.train_split / '
        'config.eval_split to the folder names you have.')
  found = sorted(d for d in os.listdir(split_dir)
                 if os.path.isdir(os.path.join(split_dir, d)))
  if not found:
    raise FileNotFoundError(
        f'{split_dir!r} has no class sub-folders: put the images of each '
        f'class in their own folder, e.g. {split_dir}/cat/0001.jpg.')
  if class_names is None:
    class_names = found
  unknown = sorted(set(found) - set(class_names))
  if unknown:
    raise ValueError(
        f'{split_dir!r} has class folders {unknown} that the training split '
        f'does not have (training classes: {list(class_names)}).')
  paths, labels, others = [], [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue  # A class may be absent from an evaluation split.
    with os.scandir(class_dir) as listing:  # is_file(): no stat call each
      entries = sorted(e.name for e in listing
                       if _is_data_file(e.name) and e.is_file())
    is_image = [f.lower().endswith(IMAGE_EXTENSIONS) for f in entries]
    files = [f for f, image in zip(entries, is_image) if image]
    others += [os.path.join(class_dir, f)
               for f, image in zip(entries, is_image) if not image]
    if not files:
      raise FileNotFoundError(
          f'Class folder {class_dir!r} holds no image files (looked for '
          f'{", ".join(IMAGE_EXTENSIONS)}): add images or remove the folder.')
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  return paths, labels, list(class_names), others


def _not_images_error(others: Sequence[str]) -> ValueError:
  shown = ', '.join(repr(p) for p in others[:3])
  more = f' and {len(others) - 3} more' if len(others) > 3 else ''
  return ValueError(
      f'{len(others)} file(s) in the class folders are not images by their '
      f'extension: {shown}{more} (image extensions: '
      f'{", ".join(IMAGE_EXTENSIONS)}). Convert or remove them, {_SKIP_HINT}.')


def list_files(root: str, split: str,
               class_names: Optional[Sequence[str]] = None, *,
               skip_corrupt: bool = False
               ) -> tuple[list[str], np.ndarray, list[str]]:
  """Lists (paths, labels, class_names) of one split, sorted for determinism.

  A file without an image extension is an error, or left out with
  skip_corrupt=True; hidden files (`.DS_Store`) are ignored.
  """
  paths, labels, class_names, others = _scan(root, split, class_names)
  if others:
    if not skip_corrupt:
      raise _not_images_error(others)
    logging.warning('Skipping %d non-image file(s) in %s/%s, e.g. %s.',
                    len(others), root, split, others[0])
  return paths, np.asarray(labels, np.int32), class_names


def _to_8_bit(image: Image.Image) -> Image.Image:
  """16-bit (and 32-bit integer) grayscale to 8 bits, by the full 16-bit range.

  The same scale for every image, so a dark 16-bit image stays dark.
  """
  array = np.clip(np.asarray(image, np.float64), 0, 65535)
  return Image.fromarray(np.round(array * (255.0 / 65535.0)).astype(np.uint8))


def load_image(path: str, image_size: int) -> np.ndarray:
  """Decodes any PIL-readable image to [image_size, image_size, 3] uint8 RGB.

  Grayscale and palette images become three equal channels, RGBA drops its
  alpha channel, 16-bit grayscale is scaled by 255/65535.
  Raises ValueError naming the file if it is not a readable image.
  """
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
        image = _to_8_bit(image)
      image = image.convert('RGB')
      if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(
        f'Cannot read image {path!r} ({type(e).__name__}: {e}). Replace or '
        'delete the file.') from e


def check_header(path: str) -> None:
  """Raises ValueError naming the file unless its header is one of an image
  format that the streamed pipeline (tf.io.decode_image) decodes."""
  try:
    with Image.open(path) as image:
      image_format = image.format
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(
        f'Cannot read image {path!r} ({type(e).__name__}: {e}). Replace or '
        'delete the file.') from e
  if image_format not in _STREAMABLE_FORMATS:
    raise ValueError(
        f'Image {path!r} is {image_format}, which config.input.cache=False '
        f'cannot decode (it reads {", ".join(_STREAMABLE_FORMATS)}): set '
        'config.input.cache=True, or convert the file.')


def _outcome(check, path: str) -> tuple[bool, object]:
  """(True, check(path)) or (False, the ValueError it raised)."""
  try:
    return True, check(path)
  except ValueError as e:
    return False, e


def _tracked(outcomes, count: int):
  return progress_lib.track(outcomes, count, 'Reading image files',
                            unit='images')  # a line every 30 s


def _keep_readable(paths: Sequence[str], labels: np.ndarray, outcomes,
                   skip_corrupt: bool) -> tuple[list[str], np.ndarray]:
  """outcomes: (True, value) or (False, ValueError) for each path, in order.

  Returns (paths, labels) of the files that passed; a failure is raised, or
  logged and left out with skip_corrupt.
  """
  kept, skipped = [], 0
  for index, (ok, value) in enumerate(outcomes):
    if ok:
      kept.append(index)
      continue
    if not skip_corrupt:
      raise ValueError(f'{value} To leave unreadable files out instead '
                       '(counted in the log), set '
                       'config.input.skip_corrupt=True.') from value.__cause__
    skipped += 1
    if skipped <= _LOGGED_SKIPS:
      logging.warning('Skipping unreadable %s (%s)', paths[index],
                      value.__cause__ or value)
  return [paths[i] for i in kept], labels[kept]


def _decoded(paths: Sequence[str], image_size: int):
  """load_image's outcome for each path: in one process per core for large
  folders (parallel_decode.py), else here, one at a time."""
  one_at_a_time = (_outcome(lambda p: load_image(p, image_size), p)
                   for p in paths)
  workers = parallel_decode.workers_for(len(paths))
  if workers < 2:
    return one_at_a_time
  start = time.perf_counter()
  logging.info('Decoding %d images in %d processes...', len(paths), workers)
  try:
    outcomes = parallel_decode.decode(paths, image_size, workers)
  except (RuntimeError, OSError) as e:  # e.g. no room for them in the temp dir
    logging.warning('Decoding in %d processes failed (%s); decoding the '
                    'images here, one at a time, instead.', workers, e)
    return one_at_a_time
  logging.info('Decoded %d images in %.1f s.', len(paths),
               time.perf_counter() - start)
  return outcomes


def _check_no_class_emptied(split: str, class_names: Sequence[str],
                            listed: Sequence[int], kept: np.ndarray) -> None:
  """A class that had images but kept none would silently vanish."""
  emptied = sorted(set(listed) - set(kept.tolist()))
  if emptied:
    names = [class_names[i] for i in emptied]
    raise ValueError(
        f'Class folder(s) {names} of split {split!r} hold no readable image '
        'once the unreadable files are skipped: add readable images or '
        'remove the folder(s).')


def make_source(root: str, split: str, *, image_size: int,
                process_index: int = 0, process_count: int = 1,
                class_names: Optional[Sequence[str]] = None,
                cache: bool = True, skip_corrupt: bool = False
                ) -> source_lib.Source:
  """This process's share of `root/split`, resized to image_size squared.

  cache=True decodes every image once into memory (CIFAR-10: 150 MB), which
  makes every later epoch free of JPEG decoding, and every later run with
  the same files too once decoded_cache.enable() was called (aisci.main
  calls it; aisci/data/decoded_cache.py); cache=False decodes each image
  from disk inside tf.data, for folders too large for memory (files are
  checked by their header at the start; damage past the header fails only
  when the file is read).
  skip_corrupt: leave unreadable and non-image files out (counted in the
    log and the description) instead of stopping at the first.
  """
  all_paths, all_labels, class_names, others = _scan(root, split, class_names)
  if others and not skip_corrupt:
    raise _not_images_error(others)
  paths = all_paths[process_index::process_count]
  labels = np.asarray(all_labels[process_index::process_count], np.int32)
  if cache:
    outcomes = decoded_cache.decoded(
        root, split, image_size, paths,
        lambda p: _tracked(_decoded(p, image_size), len(p)),
        share=(process_index, process_count))
    kept, labels = _keep_readable(paths, labels, outcomes, skip_corrupt)
  else:
    kept, labels = _keep_readable(
        paths, labels,
        _tracked((_outcome(check_header, p) for p in paths), len(paths)),
        skip_corrupt)
  unreadable = len(paths) - len(kept)
  if not kept:
    raise ValueError(f'No readable image in {root}/{split}: all {len(paths)} '
                     'files of this process are unreadable.')
  # With several processes each one checks only its share, so the split's
  # total stays the listed count (eval pads to it; its masks stay exact).
  total = len(all_paths) - unreadable if process_count == 1 else len(all_paths)
  description = f'imagefolder {root}/{split} ({total} images)'
  if others or unreadable:
    description = (f'imagefolder {root}/{split} ({total} images; skipped '
                   f'{unreadable} unreadable and {len(others)} non-image files)')
    logging.warning('Data loaded from %s/%s with %d unreadable and %d '
                    'non-image file(s) skipped (config.input.skip_corrupt); '
                    '%d images kept.', root, split, unreadable, len(others),
                    len(kept))
  if process_count == 1:
    _check_no_class_emptied(split, class_names, all_labels, labels)
  if cache:  # the readable images, already one array
    return source_lib.in_memory_source(outcomes.images, labels, total,
                                       class_names, description)

  paths_t, labels_t = tf.constant(kept), tf.constant(labels)

  def get(index):
    data = tf.io.read_file(tf.gather(paths_t, index))
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size))
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return {'image': image, 'label': tf.gather(labels_t, index)}

  return source_lib.Source(get=get, num_examples=len(kept),
                           total_examples=total, class_names=class_names,
                           description=description)
