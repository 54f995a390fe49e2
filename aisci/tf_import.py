"""TensorFlow for tf.data, tensorflow-datasets and export: imported on first
use, without Keras, and kept off the GPU.

  from aisci.tf_import import tf   # nothing imported yet
  tf.data.Dataset.range(3)         # TensorFlow is imported here

Importing TensorFlow takes 2-3 s on 2 cores, a third of a start-up from the
compilation cache (benchmarks/README.md, "Start-up"), and a run whose
batches are made on the devices (config.input.on_device) needs none of it:
such runs neither wait for it nor need it installed (the lent GPU machines
have no TensorFlow). So `tf` is a stand-in module that imports TensorFlow
when one of its attributes is first read.

Keras: aisci never uses it, but `import tensorflow` (2.16 and later)
imports all of Keras 3 eagerly (`keras.src.optimizers`, so that Keras
optimizers are registered for loading SavedModels), and Keras imports
matplotlib.pyplot: 0.3-0.6 s more. TensorFlow skips that import when
TF_USE_LEGACY_KERAS is set and tf_keras is not installed, so the variable
is set for the import only. `tf.keras` stays what it was: a lazy alias that
reads the variable when first used (after it is restored) and loads Keras 3
then. Nothing changes when TensorFlow is already imported, when the user
set TF_USE_LEGACY_KERAS, or when tf_keras is installed (there the variable
would make TensorFlow import tf_keras instead).

GPU: tf.data is only the input pipeline here, so TensorFlow is kept off the
GPU, whose memory JAX needs.
"""

import importlib.util
import os
import sys
import threading
import types

_VARIABLE = 'TF_USE_LEGACY_KERAS'
_lock = threading.Lock()
_module = None


def _import_skipping_keras():
  """`import tensorflow`, without its eager import of Keras where safe."""
  if ('tensorflow' in sys.modules or _VARIABLE in os.environ
      or importlib.util.find_spec('tf_keras') is not None):
    import tensorflow  # pylint: disable=g-import-not-at-top
    return tensorflow
  os.environ[_VARIABLE] = '1'
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top
  finally:
    del os.environ[_VARIABLE]
  return tensorflow


def load() -> types.ModuleType:
  """The tensorflow module, imported (once) if it is not yet."""
  global _module
  with _lock:
    if _module is None:
      try:
        module = _import_skipping_keras()
      except ImportError as e:
        raise ImportError(
            f'TensorFlow could not be imported ({e}). aisci needs it for '
            'tf.data input pipelines, tensorflow-datasets and export: '
            "install it (`pip install -e .` installs tensorflow-cpu), or "
            'train image classification with config.input.on_device=True, '
            'which needs no TensorFlow.') from e
      try:
        module.config.set_visible_devices([], 'GPU')
      except RuntimeError:  # the user's own TensorFlow code started it first
        pass
      _module = module
    return _module


class _LazyTensorFlow(types.ModuleType):
  """Stands in for the tensorflow module; imports it on first attribute read."""

  def __getattr__(self, name):
    return getattr(load(), name)

  def __dir__(self):
    return dir(load())


tf = _LazyTensorFlow('tensorflow', 'TensorFlow, imported on first use.')
