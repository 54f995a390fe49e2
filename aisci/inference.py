"""A trained run, ready to use: load it from its workdir and predict.

    trained = inference.load_trained('runs/tiny')
    images = trained.preprocess(['cat.jpg', 'dog.png'])  # [2, h, w, 3] float32
    logits = inference.predict_logits(trained, images)   # [2, num_classes]

Only the workdir is needed: config.json and dataset_info.json (written by
`python -m aisci.main`) and the parameters in its orbax checkpoints. Neither
the training data nor the optimizer state is read.
"""

import dataclasses
import functools
import json
import os
from typing import Any, Iterable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from aisci import models

_TRAIN_COMMAND = ('python -m aisci.main --config=CONFIG --workdir={workdir}')


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model with what it needs to see images as in training.

  Attributes:
    config: the run's config, rebuilt from WORKDIR/config.json.
    model: the Flax module; call it with train=False.
    variables: {'params': ..., **model_state} for model.apply.
    class_names: logit i is class_names[i].
    image_size: images are resized to image_size x image_size.
    mean, std: per-channel normalization, (x / 255 - mean) / std.
    step: the training step of the restored checkpoint.
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: Any
  class_names: tuple[str, ...]
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  step: int

  def preprocess(self, paths: Sequence[str]) -> np.ndarray:
    """Image files -> [len(paths), image_size, image_size, 3] float32."""
    return preprocess(paths, image_size=self.image_size, mean=self.mean,
                      std=self.std)


def _read_json(workdir: str, name: str) -> Any:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {workdir!r} is not a training workdir, or '
        f'its run started before {name} was written. It is created by '
        f'`{_TRAIN_COMMAND.format(workdir=workdir)}` (rerunning a finished '
        'run with the same workdir writes it again without training).')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def restore_variables(workdir: str, step: Optional[int] = None
                      ) -> tuple[Any, int]:
  """({'params', **model_state}, step) of checkpoint `step` (default: latest).

  The checkpoint is read as a raw pytree of arrays on one device, so neither
  the optimizer nor the abstract train state has to be rebuilt, and any
  device count may have written it; the optimizer state is read from disk
  but dropped.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = []
  if os.path.isdir(directory):
    manager = ocp.CheckpointManager(
        directory, item_handlers=ocp.StandardCheckpointHandler())
    steps = list(manager.all_steps())
  if not steps:
    raise FileNotFoundError(
        f'No checkpoint in {directory}: train first with '
        f'`{_TRAIN_COMMAND.format(workdir=workdir)}` (checkpoints are saved '
        'every config.checkpoint_every_steps steps and at the end).')
  if step is None:
    step = manager.latest_step()
  elif step not in steps:
    raise ValueError(f'No checkpoint of step {step} in {directory}; '
                     f'available steps: {sorted(steps)}.')
  # Onto this process's first device, whatever devices wrote the checkpoint
  # (a run on 8 CPU devices or a GPU node, read on a laptop).
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      manager.item_metadata(step))
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  return {'params': state['params'], **state['model_state']}, int(step)


def load_trained(workdir: str, step: Optional[int] = None) -> Trained:
  """The run in `workdir` at checkpoint `step` (default: the latest)."""
  config = ml_collections.ConfigDict(_read_json(workdir, 'config.json'))
  info = _read_json(workdir, 'dataset_info.json')
  variables, step = restore_variables(workdir, step)
  model = models.build_model(config.model,
                             num_classes=len(info['class_names']))
  return Trained(config=config, model=model, variables=variables,
                 class_names=tuple(info['class_names']),
                 image_size=int(info['image_size']),
                 mean=tuple(info['mean']), std=tuple(info['std']), step=step)


def check_image_classification(config: ml_collections.ConfigDict) -> None:
  """Raises NotImplementedError for runs that are not image classifiers."""
  task = config.task.name
  input_key = config.task.to_dict().get('input_key', 'image')
  if task != 'classification' or input_key != 'image':
    raise NotImplementedError(
        f'Prediction and export support image classification only; this run '
        f'has config.task.name={task!r} (input {input_key!r}). Segmentation '
        'and text outputs are not implemented yet.')


def preprocess(paths: Sequence[str], *, image_size: int,
               mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Image files -> [n, image_size, image_size, 3] float32, normalized.

  The same numbers as the training input pipeline: decode to RGB, bilinear
  resize (aisci.data.imagefolder.load_image), then (x / 255 - mean) / std.
  """
  # Imported here: aisci.data imports TensorFlow, which costs seconds.
  from aisci.data import imagefolder  # pylint: disable=g-import-not-at-top
  images = np.stack([imagefolder.load_image(p, image_size) for p in paths])
  return normalize(images, mean, std)


def expand_paths(paths: Iterable[str]) -> list[str]:
  """Files as given; folders -> their image files, recursively, sorted."""
  from aisci.data import imagefolder  # pylint: disable=g-import-not-at-top
  extensions = imagefolder.IMAGE_EXTENSIONS
  files = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(
          os.path.join(root, name) for root, _, names in os.walk(path)
          for name in names if name.lower().endswith(extensions))
      if not found:
        raise FileNotFoundError(f'Folder {path!r} holds no image files '
                                f'({", ".join(extensions)}).')
      files += found
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise FileNotFoundError(f'{path!r} is neither a file nor a folder.')
  return files


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
  """uint8 [..., 3] -> float32 (x / 255 - mean) / std, as aisci.data.augment."""
  x = images.astype(np.float32) / np.float32(255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


@functools.partial(jax.jit, static_argnames='model')
def _apply(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  return model.apply(variables, images, train=False)


def predict_logits(trained: Trained, images: np.ndarray,
                   batch_size: int = 64) -> np.ndarray:
  """images: [n, h, w, 3] float32 normalized -> logits [n, classes] float32.

  Runs in batches of `batch_size`; the last batch is padded to full size so
  that one compiled program serves every batch.
  """
  n = len(images)
  batch_size = max(1, min(batch_size, n))
  outputs = []
  for start in range(0, n, batch_size):
    batch = np.asarray(images[start:start + batch_size], np.float32)
    real = len(batch)
    if real < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - real,) + batch.shape[1:],
                           np.float32)])
    logits = _apply(trained.model, trained.variables, jnp.asarray(batch))
    outputs.append(np.asarray(logits[:real], np.float32))
  if not outputs:
    return np.zeros((0, len(trained.class_names)), np.float32)
  return np.concatenate(outputs)
