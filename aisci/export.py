"""Export a trained classifier to files that run without this codebase.

    python -m aisci.export --workdir=runs/tiny --format=stablehlo,tflite \
        [--output_dir=WORKDIR/export] [--eval_images=500]

Every artefact takes `images`: float32 [batch, image_size, image_size, 3],
already preprocessed as in training: RGB, resized (bilinear) to image_size,
then (x / 255 - mean) / std per channel. It returns `logits`: float32
[batch, num_classes] (softmax them for probabilities). The numbers needed
for that preprocessing, and the class names, are written beside each
artefact in OUTPUT_DIR/FORMAT/preprocessing.json.

Formats (each in OUTPUT_DIR/FORMAT/):
  stablehlo    model.jax_exported: jax.export serialization, symbolic batch,
               lowered for --platforms; load with jax.export.deserialize.
  savedmodel   a TensorFlow SavedModel (via jax2tf), signature
               serving_default(images) -> {'logits'}, symbolic batch.
  tflite       model.tflite, float32, from that SavedModel.
  tflite_int8  model.tflite, int8 post-training quantization calibrated on
               --calibration_images training images; float32 input and
               output, so preprocessing is unchanged.
  tflite_dynamic
               model.tflite, dynamic-range quantization: int8 weights (the
               same size as tflite_int8), activations quantized on the fly
               per input, no calibration; closer to the float model than
               tflite_int8 (experiments/compression.md), but slower than
               full-integer kernels on integer-only hardware.
  onnx         model.onnx (opset 21, symbolic batch) via jax2onnx, an
               optional dependency: pip install jax2onnx==0.13.0.

Each export is checked by running the artefact on the same images as the
JAX model (aisci/export_check.py) and printing a comparison table.
"""

import contextlib
import io
import json
import logging as logging_std
import os
import tempfile
import time
import warnings
from typing import Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from aisci import export_check
from aisci import inference
from aisci import tf_import
from aisci.data import imagefolder
from aisci.models import conv
from aisci.tf_import import tf

FORMATS = ('stablehlo', 'savedmodel', 'tflite', 'tflite_int8',
           'tflite_dynamic', 'onnx')
ARTEFACTS = {'stablehlo': 'model.jax_exported', 'savedmodel': '',  # itself
             'tflite': 'model.tflite', 'tflite_int8': 'model.tflite',
             'tflite_dynamic': 'model.tflite', 'onnx': 'model.onnx'}
# Ops kept in float32 in the int8 model, as measured with TF 2.21 on the
# tiny ViT of tests/test_export.py: int8 BATCH_MATMUL (attention) flips the
# sign of the logits (top-1 agreement with JAX 1%), and int8 DIV (softmax,
# mean; the symbolic-batch graph) fails at run time when a quantized
# divisor is 0.
INT8_FLOAT_OPS = ('BATCH_MATMUL', 'DIV')


# -------------------------------------------------------------- artefacts --
def _apply_fn(trained: inference.Trained):
  return lambda variables, images: trained.model.apply(variables, images,
                                                       train=False)


def export_stablehlo(trained: inference.Trained, path: str,
                     platforms: Sequence[str]) -> None:
  """Serialized jax.export.Exported: [b, h, w, 3] -> [b, classes], b free."""
  batch, = jax_export.symbolic_shape('b')
  size = trained.image_size
  fn = jax.jit(lambda images: _apply_fn(trained)(trained.variables, images))
  exported = jax_export.export(fn, platforms=tuple(platforms))(
      jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
  with open(path, 'wb') as f:
    f.write(exported.serialize())


def export_savedmodel(trained: inference.Trained, directory: str,
                      platforms: Sequence[str],
                      batch_size: Optional[int] = None) -> None:
  """SavedModel with serving_default(images) -> {'logits'}.

  The parameters are tf.Variables of the SavedModel rather than constants
  inside the serialized JAX program, as jax2tf recommends for large models.
  batch_size: None for a symbolic batch dimension.
  """
  tf_import.load()  # TensorFlow through aisci first: no GPUs for it
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  converted = jax2tf.convert(
      _apply_fn(trained), with_gradient=False,
      polymorphic_shapes=[None, '(b, ...)' if batch_size is None else None],
      native_serialization_platforms=tuple(platforms))
  module = tf.Module()
  module.variables_ = tf.nest.map_structure(
      lambda x: tf.Variable(np.asarray(x), trainable=False),
      jax.device_get(trained.variables))
  size = trained.image_size

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec((batch_size, size, size, 3), tf.float32, name='images')])
  def serve(images):
    return {'logits': converted(module.variables_, images)}

  module.serve = serve
  tf.saved_model.save(module, directory,
                      signatures={'serving_default': serve})


