"""TensorBoard event files (scalars, images) written without TensorFlow.

Importing TensorFlow for tf.summary took ~2.7 s of start-up, and the GPU
machines may have no TensorFlow at all. This writes the same records
tf.summary does (tensor summaries for the scalars and images plugins) with
the tensorboard package's protos, PIL for the PNGs and the TFRecord framing
below. Without the tensorboard package it logs a warning and writes nothing.
"""

import io
import itertools
import os
import socket
import struct
import threading
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

try:
  # Protos and plugin metadata only: tensorboard.summary (its record writer)
  # costs ~0.13 s more to import, and tensorboard.compat.tf imports TF.
  from tensorboard.compat.proto import event_pb2
  from tensorboard.compat.proto import summary_pb2
  from tensorboard.compat.proto import tensor_pb2
  from tensorboard.compat.proto import tensor_shape_pb2
  from tensorboard.compat.proto import types_pb2
  from tensorboard.plugins.image import metadata as image_metadata
  from tensorboard.plugins.scalar import metadata as scalar_metadata
except ImportError as e:
  _MISSING = e
else:
  _MISSING = None

_warned = False
_file_ids = itertools.count()


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
  """The CRC-32C (Castagnoli) of `data`, masked as TFRecord files store it."""
  crc = 0xFFFFFFFF
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, data, masked CRC of it."""
  header = struct.pack('<Q', len(data))
  return b''.join((header, struct.pack('<I', _masked_crc32c(header)), data,
                   struct.pack('<I', _masked_crc32c(data))))


def _to_uint8(batch: np.ndarray) -> np.ndarray:
  """uint8 as is; floats in [0, 1] as tf.image.convert_image_dtype does."""
  if batch.dtype == np.uint8:
    return batch
  if batch.dtype.kind == 'f' or batch.dtype.name.startswith(
      ('float', 'bfloat')):
    scaled = np.clip(batch.astype(np.float32) * 255.5, 0, 255)
    return np.nan_to_num(scaled).astype(np.uint8)
  raise TypeError(f'images must be uint8 or floats in [0, 1], not '
                  f'{batch.dtype}')


def _png(image: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[-1] == 1:
    image = image[..., 0]
  out = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(image)).save(out, format='PNG')
  return out.getvalue()


class TensorBoardWriter:
  """Writes into LOGDIR/events.out.tfevents.*; `tensorboard --logdir` shows it.

  Each write call is flushed to the file before it returns.
  """

  def __init__(self, logdir: str):
    global _warned
    self._lock = threading.Lock()
    self._file = None
    self._on = _MISSING is None
    if not self._on:
      if not _warned:
        _warned = True
        logging.warning(
            'TensorBoard event files are off: the tensorboard package is '
            'missing (%s). Install it with `pip install tensorboard` (it is '
            "one of aisci's dependencies); metrics.jsonl and report.md are "
            'still written.', _MISSING)
      return
    os.makedirs(logdir, exist_ok=True)
    # tf.summary's name; the pid and a counter keep two writers (the
    # metrics' and the report's) from sharing a file within the same second.
    while self._file is None:
      name = (f'events.out.tfevents.{int(time.time()):010d}.'
              f'{socket.gethostname()}.{os.getpid()}.{next(_file_ids)}.v2')
      try:
        self._file = open(os.path.join(logdir, name), 'xb')
      except FileExistsError:
        pass
    self._write([event_pb2.Event(wall_time=time.time(),
                                 file_version='brain.Event:2')])

  def _write(self, events) -> None:
    with self._lock:
      if self._file is None:
        raise ValueError('write to a closed TensorBoardWriter')
      self._file.write(b''.join(_record(e.SerializeToString())
                                for e in events))
      self._file.flush()

  def _summary_event(self, step: int, values) -> 'event_pb2.Event':
    return event_pb2.Event(wall_time=time.time(), step=int(step),
                           summary=summary_pb2.Summary(value=values))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """scalars: name -> a number (Python, numpy or jax scalar)."""
    if not self._on:
      return
    metadata = scalar_metadata.create_summary_metadata(None, None)
    values = [
        summary_pb2.Summary.Value(
            tag=name, metadata=metadata,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                float_val=[float(np.asarray(value))]))
        for name, value in scalars.items()]
    self._write([self._summary_event(step, values)])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> [n, height, width, channels], uint8 or floats in [0, 1].

    Stored as tf.summary.image does: a string tensor [width, height, one PNG
    per image] for TensorBoard's images plugin.
    """
    if not self._on:
      return
    metadata = image_metadata.create_summary_metadata(None, None)
    values = []
    for name, batch in images.items():
      batch = np.asarray(batch)
      if batch.ndim != 4 or batch.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f'{name}: images must be [n, height, width, 1-4 '
                         f'channels], not {batch.shape}')
      batch = _to_uint8(batch)
      _, height, width, _ = batch.shape
      strings = [str(width).encode(), str(height).encode()]
      strings += [_png(image) for image in batch]
      values.append(summary_pb2.Summary.Value(
          tag=name, metadata=metadata,
          tensor=tensor_pb2.TensorProto(
              dtype=types_pb2.DT_STRING,
              tensor_shape=tensor_shape_pb2.TensorShapeProto(
                  dim=[tensor_shape_pb2.TensorShapeProto.Dim(
                      size=len(strings))]),
              string_val=strings)))
    self._write([self._summary_event(step, values)])

  def close(self) -> None:
    with self._lock:
      if self._file is not None:
        self._file.close()
        self._file = None
