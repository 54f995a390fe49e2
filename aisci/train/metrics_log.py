"""Where metrics go: TensorBoard event files and WORKDIR/metrics.jsonl.

Only process 0 writes; the other processes get a writer that drops
everything, so the loop never asks which process it is on.
"""

import json
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from aisci.report import tensorboard


class JsonlWriter:
  """One JSON line per write: {"step": s, "time": t, "name": value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MultiWriter:
  """Writes the same scalars to each of its writers (none: drops them)."""

  def __init__(self, writers: Sequence[Any]):
    self._writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def close(self) -> None:
    for writer in self._writers:
      writer.close()


def create_writer(workdir: str) -> MultiWriter:
  """TensorBoard events in WORKDIR/tensorboard plus WORKDIR/metrics.jsonl."""
  if jax.process_index() > 0:
    return MultiWriter([])
  return MultiWriter([
      tensorboard.TensorBoardWriter(os.path.join(workdir, 'tensorboard')),
      JsonlWriter(os.path.join(workdir, 'metrics.jsonl')),
  ])
