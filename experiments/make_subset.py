"""Makes an image-folder data set of a few classes of another, as symlinks.

  python experiments/make_subset.py .cache/data/cifar10-jpeg .cache/data/cat_dog cat dog

Used by the fine-tuning experiment in experiments/cifar10.md.
"""

import os
import sys


def main(source: str, target: str, classes: list[str]) -> None:
  for split in sorted(os.listdir(source)):
    if not os.path.isdir(os.path.join(source, split)):
      continue
    for name in classes:
      src = os.path.abspath(os.path.join(source, split, name))
      if not os.path.isdir(src):
        sys.exit(f'{src} does not exist.')
      dst = os.path.join(target, split, name)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      if not os.path.exists(dst):
        os.symlink(src, dst)
  print(f'{target}: classes {classes} of {source}')


if __name__ == '__main__':
  if len(sys.argv) < 4:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2], sys.argv[3:])
