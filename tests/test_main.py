"""The command line: config overrides are checked before anything runs."""

import os
import subprocess
import sys

from aisci import config_overrides
from configs import vit_cifar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=120):
  return subprocess.run([sys.executable, '-m', 'aisci.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_mistyped_override_names_the_nearest_field(tmp_path):
  result = run_main('--config=configs/vit_cifar.py:tiny',
                    '--config.totl_steps=5', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'totl_steps' in result.stderr
  assert 'Did you mean config.total_steps?' in result.stderr
  assert not os.listdir(tmp_path)  # failed before writing anything


def test_unknown_nested_field_is_one_line_with_the_fields_there_are(tmp_path):
  # No name is close to eval_limit: ml_collections alone raised a bare
  # AttributeError traceback here.
  result = run_main('--config=configs/vit_cifar.py:tiny',
                    '--config.input.eval_limit=256', f'--workdir={tmp_path}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  line = next(l for l in result.stderr.splitlines() if 'eval_limit' in l)
  assert "config.input has no field 'eval_limit'." in line
  fields = line.split('Its fields: ')[1].rstrip('.').split(', ')
  assert fields == sorted(vit_cifar.get_config('tiny').input.keys())


def test_missing_config_file_names_the_files_there_are(tmp_path):
  result = run_main('--config=configs/vit_cifr.py:tiny', f'--workdir={tmp_path}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert ("--config=configs/vit_cifr.py:tiny: there is no file "
          "'configs/vit_cifr.py'. Config files in configs/: ") in result.stderr
  assert 'vit_cifar.py' in result.stderr and 'resnet_cifar.py' in result.stderr


def test_unknown_field_message_walks_the_override_path():
  config = vit_cifar.get_config('tiny')
  message = config_overrides.unknown_field_message
  assert message(config, ['--config.input.batch_size=8', '--config.seed=1']) is None
  assert message(config, ['--config.seed.x=1']) == (
      "--config.seed.x=1: config.seed is a value, not a group of fields, so "
      "it has no field 'x'.")
  got = message(config, ['--config.seed=1', '--config.optimizer.lerning_rate=1'])
  assert got.startswith("--config.optimizer.lerning_rate=1: config.optimizer "
                        "has no field 'lerning_rate'. Did you mean "
                        'config.optimizer.learning_rate?'), got


def test_wrong_type_and_unknown_variant_are_errors(tmp_path):
  result = run_main('--config=configs/vit_cifar.py:tiny',
                    '--config.total_steps=many', f'--workdir={tmp_path}')
  assert result.returncode != 0 and 'total_steps' in result.stderr
  result = run_main('--config=configs/vit_cifar.py:huge', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert "Unknown variant 'huge'" in result.stderr


def _mesh_line(result):
  return next(line for line in result.stderr.splitlines() if 'Mesh {' in line)


def test_cpu_device_count_comes_from_the_config_and_the_flag_overrides_it(tmp_path):
  # A dataset that is not there stops the run right after the mesh is made.
  missing = f'--config.dataset=imagefolder:{tmp_path}/missing'
  result = run_main('--config=configs/vit_cifar.py:tiny', missing,
                    f'--workdir={tmp_path}/a')
  assert "Mesh {'data': 8} over 8 devices" in _mesh_line(result)
  assert 'CPU split into 8 devices (config.cpu_devices)' in result.stderr
  result = run_main('--config=configs/resnet_cifar.py', missing,
                    f'--workdir={tmp_path}/b')
  assert "Mesh {'data': 2} over 2 devices" in _mesh_line(result)
  result = run_main('--config=configs/resnet_cifar.py', missing, '--cpu_devices=4',
                    f'--workdir={tmp_path}/c')
  assert "Mesh {'data': 4} over 4 devices" in _mesh_line(result)
  assert 'CPU split into 4 devices (--cpu_devices)' in result.stderr


def test_bad_cpu_device_count_is_an_error_naming_the_field(tmp_path):
  result = run_main('--config=configs/vit_cifar.py:tiny', '--config.cpu_devices=0',
                    f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'config.cpu_devices must be a positive integer' in result.stderr
  assert not os.listdir(tmp_path)
