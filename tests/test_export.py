"""Each export format, run the way its users run it, against the JAX model."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import chex
import jax
import ml_collections
import numpy as np
import pytest

from aisci import export
from aisci import export_check
from aisci import inference
from aisci import models
from aisci.train import steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained(tiny_vit_run):
  return inference.load_trained(str(tiny_vit_run))


@pytest.fixture(scope='module')
def test_images(trained):
  """200 real test images, 20 per class, and the JAX model's logits."""
  images, _ = export.dataset_images(trained, 'test', 200)
  chex.assert_shape(images, (200, 32, 32, 3))
  return images, inference.predict_logits(trained, images)


def assert_gives_logits(run, images, reference):
  np.testing.assert_allclose(run(images), reference, rtol=0, atol=1e-4)
  # Any batch size: symbolic (stablehlo, savedmodel, onnx) or a fixed batch
  # of 1 that the runner loops over (tflite).
  np.testing.assert_allclose(run(images[:3]), reference[:3], rtol=0,
                             atol=1e-4)


@pytest.mark.parametrize('fmt', ['stablehlo', 'savedmodel', 'tflite', 'onnx'])
def test_float_formats_give_the_logits_of_jax(fmt, trained, test_images,
                                              tmp_path):
  if fmt == 'onnx':
    pytest.importorskip('jax2onnx')
    pytest.importorskip('onnxruntime')
  images, reference = test_images
  path = export.export(trained, fmt, str(tmp_path))  # all --platforms
  assert_gives_logits(export_check.RUNNERS[fmt](path), images, reference)
  with open(os.path.join(tmp_path, fmt, 'preprocessing.json')) as f:
    info = json.load(f)
  assert info['class_names'] == list(trained.class_names)
  assert (info['image_size'], info['mean'], info['std']) == (
      32, list(trained.mean), list(trained.std))
  assert info['input']['shape'][1:] == [32, 32, 3]


def test_onnx_of_a_resnet_gives_the_logits_of_jax(trained, test_images,
                                                  tmp_path, apply):
  """A CNN with BatchNorm and residual adds: jax2onnx lays it out as NCHW
  and its recorded shapes must not contradict that (onnxruntime refused
  such a file before export_onnx inferred the shapes anew)."""
  pytest.importorskip('jax2onnx')
  pytest.importorskip('onnxruntime')
  config = trained.config.copy_and_resolve_references()
  config.model = ml_collections.ConfigDict(dict(
      name='resnet', depth=18, stem='cifar', width=8,
      zero_init_last_bn=False))
  model = models.build_model(config.model, num_classes=10)
  images, _ = test_images
  variables = steps.init_variables(model, jax.random.PRNGKey(0), images[:2],
                                   train=False)
  # Running statistics of real images, so that BatchNorm is not identity.
  _, stats = apply(model, variables, images, train=True,
                   mutable=('batch_stats',))
  variables = dict(variables, **stats)
  resnet = dataclasses.replace(trained, config=config, model=model,
                               variables=variables)
  reference = inference.predict_logits(resnet, images)
  path = export.export(resnet, 'onnx', str(tmp_path))
  assert_gives_logits(export_check.RUNNERS['onnx'](path), images, reference)


def test_int8_tflite_agrees_with_jax(trained, test_images, tmp_path):
  images, reference = test_images
  calibration = export.calibration_images(trained, 200)
  path = export.export(trained, 'tflite_int8', str(tmp_path),
                       calibration=calibration)
  logits = export_check.tflite_runner(path)(images)
  result = export_check.compare(reference, logits)
  # Measured on this run: 98% agreement, max |diff| 0.06 for logits that
  # span about 2. The tiny model's top-2 logits are often close, so a few
  # of 200 flip; 95% leaves room for TFLite version changes.
  assert result['top1_agreement'] >= 0.95, result
  assert result['max_abs_diff'] < 0.3, result
  float_path = export.export(trained, 'tflite', str(tmp_path / 'float'))
  assert os.path.getsize(path) < os.path.getsize(float_path)


def test_dynamic_range_tflite_has_int8_weights_and_float_accuracy(
    trained, test_images, tmp_path):
  images, reference = test_images
  path = export.export(trained, 'tflite_dynamic', str(tmp_path))
  result = export_check.compare(reference,
                                export_check.tflite_runner(path)(images))
  assert result['top1_agreement'] >= 0.99, result
  assert result['max_abs_diff'] < 0.1, result
  float_path = export.export(trained, 'tflite', str(tmp_path / 'float'))
  # int8 weights: 0.54 of the float file here, where tensors of fewer than
  # 1024 values stay float and the flatbuffer's own bytes weigh; 0.31 for
  # the CIFAR-10 models of experiments/compression.md.
  assert os.path.getsize(path) < 0.6 * os.path.getsize(float_path)


def test_cli_exports_and_prints_the_table(tiny_vit_run, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'aisci.export', f'--workdir={tiny_vit_run}',
       '--format=stablehlo', f'--output_dir={tmp_path}', '--platforms=cpu',
       '--eval_images=50'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.exists(tmp_path / 'stablehlo' / 'model.jax_exported')
  # Start and end of each phase, with times.
  assert 'Exporting stablehlo...' in result.stdout
  assert re.search(r'Wrote .*model.jax_exported in \d+\.\d s', result.stdout)
  assert re.search(r'stablehlo: \d+\.\d s', result.stdout)
  rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
  assert rows['format'][-1] == 'accuracy'
  assert rows['stablehlo'][-2] == '100.00%'  # top-1 agreement
  assert rows['stablehlo'][-1] == rows['jax'][-1]  # same accuracy


def test_unknown_format_and_task_are_errors(trained, tmp_path):
  with pytest.raises(ValueError, match='Unknown export format'):
    export.export(trained, 'coreml', str(tmp_path))
  config = trained.config.copy_and_resolve_references()
  config.task.name = 'segmentation'
  segmenter = dataclasses.replace(trained, config=config)
  with pytest.raises(NotImplementedError, match="'segmentation'"):
    export.export(segmenter, 'stablehlo', str(tmp_path))
