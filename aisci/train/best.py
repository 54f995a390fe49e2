"""The best checkpoint by a validation metric, kept besides the latest, and
early stopping when that metric stops improving.

WORKDIR/best_checkpoint/<step>/ holds the train state of the best evaluation
so far; WORKDIR/best.json records every evaluation's value, so a resumed run
(which replays the evaluations after its checkpoint) reaches the same
decisions as an uninterrupted one.
"""

import json
import math
import os
from typing import Any, Optional

import jax

from aisci.train import checkpoint as checkpoint_lib

RECORD = 'best.json'
SUBDIR = 'best_checkpoint'


class BestKeeper:
  """metric: an eval scalar name ('accuracy', 'mean_dice', 'mask/mean_dice');
  '' keeps no best checkpoint. mode: 'max' or 'min'. patience: evaluations
  without improvement before stopping; 0 never stops early."""

  def __init__(self, workdir: str, *, metric: str, mode: str, patience: int,
               start_step: int):
    if mode not in ('max', 'min'):
      raise ValueError(f"config.best_metric_mode must be 'max' or 'min', not {mode!r}.")
    if patience and not metric:
      raise ValueError('config.early_stopping_patience needs config.best_metric '
                       "(e.g. 'accuracy'): the metric whose progress it watches.")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.path = os.path.join(workdir, RECORD)
    self._checkpointer = None
    self.history: list[tuple[int, float]] = []
    self.stopped_step: Optional[int] = None
    if not metric:
      return
    self._checkpointer = checkpoint_lib.Checkpointer(
        workdir, every_steps=1, keep=1, subdir=SUBDIR)
    if jax.process_index() == 0:
      self._checkpointer.delete_after(start_step)
    if os.path.exists(self.path):
      with open(self.path, encoding='utf-8') as f:
        record = json.load(f)
      if record.get('metric') == metric and record.get('mode') == mode:
        # Evaluations after the resumed checkpoint will be replayed.
        self.history = [(s, v) for s, v in record['history'] if s <= start_step]
        stopped = record.get('stopped_step')
        self.stopped_step = stopped if stopped and stopped <= start_step else None

  @property
  def enabled(self) -> bool:
    return bool(self.metric)

  def _best(self) -> Optional[tuple[int, float]]:
    if not self.history:
      return None
    pick = max if self.mode == 'max' else min
    return pick(self.history, key=lambda sv: sv[1])

  def _evals_since_best(self) -> int:
    best_step = self._best()[0]
    return sum(1 for s, _ in self.history if s > best_step)

  def update(self, step: int, scalars: dict[str, float], state: Any) -> bool:
    """Records an evaluation; saves `state` if it is the best. True: stop."""
    if not self.enabled:
      return False
    if self.metric not in scalars:
      raise ValueError(f'config.best_metric={self.metric!r} is not an eval '
                       f'metric of this task; they are: {sorted(scalars)}.')
    value = float(scalars[self.metric])
    if not math.isfinite(value):
      value = -math.inf if self.mode == 'max' else math.inf
    previous = self._best()
    improved = previous is None or (value > previous[1] if self.mode == 'max'
                                    else value < previous[1])
    self.history = [(s, v) for s, v in self.history if s < step] + [(step, value)]
    if improved and self._checkpointer.latest_step() != step:
      self._checkpointer.save(step, state)
    stop = bool(self.patience) and self._evals_since_best() >= self.patience
    if stop:
      self.stopped_step = step
    self._write()
    return stop

  def summary(self) -> Optional[dict[str, Any]]:
    best = self._best()
    if best is None:
      return None
    return dict(metric=self.metric, mode=self.mode, step=best[0], value=best[1],
                checkpoint=os.path.join(self._checkpointer.directory, str(best[0])),
                stopped_early_at=self.stopped_step)

  def _write(self) -> None:
    if jax.process_index() != 0:
      return
    tmp = f'{self.path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(dict(metric=self.metric, mode=self.mode, history=self.history,
                     stopped_step=self.stopped_step), f)
    os.replace(tmp, self.path)

  def close(self) -> None:
    if self._checkpointer is not None:
      self._checkpointer.close()
