"""tfds by name: a locally prepared data set loads; no network says so."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from aisci import data
from aisci.data import tfds_source


def test_prepared_tfds_dataset_loads_from_data_dir(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), np.uint8)
  labels = np.arange(12) % 3
  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name='aisci_tiny_images', version='1.0.0', data_dir=str(tmp_path),
      split_datasets={'train': tf.data.Dataset.from_tensor_slices(
          {'image': images, 'label': labels})},
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(8, 8, 3)),
          'label': tfds.features.ClassLabel(names=['x', 'y', 'z'])}))
  del builder
  source = data.make_source('aisci_tiny_images', 'train', image_size=8,
                            data_dir=str(tmp_path))
  assert source.num_examples == 12
  assert source.class_names == ['x', 'y', 'z']
  # tfds shuffles examples when it writes them: compare as sets of pairs.
  got = sorted((int(ex['label']), np.asarray(ex['image']).tobytes())
               for ex in map(source.get, np.arange(12, dtype=np.int64)))
  assert got == sorted((int(l), im.tobytes()) for l, im in zip(labels, images))
  halves = [data.make_source('aisci_tiny_images', 'train', image_size=8,
                             data_dir=str(tmp_path), process_index=i,
                             process_count=2).num_examples for i in range(2)]
  assert halves == [6, 6]


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown dataset 'cifar1O'.*imagefolder"):
    data.make_source('cifar1O', 'train', image_size=32, data_dir=str(tmp_path))


def test_no_network_error_shows_how_to_use_local_data(tmp_path, monkeypatch):
  # '.invalid' never resolves (RFC 2606), with or without a network.
  monkeypatch.setattr(tfds_source, '_PROBE_HOST', 'aisci-test.invalid')
  with pytest.raises(RuntimeError, match='no network.*imagefolder:PATH'):
    data.make_source('cifar10', 'train', image_size=32, data_dir=str(tmp_path))


def test_prepared_tfds_text_dataset_is_tokenized(tmp_path):
  # A glue/sst2-shaped tfds set ('sentence', 'label') made from real SST-2
  # rows, as tfds would prepare it where there is a network.
  from conftest import extract_shared  # pylint: disable=g-import-not-at-top
  rows = (extract_shared('sst2') / 'train.tsv').read_text().splitlines()[1:301]
  sentences = [r.split('\t')[0] for r in rows]
  labels = np.array([int(r.split('\t')[1]) for r in rows])
  tfds.dataset_builders.store_as_tfds_dataset(
      name='aisci_tiny_sst2', version='1.0.0', data_dir=str(tmp_path),
      split_datasets={
          'train': tf.data.Dataset.from_tensor_slices(
              {'sentence': sentences[:250], 'label': labels[:250]}),
          'validation': tf.data.Dataset.from_tensor_slices(
              {'sentence': sentences[250:], 'label': labels[250:]})},
      features=tfds.features.FeaturesDict({
          'sentence': tfds.features.Text(),
          'label': tfds.features.ClassLabel(names=['negative', 'positive'])}))
  options = dict(text_column='sentence', tokenizer='wordpiece', vocab_size=500,
                 max_length=16)
  workdir = tmp_path / 'workdir'
  train = data.make_source('aisci_tiny_sst2', 'train', options=options,
                           workdir=str(workdir), data_dir=str(tmp_path))
  assert train.kind == 'text' and train.total_examples == 250
  assert train.class_names == ['negative', 'positive']
  assert (workdir / 'tokenizer.json').exists()
  valid = data.make_source('aisci_tiny_sst2', 'validation', options=options,
                           workdir=str(workdir), data_dir=str(tmp_path),
                           class_names=train.class_names)
  got = sorted(int(valid.get(np.int64(i))['label']) for i in range(50))
  assert got == sorted(labels[250:].tolist())
  tokens = np.asarray(valid.get(np.int64(0))['tokens'])
  assert tokens.shape == (16,) and tokens[0] == 1  # [CLS] first


def test_prepared_tfds_segmentation_dataset(tmp_path):
  # An oxford_iiit_pet-shaped set (image + 'segmentation_mask' holding
  # 1-based classes) made from real ISBI slices, downsized.
  from conftest import extract_shared  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = extract_shared('isbi2012-membrane') / 'val'
  images, masks = [], []
  for n in range(25, 29):
    images.append(np.asarray(Image.open(root / 'images' / f'{n}.png')
                             .convert('RGB').resize((64, 64))))
    mask = np.asarray(Image.open(root / 'masks' / f'{n}.png').resize(
        (64, 64), Image.NEAREST)) // 255 + 1
    masks.append(mask.astype(np.uint8)[..., None])
  tfds.dataset_builders.store_as_tfds_dataset(
      name='aisci_tiny_membranes', version='1.0.0', data_dir=str(tmp_path),
      split_datasets={'train': tf.data.Dataset.from_tensor_slices(
          {'image': np.stack(images), 'segmentation_mask': np.stack(masks)})},
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(64, 64, 3)),
          'segmentation_mask': tfds.features.Image(shape=(64, 64, 1))}))
  options = dict(image_size=32, channels=1, mask_feature='segmentation_mask',
                 mask_offset=1, class_names=('membrane', 'interior'))
  source = data.make_source('aisci_tiny_membranes', 'train', options=options,
                            data_dir=str(tmp_path))
  assert source.kind == 'segmentation' and source.num_examples == 4
  got = sorted(np.asarray(source.get(np.int64(i))['label']).sum() for i in range(4))
  expected = sorted((np.asarray(Image.fromarray(m[..., 0]).resize(
      (32, 32), Image.NEAREST)).astype(int) - 1).sum() for m in masks)
  # Nearest resizing in tf and PIL may pick different pixels: compare loosely.
  np.testing.assert_allclose(got, expected, rtol=0.1)
  example = source.get(np.int64(0))
  assert example['image'].shape == (32, 32, 1)
  assert set(np.unique(example['label'])) <= {0, 1}
