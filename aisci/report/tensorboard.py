"""TensorBoard event files: scalars and images, through tf.summary.

The same files clu's SummaryWriter writes (it wraps these calls), without
importing clu.metric_writers, whose TensorBoard hparams plugin loads all of
Keras, which aisci/tf_import.py keeps out of start-up.
"""

from typing import Any, Mapping

import numpy as np

from aisci.tf_import import tf


class TensorBoardWriter:
  """Writes into LOGDIR/events.out.tfevents.*; `tensorboard --logdir` shows it."""

  def __init__(self, logdir: str):
    self._writer = tf.summary.create_file_writer(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """scalars: name -> a number (Python, numpy or jax scalar)."""
    with self._writer.as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, float(np.asarray(value)), step=int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> [n, height, width, channels], uint8 or floats in [0, 1]."""
    with self._writer.as_default():
      for name, batch in images.items():
        tf.summary.image(name, batch, step=int(step), max_outputs=len(batch))

  def close(self) -> None:
    self._writer.close()
