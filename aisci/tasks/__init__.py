"""Task registry: `config.task.name` -> what the model's outputs are trained
and judged against (loss, evaluation sums, final report).

A task ties nothing but arrays: it never sees the model or the data pipeline,
so one trainer serves every task. A new task is one file plus one line.

Every task has `loss(outputs, batch) -> (loss, metrics)`,
`eval_sums(outputs, batch) -> sums` (summed over real examples, so they add
up over batches and devices), `summarize(sums, class_names) -> (scalars,
report)` and `format_report(report) -> str`.
"""

import dataclasses
from typing import Any, Mapping

from aisci.tasks.classification import ClassificationTask
from aisci.tasks.multi import MultiTask
from aisci.tasks.regression import RegressionTask
from aisci.tasks.segmentation import SegmentationTask

TASKS = {
    'classification': ClassificationTask,
    'segmentation': SegmentationTask,
    'regression': RegressionTask,
}


def _checked(task_config: Mapping[str, Any], where: str):
  """(task class, its fields, constructor kwargs); ValueError for an
  unknown name or field."""
  kwargs = dict(task_config)
  name = kwargs.pop('name', None)
  if name not in TASKS:
    raise ValueError(f'Unknown task {name!r} in {where}.name; known: '
                     f'{sorted(TASKS) + ["multi"]}.')
  cls = TASKS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'{where} has fields {unknown} that task {name!r} does '
                     f'not take; its fields: {sorted(fields)}.')
  return cls, fields, kwargs


def _build_one(task_config: Mapping[str, Any], extra: Mapping[str, Any],
               where: str):
  cls, fields, kwargs = _checked(task_config, where)
  # What the data decide (num_classes), for the tasks that take it.
  kwargs.update({k: v for k, v in extra.items() if k in fields})
  return cls(**kwargs)


def _subtasks(task_config: dict[str, Any]) -> dict[str, tuple[dict, float]]:
  """config.task.tasks of a multi task: name -> (its config, its weight)."""
  subtasks = {}
  for name, sub in dict(task_config['tasks']).items():
    sub = dict(sub)
    subtasks[name] = (sub, float(sub.pop('weight', 1.0)))
  if not subtasks:
    raise ValueError('config.task.tasks is empty: name at least one task.')
  return subtasks


def check_config(task_config: Mapping[str, Any]) -> None:
  """The name and field errors build_task would raise, before the data
  decide the rest: the loop checks the config with it first."""
  task_config = dict(task_config)
  if task_config.get('name') != 'multi':
    _checked(task_config, 'config.task')
    return
  for name, (sub, _) in _subtasks(task_config).items():
    _checked(sub, f'config.task.tasks.{name}')


def build_task(task_config: Mapping[str, Any], **extra: Any):
  """`config.task` -> task object; `extra` adds what the data decides."""
  task_config = dict(task_config)
  if task_config.get('name') != 'multi':
    return _build_one(task_config, extra, 'config.task')
  tasks, weights = {}, {}
  for name, (sub, weight) in _subtasks(task_config).items():
    weights[name] = weight
    tasks[name] = _build_one(sub, extra, f'config.task.tasks.{name}')
  return MultiTask(tasks=tasks, weights=weights)
