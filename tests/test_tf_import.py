"""aisci imports TensorFlow on first use, without Keras and matplotlib
(aisci/tf_import.py).

Each case is a fresh interpreter: what a module imports can only be seen
before anything else has imported it.
"""

import os
import subprocess
import sys

import pytest

_PROBE = '''
import os, sys
import aisci.main, aisci.train.loop  # what `python -m aisci.main` imports
print('tensorflow_at_import', 'tensorflow' in sys.modules)
from aisci.tf_import import tf
tf.data  # the first use imports it
print('loaded', sorted(m for m in ('keras', 'matplotlib', 'clu')
                       if m in sys.modules))
print('variable', os.environ.get('TF_USE_LEGACY_KERAS'))
import tensorflow as tf
print('tf.keras', tf.keras.layers.Dense.__module__.split('.')[0])
from tensorflow.keras import layers
print('tensorflow.keras', layers.Dense.__module__.split('.')[0])
'''


def _probe(**env_changes):
  env = dict(os.environ)
  env.pop('TF_USE_LEGACY_KERAS', None)
  env.update(env_changes)
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, check=True,
                       capture_output=True, text=True).stdout
  return dict(line.split(' ', 1) for line in out.splitlines())


@pytest.fixture(scope='module')
def default_probe():
  return _probe()


def test_importing_aisci_imports_no_tensorflow(default_probe):
  assert default_probe['tensorflow_at_import'] == 'False'


def test_tensorflow_comes_without_keras_nor_matplotlib(default_probe):
  assert default_probe['loaded'] == '[]'


def test_the_variable_is_set_for_the_import_only(default_probe):
  assert default_probe['variable'] == 'None'


def test_tf_keras_still_is_keras_3(default_probe):
  assert default_probe['tf.keras'] == 'keras'
  assert default_probe['tensorflow.keras'] == 'keras'


def test_a_users_own_setting_is_left_alone():
  # Set by the user (and tf_keras absent): TensorFlow's own choice, untouched.
  probe = _probe(TF_USE_LEGACY_KERAS='0')
  assert probe['variable'] == '0'
  assert "'keras'" in probe['loaded']  # TensorFlow's eager import ran
  assert probe['tf.keras'] == 'keras'


def test_without_tensorflow_the_first_use_names_the_fix():
  # As where TensorFlow is not installed: aisci imports; tf.data then fails
  # with an error that says what needs TensorFlow and how to do without.
  probe = '''
import sys
sys.modules['tensorflow'] = None
import aisci.main, aisci.train.loop
from aisci.tf_import import tf
try:
  tf.data
except ImportError as e:
  print(e)
'''
  out = subprocess.run([sys.executable, '-c', probe], check=True,
                       capture_output=True, text=True).stdout
  assert 'TensorFlow could not be imported' in out
  assert 'config.input.on_device=True' in out