def export_tflite(trained: inference.Trained, path: str, *,
                  batch_size: Optional[int],
                  calibration: Optional[np.ndarray] = None,
                  dynamic_range: bool = False) -> None:
  """TFLite flatbuffer; int8 post-training quantization if `calibration`.

  calibration: [n, h, w, 3] float32 preprocessed images for int8 ranges.
  dynamic_range: int8 weights only, activations quantized at run time (no
    calibration).
  batch_size: a fixed batch lets the converter fuse softmax and GELU into
    single TFLite ops (smaller, and more accurate in int8); None keeps the
    batch symbolic (then resize the interpreter's input before running).
  """
  with tempfile.TemporaryDirectory() as saved_model:
    # TFLite runs on the CPU of the device: lower for CPU only.
    export_savedmodel(trained, saved_model, ('cpu',), batch_size)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if dynamic_range:
      # Optimize.DEFAULT without a representative dataset: weights only.
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      model = converter.convert()
    elif calibration is None:
      model = converter.convert()
    else:
      step = batch_size or 1

      def representative_dataset():
        for start in range(0, len(calibration) - step + 1, step):
          yield [calibration[start:start + step]]

      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.representative_dataset = representative_dataset
      # Selective quantization: everything int8 but INT8_FLOAT_OPS.
      with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation
        warnings.simplefilter('ignore')
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(INT8_FLOAT_OPS)))
        model = debugger.get_nondebug_quantized_model()
  with open(path, 'wb') as f:
    f.write(model)


def export_onnx(trained: inference.Trained, path: str) -> None:
  """ONNX model (opset 21) with a symbolic batch, via jax2onnx.

  jax2onnx translates the JAX program itself; tf2onnx cannot, because the
  SavedModel of jax2tf holds one XlaCallModule op that tf2onnx does not know.
  """
  # jax2onnx 0.13 logs tracebacks for plugins that do not import under jax
  # 0.10 (dm_pix ops, unused here) and prints DEBUG lines: keep them out.
  loggers = [logging_std.getLogger(n) for n in ('jax2onnx', 'onnx_ir')]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging_std.CRITICAL)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      try:
        import jax2onnx  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError(
            'ONNX export needs jax2onnx and onnxruntime: pip install '
            '"jax2onnx==0.13.0" onnxruntime (later jax2onnx releases require '
            'orbax-checkpoint<0.11.37, older than this project uses).') from e
      size = trained.image_size
      model = jax2onnx.to_onnx(
          lambda images: _apply_fn(trained)(trained.variables, images),
          [('batch', size, size, 3)], model_name=trained.config.model.name,
          opset=21, input_names=['images'], output_names=['logits'],
          return_mode='proto')
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
  import onnx  # pylint: disable=g-import-not-at-top  (comes with jax2onnx)
  # jax2onnx 0.13 lays a CNN out as NCHW and drops the transposes between
  # layers, but keeps the NHWC shapes it recorded for the tensors in between
  # (a ReLU between BatchNorm and a residual Add), which onnxruntime refuses
  # ("node_Add_35 ... Incompatible dimensions"). Those shapes are optional
  # annotations and the operators are right: ONNX infers them anew.
  del model.graph.value_info[:]
  onnx.save(onnx.shape_inference.infer_shapes(model, strict_mode=True), path)


