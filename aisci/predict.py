"""Predict with a trained run: images, text lines or .npz arrays in, by the
run's task out.

    python -m aisci.predict --workdir=runs/vit FILES_OR_FOLDERS...
    python -m aisci.predict --workdir=runs/sst2 reviews.txt      # a text per line
    python -m aisci.predict --workdir=runs/unet slices/ --output_dir=masks
    python -m aisci.predict --workdir=runs/signals new.npz       # array `x`

Flags: --checkpoint=auto|best|latest (auto: the best checkpoint if the run
kept one, else the latest), --step=N, --top_k, --batch_size, --output
(one JSON line per example), --output_dir (segmentation PNGs).

For each example it prints its name (path, path:line or path[row]), then
per task: the top-k `class  probability` lines (classification), the
values (regression), or the mask and overlay PNGs written and each class's
share of the pixels (segmentation). What it reads is described in
aisci/predict_inputs.py. Needs only the workdir (config, dataset info,
tokenizer, checkpoints), not the training data; runs on CPU.
"""

import json
import os
import sys
from typing import Any, Optional

if __name__ == '__main__':
  # As aisci.main: a faster malloc takes effect only at process start
  # (aisci/allocator.py); the collector is paused until the forward pass is
  # compiled (aisci/gc_pause.py; inference.predict_outputs resumes it).
  from aisci import allocator  # pylint: disable=g-import-not-at-top
  allocator.restart()
  from aisci import gc_pause  # pylint: disable=g-import-not-at-top
  gc_pause.pause()

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from aisci import compile_cache
from aisci import cpu_devices
from aisci import inference
from aisci import predict_inputs
from aisci import predict_outputs

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; defined only when run, so that importing this
  module next to another command's module defines no flag twice."""
  flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
  flags.DEFINE_enum('checkpoint', 'auto', list(inference.CHECKPOINTS),
                    'auto: the best checkpoint if the run kept one, else the '
                    'latest.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')
  flags.DEFINE_integer('top_k', 5, 'Classes to print per example.')
  flags.DEFINE_integer(
      'cpu_devices', None, 'Devices the CPU is split into when JAX runs on '
      "it; each batch is split over them. Default: the run's "
      'config.cpu_devices (WORKDIR/config.json), else 8. Measured on 2 '
      'cores: 2,000 CIFAR images through the ViT tiny in 6.9 s on 8 devices '
      'against 11.0 s on 1; the U-Net (5 slices) 18.3 s on 2, 23.3 s on 8. '
      'Ignored if XLA_FLAGS sets --xla_force_host_platform_device_count.',
      lower_bound=1)
  flags.DEFINE_integer('batch_size', 0, 'Examples per forward pass; 0: the '
                       "run's config.input.eval_batch_size.")
  flags.DEFINE_string('npz_key', None, 'Array of the .npz files to predict '
                      '(default: x, or the one x_* array).')
  flags.DEFINE_string(
      'output', None, 'Also write one JSON line per example here: {"path", '
      'and per task "top_k"+"logits", "values", or "mask"+"overlay"+'
      '"class_fractions" (under the head\'s name for multi-task runs)}.')
  flags.DEFINE_string('output_dir', None, 'Segmentation: folder for the '
                      'mask and overlay PNGs (default WORKDIR/predictions).')
  flags.DEFINE_string(
      'compilation_cache_dir', None, "JAX's persistent compilation cache, "
      'shared with python -m aisci.main: the next prediction with the same '
      'model and batch shape loads the compiled forward pass instead of '
      "compiling it. Default: $XDG_CACHE_HOME/aisci/jax or ~/.cache/aisci/jax; "
      "'' turns it off.")
  flags.mark_flag_as_required('workdir')


def run(workdir: str, paths, *, checkpoint='auto', step=None, top_k=5,
        batch_size=0, npz_key=None, output=None, output_dir=None, out=None):
  """Predicts `paths` with the run in `workdir`; prints to `out` (stdout).
  Returns the JSON records, one per example."""
  out = out or sys.stdout
  trained = inference.load_trained(workdir, step, checkpoint)
  logging.warning('Predicting with %s of %s (%s data, task %s).',
                  trained.checkpoint, workdir, trained.kind,
                  trained.config.task.name)
  examples = predict_inputs.read(trained, paths, npz_key=npz_key)
  batch_size = batch_size or int(trained.config.input.get('eval_batch_size', 64))
  outputs = inference.predict_outputs(
      trained, [e.input for e in examples], batch_size)
  tasks = predict_outputs.tasks_of(trained.config.task.to_dict())
  writer = predict_outputs.Writer(
      class_names=trained.class_names, top_k=top_k,
      output_dir=output_dir or os.path.join(workdir, 'predictions'),
      mask_values=trained.info.get('mask_values', 'indices'))
  records = []
  for i, example in enumerate(examples):
    print(example.name, file=out)
    record = {'path': example.name}
    for head, task in tasks.items():
      head_outputs = outputs[head] if head else outputs
      lines, fields = writer(task, head_outputs[i], example, head)
      for line in lines:
        print(f'  {line}', file=out)
      if head:
        record[head] = fields
      else:
        record.update(fields)
    records.append(record)
  if output:
    with open(output, 'w', encoding='utf-8') as f:
      for record in records:
        f.write(json.dumps(record) + '\n')
  return records


def _run_config(workdir: str) -> Optional[dict[str, Any]]:
  """WORKDIR/config.json, or None where there is none (run() then says
  what is missing)."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def main(argv):
  if len(argv) < 2:
    raise app.UsageError('Give files or folders to predict after the flags.')
  logging.set_verbosity(logging.WARNING)
  try:
    cpu_devices.split(*cpu_devices.choose(FLAGS.cpu_devices,
                                          _run_config(FLAGS.workdir)))
    compile_cache.enable(FLAGS.compilation_cache_dir)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  run(FLAGS.workdir, argv[1:], checkpoint=FLAGS.checkpoint, step=FLAGS.step,
      top_k=FLAGS.top_k, batch_size=FLAGS.batch_size, npz_key=FLAGS.npz_key,
      output=FLAGS.output, output_dir=FLAGS.output_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
