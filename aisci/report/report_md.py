"""WORKDIR/report.md: what a person reads first about a finished run.

`render` is pure: it turns the run's numbers into Markdown text and knows
nothing of files, so it is tested on plain dicts.
"""

import os
from typing import Any, Mapping, Optional, Sequence

from aisci.train import progress as progress_lib

# Config fields shown in the summary (dotted paths); others are in config.json.
SUMMARY_FIELDS = (
    'dataset', 'model.name', 'model.variant', 'model.depth', 'model.width',
    'model.patch_size', 'task.name', 'input.image_size', 'input.batch_size',
    'input.augment', 'total_steps', 'optimizer.name',
    'optimizer.learning_rate', 'optimizer.weight_decay', 'schedule.decay',
    'schedule.warmup_steps', 'dtype', 'seed', 'init.path', 'prune.sparsity')
# Shown only when set (not '' or 0).
_ONLY_IF_SET = ('model.variant', 'init.path', 'prune.sparsity')


def _get(config: Mapping[str, Any], dotted: str) -> Any:
  value = config
  for part in dotted.split('.'):
    if not isinstance(value, Mapping) or part not in value:
      return None
    value = value[part]
  return value


def _number(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f'{value:,}'
  return f'{value:.4f}' if abs(value) >= 1e-3 or value == 0 else f'{value:.3g}'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(_number(v) for v in row) + ' |' for row in rows]
  return lines


def per_class_table(report: Mapping[str, Any]) -> list[str]:
  """Rows of report['per_class'] (any numeric columns), then the averages.

  per_class: a list of dicts with 'name' (classification) or a dict
  name -> dict (segmentation).
  """
  per_class = report.get('per_class')
  if not per_class:
    return []
  if isinstance(per_class, Mapping):
    per_class = [dict(name=name, **row) for name, row in per_class.items()]
  columns = [k for k in per_class[0] if k != 'name']
  rows = [[c['name']] + [c[k] for k in columns] for c in per_class]
  for average in ('macro avg', 'weighted avg'):
    if isinstance(report.get(average), Mapping):
      rows.append([f'*{average}*'] + [report[average].get(k, '')
                                        for k in columns])
  return table(['class'] + columns, rows)


def timing_lines(timings: Mapping[str, float]) -> list[str]:
  lines = []
  if 'wall_seconds' in timings:
    lines.append(f'- wall time of this session (training, evaluations, '
                 f'checkpoints): {progress_lib.format_duration(timings["wall_seconds"])}')
  if timings.get('steps'):
    lines.append(
        f'- steps trained in this session: {int(timings["steps"]):,} in '
        f'{progress_lib.format_duration(timings["train_seconds"])} of training '
        f'({timings["examples_per_second"]:.0f} examples/s, '
        f'{timings["steps_per_second"]:.2f} steps/s'
        + (f', {progress_lib.format_tflops(timings["tflops_per_second"])} '
           'TFLOP/s' if 'tflops_per_second' in timings else '')
        + (f', MFU {timings["mfu"]:.1%}' if 'mfu' in timings else '') + ')')
  if 'run_seconds' in timings:
    lines.append('- first to last record of metrics.jsonl, all sessions: '
                 f'{progress_lib.format_duration(timings["run_seconds"])}')
  return lines


def render(*, workdir: str, config: Mapping[str, Any],
           scalars: Mapping[str, float], report: Mapping[str, Any],
           step: int, split: str, timings: Mapping[str, float],
           figures: Mapping[str, str], artefacts: Mapping[str, str],
           notes: Sequence[str] = (),
           class_names: Optional[Sequence[str]] = None) -> str:
  """The Markdown text of report.md.

  Args:
    workdir: the run's folder (named in the title; paths are relative to it).
    config: the run's config as a dict.
    scalars: final evaluation metrics, e.g. {'loss': .., 'accuracy': ..}.
    report: the task's full report (eval_report.json's 'report').
    step, split: the evaluated checkpoint's step and the evaluation split.
    timings: see `timing_lines`.
    figures: caption -> PNG file name in the workdir.
    artefacts: description -> path relative to the workdir.
    notes: lines added at the end (e.g. pictures that could not be drawn).
    class_names: shown when there is no per-class table.
  """
  name = os.path.basename(os.path.normpath(workdir))
  lines = [f'# Run `{name}`', '',
           f'Final evaluation at step {step:,} on the `{split}` split'
           + (f' ({report["num_examples"]:,} examples)'
              if 'num_examples' in report else '') + '.', '']
  lines += table(['metric', 'value'], sorted(scalars.items()))
  lines += ['', '## Configuration', '']
  summary = [(f, _get(config, f)) for f in SUMMARY_FIELDS]
  lines += table(['field', 'value'],
                 [(f'`{f}`', v) for f, v in summary
                  if v is not None and (v or f not in _ONLY_IF_SET)])
  lines += ['', 'The full config is in `config.json`.', '']
  per_class = per_class_table(report)
  if per_class:
    lines += ['## Per class', ''] + per_class + ['']
  elif class_names:
    lines += [f'Classes: {", ".join(class_names)}.', '']
  timing = timing_lines(timings)
  if timing:
    lines += ['## Timings', ''] + timing + ['']
  if figures:
    lines += ['## Pictures', '']
    for caption, file_name in figures.items():
      lines += [f'### {caption}', '', f'![{caption}]({file_name})', '']
  lines += ['## Files', '']
  lines += [f'- `{path}`: {what}' for what, path in artefacts.items()]
  lines += ['', 'Use the run: `python -m aisci.predict '
            f'--workdir={workdir} IMAGES...`; deploy it: `python -m '
            f'aisci.export --workdir={workdir} --format=tflite_int8,onnx`.']
  if notes:
    lines += ['', '## Notes', ''] + [f'- {n}' for n in notes]
  return '\n'.join(lines) + '\n'
