"""The command line: config overrides are checked before anything runs."""

import os
import subprocess
import sys

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
  assert 'Did you mean "total_steps"' in result.stderr
  assert not os.listdir(tmp_path)  # failed before writing anything


def test_wrong_type_and_unknown_variant_are_errors(tmp_path):
  result = run_main('--config=configs/vit_cifar.py:tiny',
                    '--config.total_steps=many', f'--workdir={tmp_path}')
  assert result.returncode != 0 and 'total_steps' in result.stderr
  result = run_main('--config=configs/vit_cifar.py:huge', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert "Unknown variant 'huge'" in result.stderr
