"""write_all: the end-of-training report in WORKDIR (report.md and PNGs,
also shown in TensorBoard's image tab).

Task-agnostic: each picture is drawn only when the run has what it needs
(curves from metrics.jsonl; a confusion matrix when the report has one;
misclassified examples for [batch, classes] outputs with [batch] labels;
overlays for [batch, h, w, classes] outputs with [batch, h, w] labels).
A picture that fails is logged and noted in report.md: the trained model
and eval_report.json are already saved by then.
"""

import collections
import json
import os
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import jax
import numpy as np

from aisci.report import plots
from aisci.report import report_md
from aisci.report import tensorboard

# Logged every step but not worth a curve next to train/eval.
_NOT_CURVES = ('learning_rate', 'grad_norm')


def read_metrics(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """metrics.jsonl -> {'train/loss': (steps [n], values [n]), ...}.

  A step logged twice (a run killed after logging and resumed from an
  earlier checkpoint) keeps its last value.
  """
  by_name = collections.defaultdict(dict)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        if not line.strip():
          continue
        record = json.loads(line)
        for name, value in record.items():
          if name not in ('step', 'time'):
            by_name[name][int(record['step'])] = float(value)
  return {name: (np.asarray(sorted(values)),
                 np.asarray([values[s] for s in sorted(values)]))
          for name, values in by_name.items()}


def metric_times(path: str) -> Optional[float]:
  """Seconds from the first to the last record of metrics.jsonl."""
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    times = [json.loads(line)['time'] for line in f if line.strip()]
  return times[-1] - times[0] if len(times) > 1 else None


def curve_figures(metrics: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  workdir: str) -> dict[str, str]:
  """One PNG per metric logged as train/NAME and/or eval/NAME."""
  names = sorted({k.split('/', 1)[1] for k in metrics
                  if k.startswith(('train/', 'eval/'))} - set(_NOT_CURVES))
  figures = {}
  for name in names:
    series = {split: metrics[f'{split}/{name}'] for split in ('train', 'eval')
              if f'{split}/{name}' in metrics}
    # Multi-task metrics are named '<head>/<metric>'.
    file_name = f'curve_{name.replace("/", "_")}.png'
    plots.curves(series, os.path.join(workdir, file_name),
                 title=f'{name} vs step', ylabel=name)
    figures[f'{name} (train and eval)'] = file_name
  return figures


def _display_images(inputs: np.ndarray, config: Mapping[str, Any]
                    ) -> Optional[np.ndarray]:
  """Model inputs -> [n, h, w, c] in [0, 1], or None if they are not images."""
  if inputs.ndim != 4 or inputs.shape[-1] not in (1, 3):
    return None
  if inputs.dtype == np.uint8:
    return inputs
  input_config = config.get('input') or {}
  mean = np.asarray(input_config.get('mean', 0.0), np.float32)
  std = np.asarray(input_config.get('std', 1.0), np.float32)
  return inputs * std + mean


def example_figures(examples: Mapping[str, np.ndarray], input_key: str,
                    label_key: str, class_names: Sequence[str],
                    config: Mapping[str, Any], workdir: str) -> dict[str, str]:
  """Misclassified examples (classification) or overlays (segmentation)."""
  images = _display_images(examples[input_key], config)
  outputs, labels = examples['outputs'], examples.get(label_key)
  if images is None or labels is None or not isinstance(outputs, np.ndarray):
    return {}  # Not images, no labels, or several heads' outputs.
  figures = {}
  if outputs.ndim == 2 and labels.ndim == 1:
    logits = outputs.astype(np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    path = plots.example_grid(
        images, labels, outputs.argmax(-1), class_names,
        os.path.join(workdir, 'misclassified.png'), probabilities=probabilities)
    if path:
      figures['Misclassified examples'] = 'misclassified.png'
  elif outputs.ndim == 4 and labels.ndim == 3:
    plots.overlay_grid(images, labels, outputs.argmax(-1),
                       os.path.join(workdir, 'overlays.png'))
    figures['Segmentation overlays'] = 'overlays.png'
  return figures


def _artefacts(workdir: str, figures: Mapping[str, str]) -> dict[str, str]:
  found = {}
  checkpoints = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(checkpoints):
    steps = sorted((d for d in os.listdir(checkpoints) if d.isdigit()), key=int)
    found[f'checkpoints of steps {", ".join(steps)} (orbax)'] = 'checkpoints/'
  for path, what in (('eval_report.json', 'the final evaluation, in full'),
                     ('metrics.jsonl', 'every logged metric, one JSON line each'),
                     ('tensorboard/', 'TensorBoard events: metrics and these '
                      'pictures (`tensorboard --logdir WORKDIR`)'),
                     ('config.json', 'the exact config'),
                     ('dataset_info.json', 'class names, image size, '
                      'normalization'),
                     ('export/', 'exported models (python -m aisci.export)')):
    if os.path.exists(os.path.join(workdir, path)):
      found[what] = path
  for caption, file_name in figures.items():
    found[caption] = file_name
  return found


def write_all(workdir: str, *, config: Any, task: Any,
              class_names: Sequence[str], scalars: Mapping[str, float],
              report: Mapping[str, Any], step: int,
              timings: Optional[Mapping[str, float]] = None,
              examples: Optional[Mapping[str, Any]] = None,
              input_key: Optional[str] = None) -> dict[str, str]:
  """Writes WORKDIR/report.md and its PNGs; returns {caption: file name}.

  Args:
    workdir: the run's folder (holds metrics.jsonl).
    config: the run's ConfigDict (or a dict).
    task: the task object (labels are batch[task.target], default 'label').
    class_names: label i is class_names[i].
    scalars, report: the final evaluation (as in eval_report.json).
    step: the evaluated step.
    timings: from aisci.train.progress.Progress.timings().
    examples: evaluation rows with the model's 'outputs' for them
      (examples.ExampleCollector.result()), to draw misclassified examples
      or overlays; left out: no examples.
    input_key: the model's input in a batch (default task.input_key or
      'image').
  Only process 0 writes; the other processes return {} at once.
  """
  if jax.process_index() != 0:
    return {}
  config = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  figures, notes = {}, []

  def attempt(what, fn):
    try:
      figures.update(fn())
    except Exception as e:  # pylint: disable=broad-except
      # The run is trained and saved: a picture must not fail it.
      logging.exception('Report: could not draw %s.', what)
      notes.append(f'Could not draw {what}: {type(e).__name__}: {e}')

  attempt('the curves',
          lambda: curve_figures(read_metrics(metrics_path), workdir))
  # 'confusion_matrix' (classification) or 'confusion' (segmentation pixels).
  confusion = report.get('confusion_matrix', report.get('confusion'))
  if confusion is not None:
    attempt('the confusion matrix', lambda: {
        'Confusion matrix': os.path.basename(plots.confusion_matrix(
            np.asarray(confusion), class_names,
            os.path.join(workdir, 'confusion_matrix.png')))})
  if examples is not None:
    attempt('the examples', lambda: example_figures(
        examples, input_key or getattr(task, 'input_key', 'image'),
        getattr(task, 'target', 'label'), class_names, config, workdir))

  timings = dict(timings or {})
  run_seconds = metric_times(metrics_path)
  if run_seconds is not None:
    timings['run_seconds'] = run_seconds
  text = report_md.render(
      workdir=workdir, config=config, scalars=scalars, report=report,
      step=step, split=config.get('eval_split', 'eval'), timings=timings,
      figures=figures, artefacts=_artefacts(workdir, figures), notes=notes,
      class_names=class_names)
  with open(os.path.join(workdir, 'report.md'), 'w', encoding='utf-8') as f:
    f.write(text)
  _to_tensorboard(workdir, step, figures)
  logging.info('Report: %s (%d pictures).', os.path.join(workdir, 'report.md'),
               len(figures))
  return figures


def _to_tensorboard(workdir: str, step: int, figures: Mapping[str, str]) -> None:
  """The PNGs as images under 'report/<name>' in WORKDIR/tensorboard."""
  if not figures:
    return
  writer = tensorboard.TensorBoardWriter(os.path.join(workdir, 'tensorboard'))
  try:
    writer.write_images(step, {
        f'report/{os.path.splitext(name)[0]}': plots.read_png(
            os.path.join(workdir, name))[None]
        for name in figures.values()})
  finally:
    writer.close()
