"""Loading a trained run from its workdir alone, and predicting with it."""

import json
import shutil

import chex
import numpy as np
import pytest
import tensorflow as tf

from aisci import inference
from aisci.data import augment
from aisci.data import imagefolder

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')


def sample_test_images(root, count):
  paths, labels, _ = imagefolder.list_files(str(root), 'test')
  chosen = np.linspace(0, len(paths) - 1, count).astype(int)
  return [paths[i] for i in chosen], labels[chosen]


def test_loads_without_the_training_data(tiny_vit_run, tmp_path):
  # A copy whose dataset no longer exists: only the workdir is read.
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_vit_run, workdir)
  config = json.loads((workdir / 'config.json').read_text())
  config['dataset'] = f'imagefolder:{tmp_path}/gone'
  (workdir / 'config.json').write_text(json.dumps(config))
  trained = inference.load_trained(str(workdir))
  assert trained.step == 40
  assert trained.class_names == CIFAR10_CLASSES
  assert trained.image_size == 32
  np.testing.assert_allclose(trained.mean, (0.4914, 0.4822, 0.4465))
  assert set(trained.variables) == {'params'}  # ViT: no other collections
  chex.assert_shape(trained.variables['params']['head']['kernel'], (32, 10))


def test_loads_a_given_step(tiny_vit_run):
  latest = inference.load_trained(str(tiny_vit_run))
  earlier = inference.load_trained(str(tiny_vit_run), step=20)
  assert earlier.step == 20
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(earlier.variables, latest.variables)
  with pytest.raises(ValueError, match=r'available steps: \[20, 40\]'):
    inference.load_trained(str(tiny_vit_run), step=7)


def test_says_which_command_creates_a_missing_workdir(tiny_vit_run, tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json.*aisci.main'):
    inference.load_trained(str(tmp_path))
  for name in ('config.json', 'dataset_info.json'):
    shutil.copy(tiny_vit_run / name, tmp_path / name)
  with pytest.raises(FileNotFoundError, match='No checkpoint.*aisci.main'):
    inference.load_trained(str(tmp_path))


def test_preprocess_gives_the_numbers_of_the_tf_pipeline(tiny_vit_run,
                                                         cifar10_small):
  trained = inference.load_trained(str(tiny_vit_run))
  paths, _ = sample_test_images(cifar10_small, 8)
  images = trained.preprocess(paths)
  chex.assert_shape(images, (8, 32, 32, 3))
  chex.assert_type(images, np.float32)
  expected = augment.normalize(
      tf.constant(np.stack([imagefolder.load_image(p, 32) for p in paths])),
      trained.mean, trained.std).numpy()
  np.testing.assert_allclose(images, expected, rtol=0, atol=1e-6)


def test_predict_logits_equals_the_eval_model_in_any_batching(tiny_vit_run,
                                                              cifar10_small):
  trained = inference.load_trained(str(tiny_vit_run))
  paths, labels = sample_test_images(cifar10_small, 37)
  images = trained.preprocess(paths)
  expected = trained.model.apply(trained.variables, images, train=False)
  for batch_size in (16, 64):  # 16: the last batch of 5 is padded.
    logits = inference.predict_logits(trained, images, batch_size=batch_size)
    chex.assert_shape(logits, (37, 10))
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
  # Trained, not a constant: better than chance on real images.
  assert np.mean(logits.argmax(-1) == labels) > 0.1


def test_only_image_classification_is_supported(tiny_vit_run):
  config = inference.load_trained(str(tiny_vit_run)).config
  inference.check_image_classification(config)
  config.task.name = 'segmentation'
  with pytest.raises(NotImplementedError, match="'segmentation'"):
    inference.check_image_classification(config)
