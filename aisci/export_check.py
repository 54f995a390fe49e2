"""Runs exported artefacts and compares them with the JAX model.

Each runner maps images [n, h, w, 3] float32 (preprocessed) to logits
[n, classes] float32, loading the artefact the way a user would: with
jax.export, TensorFlow, the TFLite interpreter, onnxruntime.
"""

import os
import time
import warnings
from typing import Callable, Mapping, Optional

import numpy as np

from aisci import inference

Runner = Callable[[np.ndarray], np.ndarray]


def stablehlo_runner(path: str) -> Runner:
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  return lambda images: np.asarray(exported.call(images))


def savedmodel_runner(directory: str) -> Runner:
  from aisci.tf_import import tf  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(directory).signatures['serving_default']
  return lambda images: serve(images=tf.constant(images))['logits'].numpy()


def _tflite_interpreter(path: str):
  try:  # LiteRT, TFLite's successor, where installed.
    # pylint: disable-next=g-import-not-at-top
    from ai_edge_litert import interpreter as litert
    return litert.Interpreter(model_path=path)
  except ImportError:
    from aisci.tf_import import tf  # pylint: disable=g-import-not-at-top
    with warnings.catch_warnings():  # "deprecated, use ai_edge_litert"
      warnings.simplefilter('ignore')
      return tf.lite.Interpreter(model_path=path)


def tflite_runner(path: str) -> Runner:
  """Runs a fixed-batch model batch by batch (padding the last), or a
  symbolic-batch one on all images at once."""
  interpreter = _tflite_interpreter(path)
  source = interpreter.get_input_details()[0]
  target = interpreter.get_output_details()[0]
  fixed = int(source['shape_signature'][0])

  def run(images):
    batch = fixed if fixed > 0 else len(images)
    if fixed <= 0:
      interpreter.resize_tensor_input(source['index'], images.shape)
    interpreter.allocate_tensors()
    outputs = []
    for start in range(0, len(images), batch):
      chunk = images[start:start + batch]
      real = len(chunk)
      chunk = np.concatenate([chunk, np.zeros((batch - real,) + chunk.shape[1:],
                                              np.float32)])
      interpreter.set_tensor(source['index'], chunk)
      interpreter.invoke()
      outputs.append(interpreter.get_tensor(target['index'])[:real].copy())
    return np.concatenate(outputs)

  return run


def onnx_runner(path: str) -> Runner:
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(path,
                                         providers=['CPUExecutionProvider'])
  return lambda images: session.run(['logits'], {'images': images})[0]


RUNNERS = {'stablehlo': stablehlo_runner, 'savedmodel': savedmodel_runner,
           'tflite': tflite_runner, 'tflite_int8': tflite_runner,
           'tflite_dynamic': tflite_runner, 'onnx': onnx_runner}


def size_bytes(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def compare(reference: np.ndarray, logits: np.ndarray,
            labels: Optional[np.ndarray] = None) -> dict[str, float]:
  """Max |logit difference|, top-1 agreement, and accuracy if labels."""
  result = dict(max_abs_diff=float(np.max(np.abs(logits - reference))),
                top1_agreement=float(np.mean(
                    logits.argmax(-1) == reference.argmax(-1))))
  if labels is not None:
    result['accuracy'] = float(np.mean(logits.argmax(-1) == labels))
  return result


def check_all(trained: inference.Trained, artefacts: Mapping[str, str],
              images: np.ndarray, labels: Optional[np.ndarray] = None,
              log: Optional[Callable[[str], None]] = None) -> list[dict]:
  """One row per artefact (and one for JAX) comparing logits on `images`.

  log: called with a line before and after each run (with its time).
  """
  log = log or (lambda line: None)
  start = time.perf_counter()
  reference = inference.predict_logits(trained, images)
  log(f'JAX model on {len(images)} images: {time.perf_counter() - start:.1f} s')
  rows = [dict(format='jax', size=None, seconds=time.perf_counter() - start,
               **compare(reference, reference, labels))]
  for fmt, path in artefacts.items():
    log(f'Running {fmt} on {len(images)} images...')
    run = RUNNERS[fmt](path)
    start = time.perf_counter()
    logits = run(images)
    rows.append(dict(format=fmt, size=size_bytes(path),
                     seconds=time.perf_counter() - start,
                     **compare(reference, logits, labels)))
    log(f'{fmt}: {rows[-1]["seconds"]:.1f} s')
  return rows


def format_table(rows: list[dict]) -> str:
  n = 'accuracy' in rows[0]
  header = (f'{"format":<14} {"size":>10} {"run time":>8} {"max|diff|":>10} '
            f'{"top-1 agree":>11}')
  header += f' {"accuracy":>8}' if n else ''
  lines = [header]
  for r in rows:
    size = f'{r["size"] / 1e3:.1f} kB' if r['size'] else '-'
    seconds = f'{r["seconds"]:.1f} s' if r.get('seconds') is not None else '-'
    line = (f'{r["format"]:<14} {size:>10} {seconds:>8} '
            f'{r["max_abs_diff"]:>10.2e} {r["top1_agreement"]:>11.2%}')
    line += f' {r["accuracy"]:>8.2%}' if n else ''
    lines.append(line)
  return '\n'.join(lines)
