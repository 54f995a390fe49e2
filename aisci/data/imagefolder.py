"""`imagefolder:PATH` — the user's own images in class sub-folders.

Layout: `PATH/<split>/<class name>/<image file>`, e.g. `PATH/train/cat/0001.jpg`
and `PATH/test/cat/0001.jpg`. Labels are the class folders' positions in the
sorted list of the training split's class folders.
"""

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from aisci.data import source as source_lib

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff')


def list_files(root: str, split: str,
               class_names: Optional[Sequence[str]] = None
               ) -> tuple[list[str], np.ndarray, list[str]]:
  """Lists (paths, labels, class_names) of one split, sorted for determinism."""
  split_dir = os.path.join(root, split)
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
  paths, labels = [], []
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue  # A class may be absent from an evaluation split.
    files = sorted(f for f in os.listdir(class_dir)
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise FileNotFoundError(
          f'Class folder {class_dir!r} holds no image files (looked for '
          f'{", ".join(IMAGE_EXTENSIONS)}): add images or remove the folder.')
    paths += [os.path.join(class_dir, f) for f in files]
    labels += [label] * len(files)
  return paths, np.asarray(labels, np.int32), list(class_names)


def load_image(path: str, image_size: int) -> np.ndarray:
  """Decodes any PIL-readable image to [image_size, image_size, 3] uint8 RGB."""
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        # 16-bit grayscale: scale to 8 bits rather than clipping.
        array = np.asarray(image, np.float64)
        image = Image.fromarray(
            (array * 255.0 / max(array.max(), 1.0)).astype(np.uint8))
      image = image.convert('RGB')
      if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(
        f'Cannot read image {path!r} ({type(e).__name__}: {e}). Replace or '
        'delete the file.') from e


def make_source(root: str, split: str, *, image_size: int,
                process_index: int = 0, process_count: int = 1,
                class_names: Optional[Sequence[str]] = None,
                cache: bool = True) -> source_lib.Source:
  """This process's share of `root/split`, resized to image_size squared.

  cache=True decodes every image once into memory (CIFAR-10: 150 MB), which
  makes every later epoch free of JPEG decoding; cache=False decodes each
  image from disk inside tf.data, for folders too large for memory.
  """
  paths, labels, class_names = list_files(root, split, class_names)
  total = len(paths)
  paths = paths[process_index::process_count]
  labels = labels[process_index::process_count]
  description = f'imagefolder {root}/{split} ({total} images)'
  if cache:
    images = np.stack([load_image(p, image_size) for p in paths])
    return source_lib.in_memory_source(images, labels, total, class_names,
                                       description)

  paths_t, labels_t = tf.constant(paths), tf.constant(labels)

  def get(index):
    data = tf.io.read_file(tf.gather(paths_t, index))
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size))
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return {'image': image, 'label': tf.gather(labels_t, index)}

  return source_lib.Source(get=get, num_examples=len(paths),
                           total_examples=total, class_names=class_names,
                           description=description)
