"""Multi-task learning: named tasks, one per model head, with loss weights.

The model returns {head name: outputs} (`multi_head`), each task judges the
outputs of the head with its name, and the training loss is the weighted
sum L = sum_i w_i L_i. Each task's metrics are reported separately, prefixed
by its name (`mask/mean_dice`, `area/mae`).

  config.task = dict(name='multi', tasks=dict(
      mask=dict(name='segmentation', weight=1.0),
      area=dict(name='regression', weight=0.5, target='class_fractions',
                target_index=0)))
"""

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class MultiTask:
  """tasks: name -> task object; weights: name -> loss weight."""
  tasks: Mapping[str, Any]
  weights: Mapping[str, float]

  def _outputs(self, outputs, name):
    if not isinstance(outputs, Mapping) or name not in outputs:
      raise ValueError(
          f'Task {name!r} needs a model head named {name!r}; the model gives '
          f'{sorted(outputs) if isinstance(outputs, Mapping) else "one output"}'
          ". Use config.model.name='multi_head' with heads named as the tasks.")
    return outputs[name]

  def loss(self, outputs: Mapping[str, jax.Array], batch: dict[str, jax.Array]
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    total, metrics = 0.0, {}
    for name, task in self.tasks.items():
      loss, task_metrics = task.loss(self._outputs(outputs, name), batch)
      total = total + self.weights[name] * loss
      metrics[f'{name}/loss'] = loss
      metrics.update({f'{name}/{k}': v for k, v in task_metrics.items()})
    return total, metrics

  def eval_sums(self, outputs, batch):
    return {name: task.eval_sums(self._outputs(outputs, name), batch)
            for name, task in self.tasks.items()}

  def summarize(self, sums: Mapping[str, Any], class_names: Sequence[str]
                ) -> tuple[dict[str, float], dict[str, Any]]:
    scalars, report = {}, {}
    weighted_loss = 0.0
    for name, task in self.tasks.items():
      task_scalars, report[name] = task.summarize(sums[name], class_names)
      scalars.update({f'{name}/{k}': v for k, v in task_scalars.items()})
      weighted_loss += self.weights[name] * task_scalars.get('loss', 0.0)
    scalars['loss'] = float(weighted_loss)
    report['num_examples'] = next(
        (r['num_examples'] for r in report.values()
         if isinstance(r, dict) and 'num_examples' in r), None)
    return scalars, report

  def format_report(self, report: Mapping[str, Any]) -> str:
    return '\n'.join(f'[{name}]\n{task.format_report(report[name])}'
                     for name, task in self.tasks.items())