# ------------------------------------------------------------------ data --
def dataset_images(trained: inference.Trained, split: str, count: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """`count` images of `split` of the run's dataset, evenly spread over the
  (class-sorted) files, preprocessed; and their labels."""
  dataset = trained.config.dataset
  prefix, _, root = dataset.partition(':')
  if prefix != 'imagefolder':
    raise NotImplementedError(
        f'Reading images of dataset {dataset!r} is not implemented here; '
        'only imagefolder:PATH runs. For int8 calibration pass '
        '--calibration_dir=FOLDER of training-like images.')
  paths, labels, _ = imagefolder.list_files(root, split,
                                            list(trained.class_names))
  chosen = np.unique(np.linspace(0, len(paths) - 1, count).astype(int))
  return (trained.preprocess([paths[i] for i in chosen]), labels[chosen])


def calibration_images(trained: inference.Trained, count: int,
                       folder: Optional[str] = None) -> np.ndarray:
  if folder:
    paths = inference.expand_paths([folder])
    chosen = np.unique(np.linspace(0, len(paths) - 1, count).astype(int))
    return trained.preprocess([paths[i] for i in chosen])
  return dataset_images(trained, trained.config.train_split, count)[0]


# ---------------------------------------------------------------- export --
def write_preprocessing(trained: inference.Trained, directory: str,
                        fmt: str, batch_size: Optional[int]) -> None:
  size = trained.image_size
  info = dict(
      format=fmt, step=trained.step, model=trained.config.model.name,
      input=dict(name='images', dtype='float32',
                 shape=[batch_size, size, size, 3],
                 preprocessing='RGB, bilinear resize to image_size x '
                 'image_size, then (x / 255 - mean) / std per channel'),
      output=dict(name='logits', dtype='float32',
                  shape=[batch_size, len(trained.class_names)],
                  meaning='logits; softmax gives class probabilities'),
      image_size=size, mean=list(trained.mean), std=list(trained.std),
      class_names=list(trained.class_names))
  with open(os.path.join(directory, 'preprocessing.json'), 'w',
            encoding='utf-8') as f:
    json.dump(info, f, indent=2)


def export(trained: inference.Trained, fmt: str, output_dir: str, *,
           platforms: Sequence[str] = ('cpu', 'cuda', 'tpu'),
           tflite_batch_size: Optional[int] = 1,
           calibration: Optional[np.ndarray] = None) -> str:
  """Writes OUTPUT_DIR/FMT/{artefact, preprocessing.json}; returns the
  artefact's path. calibration: needed for tflite_int8."""
  inference.check_image_classification(trained.config)
  if fmt not in FORMATS:
    raise ValueError(f'Unknown export format {fmt!r}; known: {FORMATS}.')
  directory = os.path.join(output_dir, fmt)
  os.makedirs(directory, exist_ok=True)
  path = os.path.normpath(os.path.join(directory, ARTEFACTS[fmt]))
  with conv.xla_convolutions():  # the runtimes' own kernels, not CPU tricks
    batch_size = _export_artefact(trained, fmt, path, platforms,
                                  tflite_batch_size, calibration)
  write_preprocessing(trained, directory, fmt, batch_size)
  return path


def _export_artefact(trained, fmt, path, platforms, tflite_batch_size,
                     calibration) -> Optional[int]:
  """Writes the artefact of `fmt` at `path`; returns its fixed batch size
  (None: symbolic)."""
  batch_size = None
  if fmt == 'stablehlo':
    export_stablehlo(trained, path, platforms)
  elif fmt == 'savedmodel':
    export_savedmodel(trained, path, platforms)
  elif fmt == 'onnx':
    export_onnx(trained, path)
  else:
    if fmt == 'tflite_int8' and calibration is None:
      raise ValueError('tflite_int8 needs calibration images.')
    batch_size = tflite_batch_size
    export_tflite(trained, path, batch_size=batch_size,
                  calibration=calibration if fmt == 'tflite_int8' else None,
                  dynamic_range=fmt == 'tflite_dynamic')
  return batch_size


# ------------------------------------------------------------------- cli --
FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined only when run (see aisci/predict.py)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
  flags.DEFINE_list('format', None, f'Comma-separated, of {FORMATS}.')
  flags.DEFINE_string('output_dir', None,
                                    'Default: WORKDIR/export.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: latest.')
  flags.DEFINE_list(
      'platforms', ['cpu', 'cuda', 'tpu'],
      'Platforms the stablehlo and savedmodel artefacts are lowered for.')
  flags.DEFINE_enum('checkpoint', 'auto', list(inference.CHECKPOINTS),
                    'auto: the best checkpoint if the run kept one, else the '
                    'latest.')
  flags.DEFINE_integer(
      'tflite_batch_size', 1, 'Fixed batch of the TFLite models; 0: symbolic.')
  flags.DEFINE_integer(
      'calibration_images', 200, 'Training images that calibrate tflite_int8.')
  flags.DEFINE_string(
      'calibration_dir', None, 'Calibrate tflite_int8 on these images instead '
      "of the run's training split (needed for non-imagefolder datasets).")
  flags.DEFINE_integer(
      'check_images', 64, 'Test images on which each artefact is compared '
      'with the JAX model.')
  flags.DEFINE_integer(
      'eval_images', 0, 'Also report accuracy on this many test images.')
  flags.mark_flags_as_required(['workdir', 'format'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  unknown = sorted(set(FLAGS.format) - set(FORMATS))
  if unknown:
    raise app.UsageError(f'Unknown --format {unknown}; known: {FORMATS}.')
  trained = inference.load_trained(FLAGS.workdir, FLAGS.step, FLAGS.checkpoint)
  print(f'Exporting {trained.checkpoint} of {FLAGS.workdir}.')
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.workdir, 'export')
  calibration = None
  if 'tflite_int8' in FLAGS.format:
    calibration = calibration_images(trained, FLAGS.calibration_images,
                                     FLAGS.calibration_dir)
  try:
    images, labels = dataset_images(
        trained, trained.config.eval_split,
        FLAGS.eval_images or FLAGS.check_images)
  except NotImplementedError as e:
    if FLAGS.eval_images:
      raise
    print(f'{e}\nComparing on random normal inputs instead.')
    images = np.random.default_rng(0).standard_normal(
        (FLAGS.check_images, trained.image_size, trained.image_size, 3),
        np.float32)
  if not FLAGS.eval_images:
    labels = None
  artefacts = {}
  for fmt in FLAGS.format:
    print(f'Exporting {fmt}...', flush=True)
    start = time.perf_counter()
    artefacts[fmt] = export(
        trained, fmt, output_dir, platforms=FLAGS.platforms,
        tflite_batch_size=FLAGS.tflite_batch_size or None,
        calibration=calibration)
    print(f'Wrote {artefacts[fmt]} in {time.perf_counter() - start:.1f} s',
          flush=True)
  rows = export_check.check_all(trained, artefacts, images, labels,
                                log=lambda line: print(line, flush=True))
  print(export_check.format_table(rows))


if __name__ == '__main__':
  define_flags()
  app.run(main)
