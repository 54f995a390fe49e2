"""A trained run, ready to use: load it from its workdir and predict.

    trained = inference.load_trained('runs/tiny')
    images = trained.preprocess(['cat.jpg', 'dog.png'])  # [2, h, w, 3] float32
    logits = inference.predict_logits(trained, images)   # [2, num_classes]

Only the workdir is needed: config.json and dataset_info.json (written by
`python -m aisci.main`) and the parameters in its orbax checkpoints. Neither
the training data nor the optimizer state is read.
"""

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from aisci import gc_pause
from aisci import models
from aisci.train import best as best_lib
from aisci.train import checkpoint as checkpoint_lib

_TRAIN_COMMAND = ('python -m aisci.main --config=CONFIG --workdir={workdir}')


CHECKPOINTS = ('auto', 'best', 'latest')


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model with what it needs to see inputs as in training.

  Attributes:
    config: the run's config, rebuilt from WORKDIR/config.json.
    model: the Flax module; call it with train=False.
    variables: {'params': ..., **model_state} for model.apply.
    info: WORKDIR/dataset_info.json: what the data told the run (kind of
      data, input key, class names, image size and normalization, tokenizer).
    class_names: logit i is class_names[i] (empty for regression).
    image_size: images are resized to image_size x image_size (None: not an
      image model).
    mean, std: per-channel normalization, (x / 255 - mean) / std.
    step: the training step of the restored checkpoint.
    checkpoint: which one it is, e.g. 'best_checkpoint/760'.
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: Any
  info: Mapping[str, Any]
  class_names: tuple[str, ...]
  image_size: Optional[int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  step: int
  checkpoint: str = ''
  workdir: str = ''

  @property
  def kind(self) -> str:
    """'image', 'segmentation', 'text' or 'sequence' (aisci.data.source)."""
    return self.info.get('kind', 'image')

  @property
  def input_key(self) -> str:
    return self.info.get('input_key', 'image')

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


def checkpoint_dir(workdir: str, checkpoint: str = 'latest') -> str:
  """WORKDIR/checkpoints ('latest'), WORKDIR/best_checkpoint ('best'), or
  for 'auto' the best one if the run kept it, else the latest."""
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f'checkpoint must be one of {CHECKPOINTS}, not '
                     f'{checkpoint!r}.')
  best = os.path.join(workdir, best_lib.SUBDIR)
  has_best = os.path.isdir(best) and any(n.isdigit() for n in os.listdir(best))
  if checkpoint == 'best' and not has_best:
    raise FileNotFoundError(
        f'{workdir!r} kept no best checkpoint ({best} is missing or empty): '
        'the run had no config.best_metric, or never evaluated. Use '
        '--checkpoint=latest.')
  if checkpoint == 'best' or (checkpoint == 'auto' and has_best):
    return best
  return os.path.join(workdir, 'checkpoints')


def restore_variables(workdir: str, step: Optional[int] = None,
                      checkpoint: str = 'latest') -> tuple[Any, int]:
  """({'params', **model_state}, step) of checkpoint `step` (default: the
  newest) of the run's latest or best checkpoints (`checkpoint_dir`).

  The checkpoint is read as a raw pytree of arrays on one device, so neither
  the optimizer nor the abstract train state has to be rebuilt, and any
  device count may have written it; the optimizer state is dropped.
  """
  directory = checkpoint_dir(workdir, checkpoint)
  try:
    state, step = checkpoint_lib.read_on_one_device(directory, step)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f'{e} Train first with `{_TRAIN_COMMAND.format(workdir=workdir)}` '
        '(checkpoints are saved every config.checkpoint_every_steps steps '
        'and at the end).') from e
  return {'params': state['params'], **state['model_state']}, step


def model_kwargs(config: ml_collections.ConfigDict, info: Mapping[str, Any],
                 workdir: str) -> dict[str, Any]:
  """The model fields the data decided in training (dataset_info.json's
  'model_kwargs'; rebuilt for runs older than that field)."""
  if 'model_kwargs' in info:
    return dict(info['model_kwargs'])
  kwargs = {'num_classes': len(info['class_names'])}
  if info.get('kind') == 'text':
    from aisci.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
    tokenizer = tokenizer_lib.load(os.path.join(workdir, info['tokenizer']))
    kwargs.update(vocab_size=tokenizer.get_vocab_size(),
                  pad_id=tokenizer_lib.PAD_ID, max_len=info['max_length'])
  elif info.get('kind') == 'sequence':
    raise ValueError(
        f'{workdir}/dataset_info.json lacks model_kwargs (the run predates '
        'it): rerun `python -m aisci.main` on the workdir with the same '
        'config to write it again (no training happens).')
  del config
  return kwargs


