"""Task registry: `config.task.name` -> what the model's outputs are trained
and judged against (loss, evaluation sums, final report).

A task ties nothing but arrays: it never sees the model or the data pipeline,
so one trainer serves every task. A new task is one file plus one line.
"""

from typing import Any, Mapping

from aisci.tasks.classification import ClassificationTask

TASKS = {
    'classification': ClassificationTask,
}


def build_task(task_config: Mapping[str, Any], **extra: Any):
  """`config.task` -> task object; `extra` adds what the data decides."""
  kwargs = dict(task_config)
  name = kwargs.pop('name')
  if name not in TASKS:
    raise ValueError(f'Unknown task {name!r} in config.task.name; known: '
                     f'{sorted(TASKS)}.')
  return TASKS[name](**kwargs, **extra)
