"""imagefolder: listing, labels, per-process shares and clear errors."""

import numpy as np
from PIL import Image
import pytest

from aisci import data
from aisci.data import imagefolder


def write_image(path, size=(8, 8), mode='RGB', value=128):
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == 'I;16':
    Image.fromarray(np.full(size, value * 256, np.uint16)).save(path)
  else:
    Image.new(mode, size, value if mode == 'L' else (value,) * len(mode)).save(path)


def make_folder(root, counts):
  for split, per_class in counts.items():
    for name, n in per_class.items():
      for i in range(n):
        write_image(root / split / name / f'{i:03d}.png', value=10 * i)
  return root


def test_real_cifar10_listing(cifar10_dir):
  paths, labels, class_names = imagefolder.list_files(str(cifar10_dir), 'test')
  assert class_names == ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                         'frog', 'horse', 'ship', 'truck']
  assert len(paths) == 10_000
  np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
  assert paths[0].endswith('test/airplane/0000.jpg')


def test_source_decodes_real_images(cifar10_small):
  source = data.make_source(f'imagefolder:{cifar10_small}', 'test', image_size=32)
  assert source.num_examples == source.total_examples == 500
  example = source.get(np.int64(499))
  assert example['image'].shape == (32, 32, 3)
  assert example['image'].dtype == np.uint8
  assert int(example['label']) == 9
  # A real photograph is not one flat colour.
  assert np.asarray(example['image']).std() > 10


@pytest.mark.parametrize('cache', [True, False])
def test_cached_and_streamed_sources_agree(tmp_path, cache):
  root = make_folder(tmp_path, {'train': {'a': 3, 'b': 2}})
  write_image(root / 'train' / 'b' / 'gray.png', mode='L', value=77)
  source = data.make_source(f'imagefolder:{root}', 'train', image_size=8,
                            cache=cache)
  assert source.num_examples == 6
  labels = [int(source.get(np.int64(i))['label']) for i in range(6)]
  assert labels == [0, 0, 0, 1, 1, 1]
  # The grayscale file (last in b/: digits sort before letters) becomes 3
  # equal channels.
  gray = np.asarray(source.get(np.int64(5))['image'])
  np.testing.assert_array_equal(gray, np.full((8, 8, 3), 77, np.uint8))


def test_images_are_resized_and_16_bit_scaled(tmp_path):
  write_image(tmp_path / 'big.png', size=(20, 12))
  assert imagefolder.load_image(str(tmp_path / 'big.png'), 8).shape == (8, 8, 3)
  write_image(tmp_path / 'deep.png', size=(8, 8), mode='I;16', value=255)
  deep = imagefolder.load_image(str(tmp_path / 'deep.png'), 8)
  # The full 16-bit range maps to 8 bits: 65280 * 255 / 65535 = 254.
  assert deep.dtype == np.uint8 and deep.max() == 254


def test_process_shares_are_disjoint_and_complete(tmp_path):
  root = make_folder(tmp_path, {'train': {'a': 4, 'b': 3}})
  shares = [data.make_source(f'imagefolder:{root}', 'train', image_size=8,
                             process_index=i, process_count=2)
            for i in range(2)]
  assert [s.num_examples for s in shares] == [4, 3]
  assert all(s.total_examples == 7 for s in shares)


def test_missing_split_folder_names_the_layout(tmp_path):
  make_folder(tmp_path, {'train': {'a': 1}})
  with pytest.raises(FileNotFoundError, match=r'expects .*/test/<class name>'):
    data.make_source(f'imagefolder:{tmp_path}', 'test', image_size=8)


def test_empty_class_folder_is_an_error(tmp_path):
  make_folder(tmp_path, {'train': {'a': 1}})
  (tmp_path / 'train' / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match="Class folder .*empty' holds no image"):
    data.make_source(f'imagefolder:{tmp_path}', 'train', image_size=8)


def test_eval_split_with_an_unknown_class_is_an_error(tmp_path):
  make_folder(tmp_path, {'train': {'a': 1}, 'test': {'a': 1, 'zebra': 1}})
  with pytest.raises(ValueError, match=r"class folders \['zebra'\]"):
    data.make_source(f'imagefolder:{tmp_path}', 'test', image_size=8,
                     class_names=['a'])


def test_corrupt_image_names_the_file(tmp_path):
  make_folder(tmp_path, {'train': {'a': 1}})
  (tmp_path / 'train' / 'a' / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
  with pytest.raises(ValueError, match=r'Cannot read image .*broken\.jpg'):
    data.make_source(f'imagefolder:{tmp_path}', 'train', image_size=8)
