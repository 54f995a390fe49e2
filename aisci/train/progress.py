"""Progress of long phases: the training line (step/total, loss, learning
rate, examples/s, TFLOP/s and MFU when known, ETA), its timings for the report, and `track`, a periodic
count/rate/ETA line for any long loop (decoding a dataset, evaluating,
running an exported model over a test set)."""

import time
from typing import Callable, Iterable, Iterator, Mapping, Optional, TypeVar

from absl import logging

T = TypeVar('T')


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


def format_tflops(tflops: float) -> str:
  """1,234 / 56.7 / 0.0812: three significant digits, no exponent."""
  return f'{tflops:,.0f}' if tflops >= 100 else f'{tflops:.3g}'


class Progress:
  """Measures throughput between calls and formats the progress line.

  Time spent outside training (evaluation, checkpointing) is excluded with
  `pause()`/`resume()`, so examples/s and the ETA describe training alone.
  """

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int,
               clock: Callable[[], float] = time.perf_counter):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self._clock = clock  # seconds, monotonic (tests pass a fake one)
    self._last_step = start_step
    self._last_time = clock()
    self._paused_at: Optional[float] = None
    self.steps_per_second: Optional[float] = None
    self._start_step, self._started = start_step, self._last_time
    self._paused_seconds = 0.0
    self._train_seconds = 0.0
    self._flops_per_step: Optional[float] = None
    self._peak_flops: Optional[float] = None

  def set_flops(self, flops_per_step: float, devices: int,
                peak_tflops_per_device: Optional[float]) -> None:
    """Adds TFLOP/s (aisci/train/flops.py's count) to the line and timings,
    and MFU, achieved over peak FLOP/s of all `devices`, if a peak is known."""
    self._flops_per_step = flops_per_step
    self._peak_flops = (peak_tflops_per_device * 1e12 * devices
                        if peak_tflops_per_device else None)

  def _flop_rates(self, steps_per_second: float) -> dict[str, float]:
    if self._flops_per_step is None:
      return {}
    flops_per_second = self._flops_per_step * steps_per_second
    rates = dict(tflops_per_second=flops_per_second / 1e12)
    if self._peak_flops:
      rates['mfu'] = flops_per_second / self._peak_flops
    return rates

  def pause(self) -> None:
    self._paused_at = self._clock()

  def resume(self) -> None:
    if self._paused_at is not None:
      paused = self._clock() - self._paused_at
      self._last_time += paused
      self._paused_seconds += paused
      self._paused_at = None

  def timings(self) -> dict[str, float]:
    """This session so far: wall_seconds (since the Progress was made,
    evaluations and checkpoints included), train_seconds (up to the last
    `line`/`update`, paused time excluded), steps (trained by then),
    steps_per_second and examples_per_second over train_seconds; with
    `set_flops`, tflops_per_second and mfu (a fraction) too."""
    train = max(self._train_seconds, 1e-9)
    steps = self._last_step - self._start_step
    return dict(wall_seconds=self._clock() - self._started,
                train_seconds=self._train_seconds, steps=float(steps),
                steps_per_second=steps / train,
                examples_per_second=steps * self.global_batch_size / train,
                **self._flop_rates(steps / train))

  def update(self, step: int) -> None:
    now = self._clock()
    if step > self._last_step and now > self._last_time:
      self.steps_per_second = (step - self._last_step) / (now - self._last_time)
    self._last_step, self._last_time = step, now
    self._train_seconds = now - self._started - self._paused_seconds

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
      rates = self._flop_rates(self.steps_per_second)
      if rates:
        parts.append(f'{format_tflops(rates["tflops_per_second"])} TFLOP/s')
      if 'mfu' in rates:
        parts.append(f'MFU {rates["mfu"]:.1%}')
      eta = (self.total_steps - step) / self.steps_per_second
      parts.append(f'ETA {format_duration(eta)}')
    return ' | '.join(parts)


def _rate(per_second: float) -> str:
  """1,234 / 56 / 0.43: whole numbers unless that would read 0."""
  return f'{per_second:,.0f}' if per_second >= 10 else f'{per_second:.2g}'


def track(items: Iterable[T], total: int, what: str, *, unit: str = 'items',
          size: Callable[[T], int] = lambda item: 1,
          every_seconds: float = 30.0, first_after: float = 10.0,
          log: Callable[[str], None] = lambda line: logging.info('%s', line),
          clock: Callable[[], float] = time.perf_counter) -> Iterator[T]:
  """Yields `items` unchanged, logging progress of a long loop.

  A line `what: 12,000/50,000 images (24%) | 850 images/s | ETA 0:45`
  comes `first_after` seconds after the start, then every `every_seconds`,
  and a closing `what: 50,000 images in 1:02 (810 images/s)` if any line
  was logged: loops shorter than `first_after` stay silent.

  Args:
    items: the loop's iterable.
    total: how many units the loop will count (for the ETA); <= 0 if
      unknown (then lines show the count and rate only).
    what: the phase, e.g. 'Decoding imagefolder data/train'.
    unit: what is counted, e.g. 'images', 'batches'.
    size: units in one item (e.g. len of a batch); 1 by default.
    every_seconds, first_after: when lines come.
    log: where lines go (absl logging.info by default; print for CLIs).
    clock: seconds, monotonic (tests pass a fake one).
  """
  start = clock()
  next_line = start + first_after
  done, logged = 0, False
  for item in items:
    yield item
    done += size(item)
    now = clock()
    if now >= next_line and (done < total or total <= 0):
      rate = done / max(now - start, 1e-9)
      if total > 0:
        log(f'{what}: {done:,}/{total:,} {unit} ({done / total:.0%}) | '
            f'{_rate(rate)} {unit}/s | '
            f'ETA {format_duration((total - done) / max(rate, 1e-9))}')
      else:  # Unknown length (e.g. tf.data's cardinality -1): no ETA.
        log(f'{what}: {done:,} {unit} | {_rate(rate)} {unit}/s')
      next_line, logged = now + every_seconds, True
  if logged:
    elapsed = clock() - start
    log(f'{what}: {done:,} {unit} in {format_duration(elapsed)} '
        f'({_rate(done / max(elapsed, 1e-9))} {unit}/s)')
