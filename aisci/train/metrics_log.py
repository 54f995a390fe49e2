"""Where metrics go: TensorBoard event files (via clu) and WORKDIR/metrics.jsonl.

Only process 0 writes; the other processes get a writer that drops
everything, so the loop never asks which process it is on.
"""

import json
import os
import time
from typing import Any, Mapping

from clu import metric_writers
import jax
import numpy as np


class JsonlWriter(metric_writers.MetricWriter):
  """One JSON line per write: {"step": s, "time": t, "name": value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard events in WORKDIR/tensorboard plus WORKDIR/metrics.jsonl."""
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.SummaryWriter(os.path.join(workdir, 'tensorboard')),
      JsonlWriter(os.path.join(workdir, 'metrics.jsonl')),
  ])