def load_trained(workdir: str, step: Optional[int] = None,
                 checkpoint: str = 'latest') -> Trained:
  """The run in `workdir` at checkpoint `step` (default: the newest) of its
  'latest', 'best' or ('auto') best-if-kept checkpoints."""
  config = ml_collections.ConfigDict(_read_json(workdir, 'config.json'))
  info = _read_json(workdir, 'dataset_info.json')
  variables, step = restore_variables(workdir, step, checkpoint)
  model = models.build_model(config.model,
                             **model_kwargs(config, info, workdir))
  directory = os.path.basename(checkpoint_dir(workdir, checkpoint))
  image_size = info.get('image_size')
  return Trained(config=config, model=model, variables=variables, info=info,
                 class_names=tuple(info['class_names']),
                 image_size=int(image_size) if image_size else None,
                 mean=tuple(info.get('mean', ())),
                 std=tuple(info.get('std', ())), step=step,
                 checkpoint=f'{directory}/{step}', workdir=workdir)


def check_image_classification(config: ml_collections.ConfigDict) -> None:
  """Raises NotImplementedError for runs that are not image classifiers."""
  task = config.task.name
  input_key = config.task.to_dict().get('input_key', 'image')
  if task != 'classification' or input_key != 'image':
    raise NotImplementedError(
        f'Export supports image classification only; this run has '
        f'config.task.name={task!r} (input {input_key!r}). Use '
        '`python -m aisci.predict` for its predictions.')


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


def _jitted_apply(trained: Trained):
  """(apply, variables, batch sharding): the model's jitted forward pass,
  its variables replicated on this process's devices, and the sharding
  that splits a batch over them (data parallel; with several CPU devices
  XLA runs them on several cores: aisci.predict --cpu_devices)."""
  # A closure, not a static argument: a multi_head model does not hash. One
  # per Trained, so repeated calls reuse the compiled programs.
  cache = trained.__dict__.setdefault('_apply_cache', {})
  if 'fn' not in cache:
    model = trained.model
    mesh = Mesh(np.array(jax.local_devices()), ('batch',))
    cache['fn'] = jax.jit(
        lambda variables, x: model.apply(variables, x, train=False))
    cache['variables'] = jax.device_put(trained.variables,
                                        NamedSharding(mesh, P()))
    cache['batch_sharding'] = NamedSharding(mesh, P('batch'))
  return cache['fn'], cache['variables'], cache['batch_sharding']


def predict_outputs(trained: Trained, inputs: Sequence[np.ndarray],
                    batch_size: int = 64) -> Any:
  """Model outputs for `inputs` (a stacked array or a list of examples):
  an array [n, ...] float32, or {head: [n, ...]} for a multi-head model.

  Examples run in batches of `batch_size`; consecutive examples of one
  shape share a batch (segmentation images may differ in size). A short
  batch is padded to full size, so one compiled program serves every batch
  of a shape; batches are split over the local devices, so `batch_size` is
  rounded up to a multiple of their number.
  """
  apply, variables, batch_sharding = _jitted_apply(trained)
  n = len(inputs)
  devices = batch_sharding.mesh.size
  batch_size = -(-max(1, min(batch_size, n)) // devices) * devices
  parts, start = [], 0
  while start < n:
    shape = np.shape(inputs[start])
    stop = start + 1
    while (stop < n and stop - start < batch_size
           and np.shape(inputs[stop]) == shape):
      stop += 1
    batch = np.stack([np.asarray(x) for x in inputs[start:stop]])
    real = len(batch)
    if real < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - real,) + batch.shape[1:], batch.dtype)])
    outputs = apply(variables, jax.device_put(batch, batch_sharding))
    if not parts:  # compiled: start-up is over (python -m aisci.predict)
      gc_pause.resume()
    parts.append(jax.tree.map(lambda y, r=real: np.asarray(y[:r], np.float32),
                              outputs))
    start = stop
  if not parts:
    raise ValueError('No inputs to predict.')

  def join(*ys):
    if len({y.shape[1:] for y in ys}) == 1:
      return np.concatenate(ys)
    return [y for part in ys for y in part]  # sizes differ: one per example
  return jax.tree.map(join, *parts)


def predict_logits(trained: Trained, images: np.ndarray,
                   batch_size: int = 64) -> np.ndarray:
  """images: [n, h, w, 3] float32 normalized -> logits [n, classes] float32,
  in batches of `batch_size` (see predict_outputs)."""
  if not len(images):
    return np.zeros((0, len(trained.class_names)), np.float32)
  return predict_outputs(trained, np.asarray(images, np.float32), batch_size)
