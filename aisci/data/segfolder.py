"""`segfolder:PATH` — images with per-pixel class masks, paired by file name.

Layout: `PATH/<split>/images/<name>.<ext>` and `PATH/<split>/masks/<name>.png`
(e.g. `PATH/train/images/0.png` with `PATH/train/masks/0.png`). A mask holds
one class index per pixel (0, 1, ..., as a grayscale or palette PNG), or is a
binary 0/255 mask, read as classes 0 and 1. Images and masks are decoded into
memory once.

Options (config.input): `image_size` (0 keeps the files' size; else both are
resized to it, the mask by nearest neighbour), `channels` (1 grayscale or 3
RGB), `class_names` (() names them `class_0, class_1, ...`).
"""

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from aisci.data import imagefolder
from aisci.data import source as source_lib

MASK_EXTENSIONS = ('.png', '.bmp', '.tif', '.tiff', '.gif')


def list_pairs(root: str, split: str) -> list[tuple[str, str]]:
  """(image path, mask path) pairs of one split, sorted by name."""
  image_dir = os.path.join(root, split, 'images')
  mask_dir = os.path.join(root, split, 'masks')
  for folder in (image_dir, mask_dir):
    if not os.path.isdir(folder):
      raise FileNotFoundError(
          f'Folder {folder!r} does not exist. segfolder:{root} expects '
          f'{root}/{split}/images/<name>.png with masks in '
          f'{root}/{split}/masks/<name>.png; check the path, or set '
          'config.train_split / config.eval_split to the folder names you have.')
  images = {os.path.splitext(f)[0]: f for f in os.listdir(image_dir)
            if f.lower().endswith(imagefolder.IMAGE_EXTENSIONS)}
  masks = {os.path.splitext(f)[0]: f for f in os.listdir(mask_dir)
           if f.lower().endswith(MASK_EXTENSIONS)}
  if not images:
    raise FileNotFoundError(f'{image_dir!r} holds no image files.')
  unpaired = sorted(set(images) ^ set(masks))
  if unpaired:
    raise ValueError(
        f'Images and masks of {root}/{split} must pair by file name; these '
        f'names have only one of the two: {unpaired[:10]}'
        f'{" ..." if len(unpaired) > 10 else ""}.')
  # Numeric names sort as numbers (2.png before 10.png).
  key = lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n)
  return [(os.path.join(image_dir, images[n]), os.path.join(mask_dir, masks[n]))
          for n in sorted(images, key=key)]


def _open(path: str, what: str) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
    return image
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f'Cannot read {what} {path!r} ({type(e).__name__}: {e}). '
                     'Replace or delete the file (and its pair).') from e


def load_image(path: str, channels: int, size: Optional[int]) -> np.ndarray:
  """[h, w, channels] uint8; 16-bit images are scaled to 8 bits."""
  image = _open(path, 'image')
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    array = np.asarray(image, np.float64)
    image = Image.fromarray((array * 255.0 / max(array.max(), 1.0)).astype(np.uint8))
  image = image.convert('L' if channels == 1 else 'RGB')
  if size and image.size != (size, size):
    image = image.resize((size, size), Image.BILINEAR)
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


def load_mask(path: str, size: Optional[int]) -> np.ndarray:
  """[h, w] integer values as stored; never interpolated."""
  mask = _open(path, 'mask')
  if mask.mode in ('RGB', 'RGBA'):
    array = np.asarray(mask)
    if not (array[..., :3] == array[..., :1]).all():
      raise ValueError(
          f'Mask {path!r} is a colour image: save masks as grayscale or '
          'palette PNGs holding one class index per pixel.')
    mask = Image.fromarray(array[..., 0])
  if size and mask.size != (size, size):
    mask = mask.resize((size, size), Image.NEAREST)
  return np.asarray(mask).astype(np.int64)


def make_source(root: str, split: str, *, options: Mapping[str, Any],
                workdir: Optional[str] = None, process_index: int = 0,
                process_count: int = 1,
                class_names: Optional[Sequence[str]] = None
                ) -> source_lib.Source:
  """This process's share of `root/split`; labels are [h, w] int32 masks."""
  del workdir  # unused
  channels = int(options['channels'])
  if channels not in (1, 3):
    raise ValueError(f'config.input.channels must be 1 or 3, not {channels}.')
  size = options.get('image_size') or None
  pairs = list_pairs(root, split)
  total = len(pairs)
  pairs = pairs[process_index::process_count]
  images, masks = [], []
  for image_path, mask_path in pairs:
    image = load_image(image_path, channels, size)
    mask = load_mask(mask_path, size)
    if image.shape[:2] != mask.shape:
      raise ValueError(
          f'Mask {mask_path!r} is {mask.shape[1]}x{mask.shape[0]} but its image '
          f'{image_path!r} is {image.shape[1]}x{image.shape[0]}: masks must '
          'have their image\'s size (or set config.input.image_size to resize '
          'both).')
    images.append(image)
    masks.append(mask)
  shapes = sorted({m.shape for m in masks})
  if len(shapes) > 1:
    raise ValueError(
        f'Images of {root}/{split} differ in size {shapes[:5]}: set '
        'config.input.image_size to resize them to one size.')
  masks = np.stack(masks)
  values = np.unique(masks)
  binary = set(values.tolist()) <= {0, 255} and 255 in values
  if binary:
    masks = masks // 255
  if class_names is None:
    class_names = tuple(options.get('class_names') or ())
    if not class_names:
      count = 2 if binary else int(masks.max()) + 1
      class_names = tuple(f'class_{i}' for i in range(count))
  num_classes = len(class_names)
  if masks.min() < 0 or masks.max() >= num_classes or num_classes > 256:
    bad = next(p for (_, p), m in zip(pairs, masks)
               if m.min() < 0 or m.max() >= num_classes)
    raise ValueError(
        f'Mask {bad!r} holds values {np.unique(masks).tolist()[:10]} outside '
        f'the {num_classes} classes {list(class_names)}: masks must hold class '
        'indices 0..N-1 (or 0/255 for two classes); set '
        'config.input.class_names to name all N classes.')
  info = dict(channels=channels, image_size=size or int(masks.shape[1]),
              mask_values='0/255' if binary else 'indices')
  return source_lib.array_source(
      {'image': np.stack(images), 'label': masks.astype(np.int32)},
      total_examples=total, class_names=class_names, kind='segmentation',
      description=f'segfolder {root}/{split} ({total} image/mask pairs, '
                  f'{masks.shape[2]}x{masks.shape[1]})', info=info)
