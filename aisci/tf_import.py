"""TensorFlow for tf.data, tf.summary and export, imported without Keras.

  from aisci.tf_import import tf

aisci never uses Keras, but `import tensorflow` (2.16 and later) imports
all of Keras 3 eagerly (`keras.src.optimizers`, so that Keras optimizers are
registered for loading SavedModels), and Keras imports matplotlib.pyplot:
`import tensorflow` took 1.6-1.9 s with it and 1.3 s without on 2 cores, a
start-up from the compilation cache ~4.5 s in all (benchmarks/README.md,
"Start-up").
TensorFlow skips that import when TF_USE_LEGACY_KERAS is set and tf_keras is
not installed, so the variable is set for the import only. `tf.keras` stays
what it was: a lazy alias that reads the variable when first used (after it
is restored) and loads Keras 3 then.

Nothing changes when TensorFlow is already imported, when the user set
TF_USE_LEGACY_KERAS, or when tf_keras is installed (there the variable would
make TensorFlow import tf_keras instead).
"""

import importlib.util
import os
import sys

_VARIABLE = 'TF_USE_LEGACY_KERAS'


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


tf = _import_skipping_keras()
