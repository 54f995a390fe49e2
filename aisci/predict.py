"""Classify image files with a trained run.

    python -m aisci.predict --workdir=runs/tiny [--top_k=5] [--batch_size=64] \
        [--step=N] [--output=preds.jsonl] FILES_OR_FOLDERS...

Folders are searched recursively for image files (sorted). For each file it
prints the path, then the top-k `class  probability` lines. Needs only the
workdir (config, dataset info, checkpoints), not the training data; runs on
CPU.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import numpy as np

from aisci import inference

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined only when run, so that importing this
  module next to another command's module defines no flag twice."""
  flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
  flags.DEFINE_integer('top_k', 5, 'Classes to print per image.')
  flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: latest.')
  flags.DEFINE_string(
      'output', None, 'Also write one JSON line per file here: {"path", '
      '"top_k": [{"class", "probability"}, ...], "logits"}.')
  flags.mark_flag_as_required('workdir')


def top_k(probabilities: np.ndarray, class_names, k: int) -> list[dict]:
  """[classes] -> the k most probable as [{'class', 'probability'}]."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'class': class_names[i], 'probability': float(probabilities[i])}
          for i in order]


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('Give image files or folders after the flags.')
  logging.set_verbosity(logging.WARNING)
  trained = inference.load_trained(FLAGS.workdir, FLAGS.step)
  inference.check_image_classification(trained.config)
  files = inference.expand_paths(argv[1:])
  logits = inference.predict_logits(trained, trained.preprocess(files),
                                    FLAGS.batch_size)
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  output = open(FLAGS.output, 'w', encoding='utf-8') if FLAGS.output else None
  width = max(len(c) for c in trained.class_names)
  for path, p, z in zip(files, probabilities, logits):
    best = top_k(p, trained.class_names, FLAGS.top_k)
    print(path)
    for entry in best:
      print(f'  {entry["class"]:<{width}}  {entry["probability"]:.4f}')
    if output:
      output.write(json.dumps(dict(path=path, top_k=best,
                                   logits=[float(v) for v in z])) + '\n')
  if output:
    output.close()


if __name__ == '__main__':
  define_flags()
  app.run(main)
