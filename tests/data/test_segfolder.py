"""segfolder source on the real ISBI 2012 slices, joint augmentation, errors."""

import numpy as np
from PIL import Image
import pytest

from aisci import data
from aisci.data import preprocess

OPTIONS = dict(image_size=0, channels=1, class_names=('membrane', 'interior'),
               crop_size=64, augment='dihedral', mean=(0.5,), std=(0.25,))


@pytest.fixture(scope='module')
def isbi():
  from conftest import extract_shared  # pylint: disable=g-import-not-at-top
  return extract_shared('isbi2012-membrane')


@pytest.fixture(scope='module')
def val_source(isbi):
  return data.make_source(f'segfolder:{isbi}', 'val', options=OPTIONS)


def test_real_slices_and_binary_masks(isbi, val_source):
  assert val_source.kind == 'segmentation' and val_source.num_examples == 5
  example = val_source.get(np.int64(0))
  assert example['image'].shape == (512, 512, 1) and example['image'].dtype == np.uint8
  label = np.asarray(example['label'])
  # 0/255 masks read as classes 0 (membrane) and 1 (interior).
  assert set(np.unique(label)) == {0, 1}
  mask_file = np.asarray(Image.open(isbi / 'val' / 'masks' / '25.png'))
  np.testing.assert_array_equal(label, mask_file // 255)


def test_crop_flip_rotation_move_image_and_mask_together(val_source):
  # A mask that is a function of its image's pixels stays that function of
  # the augmented image only if both got the same crop, flip and rotation.
  image = np.asarray(val_source.get(np.int64(1))['image'])
  derived = (image[..., 0] > 120).astype(np.int32)
  features = {'image': image, 'label': derived}
  train_fn, _ = preprocess.make_preprocess(OPTIONS, val_source)
  seen = set()
  for k in range(12):
    out = train_fn(features, np.array([3, k], np.int64))
    out_image = np.asarray(out['image'])[..., 0] * 0.25 + 0.5  # un-normalize
    out_label = np.asarray(out['label'])
    assert out_label.shape == (64, 64) and out_label.dtype == np.int32
    np.testing.assert_array_equal(out_label, (np.rint(out_image * 255) > 120))
    np.testing.assert_allclose(np.asarray(out['class_fractions']),
                               [1 - out_label.mean(), out_label.mean()], atol=1e-6)
    seen.add(out_image.tobytes())
  assert len(seen) == 12  # random crops and orientations differ


def write_pair(root, split, name, image, mask):
  for folder, array in (('images', image), ('masks', mask)):
    (root / split / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(root / split / folder / f'{name}.png')


def test_index_masks_mismatched_sizes_and_bad_labels(tmp_path):
  image = np.full((16, 16), 100, np.uint8)
  write_pair(tmp_path, 'train', 'a', image, np.tile(np.arange(3, dtype=np.uint8), (16, 6))[:, :16])
  source = data.make_source(f'segfolder:{tmp_path}', 'train',
                            options=dict(OPTIONS, class_names=()))
  assert list(source.class_names) == ['class_0', 'class_1', 'class_2']
  with pytest.raises(ValueError, match='outside the 2 classes'):
    data.make_source(f'segfolder:{tmp_path}', 'train', options=OPTIONS)
  write_pair(tmp_path, 'val', 'b', image, np.zeros((8, 16), np.uint8))
  with pytest.raises(ValueError, match=r"(?s)Mask .*b\.png.* is 16x8 but its image"):
    data.make_source(f'segfolder:{tmp_path}', 'val', options=OPTIONS)
  (tmp_path / 'val' / 'images' / 'c.png').write_bytes(
      (tmp_path / 'val' / 'images' / 'b.png').read_bytes())
  with pytest.raises(ValueError, match=r"pair by file name.*\['c'\]"):
    data.make_source(f'segfolder:{tmp_path}', 'val', options=OPTIONS)
  with pytest.raises(FileNotFoundError, match='images/<name>.png'):
    data.make_source(f'segfolder:{tmp_path}', 'test', options=OPTIONS)
