"""Regression: real-valued targets, mean squared error, judged by MAE, RMSE
and R^2 over the whole split."""

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class RegressionTask:
  """Targets `batch[target]` ([batch] or [batch, k] float) against outputs [batch, k].

  target_index: take one column of a vector target (e.g. 0 of the
    segmentation sources' `class_fractions` [batch, classes]: the first
    class's share of the pixels).
  loss_type: 'mse' or 'huber' (delta 1).
  """
  target: str = 'label'
  target_index: Optional[int] = None
  loss_type: str = 'mse'

  def __post_init__(self):
    if self.loss_type not in ('mse', 'huber'):
      raise ValueError("config.task.loss_type must be 'mse' or 'huber', not "
                       f'{self.loss_type!r}.')

  def _pair(self, outputs, batch):
    targets = batch[self.target].astype(jnp.float32)
    if self.target_index is not None:
      targets = targets[:, self.target_index]
    outputs = outputs.astype(jnp.float32)
    return outputs, targets.reshape(outputs.shape)

  def loss(self, outputs: jax.Array, batch: dict[str, jax.Array]
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    outputs, targets = self._pair(outputs, batch)
    if self.loss_type == 'mse':
      loss = jnp.square(outputs - targets).mean()
    else:
      loss = optax.huber_loss(outputs, targets).mean()
    return loss, {'mae': jnp.abs(outputs - targets).mean()}

  def eval_sums(self, outputs: jax.Array,
                batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-output sums over real examples: errors and target moments."""
    outputs, targets = self._pair(outputs, batch)
    w = batch['mask'].astype(jnp.float32)[:, None]
    error = outputs - targets
    return {'squared_error': (w * error**2).sum(0), 'abs_error': (w * jnp.abs(error)).sum(0),
            'target_sum': (w * targets).sum(0), 'target_sq_sum': (w * targets**2).sum(0),
            'count': w.sum()}

  def summarize(self, sums: dict[str, np.ndarray], class_names: Sequence[str] = ()
                ) -> tuple[dict[str, float], dict[str, Any]]:
    del class_names  # unused
    n = max(float(sums['count']), 1.0)
    sse = np.asarray(sums['squared_error'], np.float64)
    # Total sum of squares about the split's mean, from the moments.
    sst = np.asarray(sums['target_sq_sum'], np.float64) - np.asarray(
        sums['target_sum'], np.float64)**2 / n
    r2 = np.where(sst > 0, 1.0 - sse / np.maximum(sst, 1e-12), 0.0)
    mse = sse / n
    report = dict(mse=mse.tolist(), rmse=np.sqrt(mse).tolist(),
                  mae=(np.asarray(sums['abs_error']) / n).tolist(),
                  r2=r2.tolist(), num_examples=int(n))
    scalars = {'loss': float(mse.mean()), 'rmse': float(np.sqrt(mse).mean()),
               'mae': float(np.mean(report['mae'])), 'r2': float(r2.mean())}
    return scalars, report

  def format_report(self, report: dict[str, Any]) -> str:
    rows = [f'{"output":>8} {"mae":>10} {"rmse":>10} {"r2":>8}']
    for i, (mae, rmse, r2) in enumerate(zip(report['mae'], report['rmse'], report['r2'])):
      rows.append(f'{i:>8} {mae:10.5f} {rmse:10.5f} {r2:8.4f}')
    return '\n'.join(rows + [f'over {report["num_examples"]} examples'])
