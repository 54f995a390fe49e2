"""The progress line: step/total, loss, learning rate, examples/s, ETA."""

import time
from typing import Mapping, Optional


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class Progress:
  """Measures throughput between calls and formats the progress line.

  Time spent outside training (evaluation, checkpointing) is excluded with
  `pause()`/`resume()`, so examples/s and the ETA describe training alone.
  """

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._paused_at: Optional[float] = None
    self.steps_per_second: Optional[float] = None

  def pause(self) -> None:
    self._paused_at = time.perf_counter()

  def resume(self) -> None:
    if self._paused_at is not None:
      self._last_time += time.perf_counter() - self._paused_at
      self._paused_at = None

  def update(self, step: int) -> None:
    now = time.perf_counter()
    if step > self._last_step and now > self._last_time:
      self.steps_per_second = (step - self._last_step) / (now - self._last_time)
    self._last_step, self._last_time = step, now

  def line(self, step: int, metrics: Mapping[str, float]) -> str:
    self.update(step)
    parts = [f'step {step}/{self.total_steps}']
    for key in ('loss', 'accuracy'):
      if key in metrics:
        parts.append(f'{key} {metrics[key]:.4f}')
    if 'learning_rate' in metrics:
      parts.append(f'lr {metrics["learning_rate"]:.3g}')
    if self.steps_per_second:
      parts.append(f'{self.steps_per_second * self.global_batch_size:.0f} ex/s')
      eta = (self.total_steps - step) / self.steps_per_second
      parts.append(f'ETA {format_duration(eta)}')
    return ' | '.join(parts)
