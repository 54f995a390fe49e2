"""The benchmarked models: aisci configs, and how to build their PyTorch twins.

Each entry is a config file (with variant) plus overrides; the PyTorch model
is built from the same config fields, so the two cannot drift apart.
"""

import functools
import os
import time

import ml_collections
import numpy as np

from aisci import config_overrides
from aisci import cpu_devices as aisci_cpu_devices
from benchmarks import common

NUM_CLASSES = 10

# name -> (config file:variant, config overrides, description)
MODELS = {
    'vit_ti4': ('configs/vit_cifar.py', dict(
        model=dict(variant='Ti/4', stochastic_depth=0.0)),
                'ViT-Ti/4 (width 192, depth 12, 3 heads, MLP 768, 64 tokens)'),
    # The patch stem, as the PyTorch twin has (the config's conv stem costs
    # ~10% more per step).
    'vit_tiny': ('configs/vit_cifar.py:tiny', dict(
        model=dict(stem='patch', tta_flip=False)),
                 'vit_cifar.py:tiny (width 128, depth 4, 4 heads, MLP 256)'),
    # The config as it trains: conv stem (strided 3x3 convs) and flip TTA.
    'vit_tiny_conv': ('configs/vit_cifar.py:tiny', {},
                      'vit_cifar.py:tiny with its conv stem'),
    # Its Muon variant: the optimizer's share of the step (muon.py).
    'vit_tiny_muon': ('configs/vit_cifar.py:tiny_muon', {},
                      'vit_cifar.py:tiny_muon (conv stem, Muon)'),
    'resnet18': ('configs/resnet_cifar.py', {},
                 'ResNet-18 CIFAR, width 64 (resnet_cifar.py)'),
    'resnet18_tiny': ('configs/resnet_cifar.py:tiny', {},
                      'ResNet-18 CIFAR, width 16 (resnet_cifar.py:tiny)'),
    # bf16 compute on a CPU (PyTorch twin under torch.autocast): whether
    # config.dtype='bfloat16' pays on CPUs with bf16 instructions.
    'vit_tiny_bf16': ('configs/vit_cifar.py:tiny', dict(
        model=dict(stem='patch', tta_flip=False), dtype='bfloat16'),
                      'vit_cifar.py:tiny, bf16 compute'),
    'resnet18_bf16': ('configs/resnet_cifar.py', dict(dtype='bfloat16'),
                      'ResNet-18 CIFAR, width 64, bf16 compute'),
    # ImageNet-sized, for accelerators (benchmarks/gpu.py): bf16 compute,
    # 196 tokens at 224x224 (a 10-class head: 0.004 % of the FLOPs).
    'vit_b16': ('configs/vit_cifar.py', dict(
        model=dict(variant='B/16', stochastic_depth=0.0),
        input=dict(image_size=224), dtype='bfloat16'),
                'ViT-B/16 at 224x224, bf16 (width 768, depth 12, 12 heads, '
                'MLP 3072, 196 tokens)'),
    'vit_b16_fused': ('configs/vit_cifar.py', dict(
        model=dict(variant='B/16', stochastic_depth=0.0, attention='fused'),
        input=dict(image_size=224), dtype='bfloat16'),
                      'ViT-B/16 at 224x224, bf16, fused attention (cuDNN)'),
    'fastcnn': ('configs/cifar_fast.py', {},
                'FastCNN 64/256/256 (cifar_fast.py)'),
    'fastcnn_cpu': ('configs/cifar_fast.py:cpu', {},
                    'FastCNN 32/128/128 (cifar_fast.py:cpu)'),
    'fastcnn_airbench': ('configs/cifar_fast.py:cpu_airbench_opt', {},
                         'FastCNN 32/128/128, whitened stem '
                         '(cifar_fast.py:cpu_airbench_opt)'),
    # BatchNorm statistics per device (8 ghost batches of 64): no
    # all-reduce in the middle of the step (models/ghost_batch_norm.py).
    'fastcnn_airbench_ghost': ('configs/cifar_fast.py:cpu_airbench_opt',
                               dict(model=dict(bn_groups=8)),
                               'FastCNN 32/128/128, whitened stem, 8 ghost '
                               'batches'),
    'fastcnn_airbench_valid': ('configs/cifar_fast.py:cpu_airbench_opt',
                               dict(model=dict(stem_padding='VALID')),
                               'FastCNN 32/128/128, whitened stem unpadded '
                               "(airbench's 31x31)"),
    'fastcnn_tiny': ('configs/cifar_fast.py:tiny', {},
                     'FastCNN 16/32/32 (cifar_fast.py:tiny)'),
}


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:variant' (relative to the repository) -> its ConfigDict."""
  return config_overrides.load(os.path.join(common.REPO, spec))


def config_for(name: str, batch_size: int | None = None,
               grad_accum_steps: int | None = None
               ) -> ml_collections.ConfigDict:
  """The config of benchmark model `name`; None keeps the config's value."""
  if name not in MODELS:
    raise ValueError(f'Unknown benchmark model {name!r}; known: {sorted(MODELS)}.')
  spec, overrides, _ = MODELS[name]
  config = load_config(spec)
  for section, fields in overrides.items():
    if isinstance(fields, dict):
      config[section].update(fields)
    else:  # a top-level field, e.g. dtype
      config[section] = fields
  if batch_size:
    config.input.batch_size = batch_size
  if grad_accum_steps:
    config.grad_accum_steps = grad_accum_steps
  return config


def cpu_devices(name: str) -> int:
  """The CPU device count `python -m aisci.main` runs model `name`'s config
  with (its config.cpu_devices)."""
  return aisci_cpu_devices.choose(None, config_for(name))[0]


def synthetic_batch(batch_size: int, image_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """images [batch, size, size, 3] float32 N(0, 1), labels [batch] int32."""
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch_size, image_size, image_size, 3))
  labels = rng.integers(0, NUM_CLASSES, batch_size)
  return images.astype(np.float32), labels.astype(np.int32)


def aisci_parts_for(config: ml_collections.ConfigDict,
                    num_classes: int = NUM_CLASSES,
                    example_shape: tuple[int, ...] | None = None) -> dict:
  """What aisci/train/loop.py builds from `config` before its first step:
  mesh shardings, model, task, optimizer and schedule, and the jitted init,
  train step (donating the state) and eval step (the task's sums and the
  model's outputs), jitted as the loop jits them; nothing run or compiled
  yet. example_shape: init's input, as the loop takes it from the data
  (default [1, image_size, image_size, 3])."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from aisci import models
  from aisci import tasks
  from aisci.train import optimizer as optimizer_lib
  from aisci.train import sharding as sharding_lib
  from aisci.train import steps
  # pylint: enable=g-import-not-at-top
  mesh = sharding_lib.make_mesh(config.mesh)
  model = models.build_model(config.model, num_classes=num_classes,
                             dtype=jnp.dtype(config.dtype))
  task = tasks.build_task(config.task, num_classes=num_classes)
  tx, schedule = optimizer_lib.make_optimizer(config, mesh)
  size = config.input.get('image_size')
  init_fn = functools.partial(
      steps.init_state, model=model, tx=tx,
      example_input=jnp.zeros(example_shape or (1, size, size, 3)))
  rng = jax.random.PRNGKey(config.seed)
  state_sharding = sharding_lib.state_sharding(jax.eval_shape(init_fn, rng),
                                               mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, model=model, task=task, tx=tx,
                        schedule=schedule,
                        grad_accum_steps=config.get('grad_accum_steps', 1)),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  eval_step = jax.jit(
      functools.partial(steps.eval_step, model=model, task=task),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(replicated, batch_sharding))
  return dict(
      config=config, model=model, task=task, tx=tx, schedule=schedule,
      rng=rng, state_sharding=state_sharding, batch_sharding=batch_sharding,
      replicated=replicated,
      init=jax.jit(init_fn, out_shardings=state_sharding),
      train_step=train_step, eval_step=eval_step)


def _aisci_parts(name: str, batch_size: int,
                 grad_accum_steps: int | None = None) -> dict:
  """Model `name` as aisci/train/loop.py builds it (aisci_parts_for) and a
  synthetic batch on the devices."""
  import jax  # pylint: disable=g-import-not-at-top
  parts = aisci_parts_for(config_for(name, batch_size, grad_accum_steps))
  size = parts['config'].input.image_size
  images, labels = synthetic_batch(batch_size, size)
  return dict(parts, batch={
      'image': jax.device_put(images, parts['batch_sharding']),
      'label': jax.device_put(labels, parts['batch_sharding'])})


def aisci_jitted(name: str, batch_size: int,
                 grad_accum_steps: int | None = None):
  """aisci's init and train step for model `name`, jitted as
  aisci/train/loop.py does, nothing run or compiled yet.

  Returns (jitted init, its rng, jitted step, batch on the devices): init
  gives the replicated state, the step donates it, the batch is sharded over
  a mesh of all devices.
  """
  parts = _aisci_parts(name, batch_size, grad_accum_steps)
  return parts['init'], parts['rng'], parts['train_step'], parts['batch']


def aisci_eval_step(name: str, batch_size: int):
  """(jitted eval step, initial state, batch of `batch_size` with a mask on
  the devices): the evaluation step of model `name`, jitted as
  aisci/train/loop.py does (the task's sums and the model's outputs)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  # pylint: enable=g-import-not-at-top
  parts = _aisci_parts(name, batch_size)
  batch = dict(parts['batch'], mask=jax.device_put(
      jnp.ones(batch_size, bool), parts['batch_sharding']))
  return parts['eval_step'], parts['init'](parts['rng']), batch


def aisci_train_step(name: str, batch_size: int,
                     grad_accum_steps: int | None = None):
  """(jitted step, initial state, batch on the devices): aisci_jitted with
  init run."""
  init, rng, train_step, batch = aisci_jitted(name, batch_size,
                                              grad_accum_steps)
  return train_step, init(rng), batch


def step_runner(train_step, state, batch):
  """(compiled step, compile seconds, run, holder): `run()` does one step of
  the AOT-compiled `train_step` on the state in holder[0] (donated and
  replaced) and waits for it."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready((holder[0], metrics))

  return compiled, compile_s, run, holder


def vit_train_flops(sizes: dict, image_size: int, num_classes: int) -> float:
  """FLOPs of one image's training step of a ViT with mean pooling: 3 x the
  forward pass (backward = 2 x forward), counting matrix products and
  attention (2 FLOPs per multiply-add), not norms, GELU or the optimizer."""
  width, mlp, depth = sizes['width'], sizes['mlp_dim'], sizes['depth']
  patch = sizes['patch_size']
  tokens = (image_size // patch)**2
  embed = 2 * tokens * (patch * patch * 3) * width
  per_layer = (2 * tokens * 4 * width * width  # q, k, v and output projections
               + 2 * tokens * 2 * width * mlp  # the MLP's two Dense layers
               + 2 * 2 * tokens * tokens * width)  # q.k and attention x v
  head = 2 * width * num_classes
  return 3.0 * (embed + depth * per_layer + head)


def model_flops(name: str) -> float:
  """Training FLOPs per image of benchmark ViT `name` (vit_train_flops)."""
  from aisci import models  # pylint: disable=g-import-not-at-top
  config = config_for(name)
  if config.model.name != 'vit':
    raise ValueError(f'benchmarks.gpu counts ViT FLOPs; {name!r} is a '
                     f'{config.model.name}.')
  sizes = models.build_model(config.model,
                             num_classes=NUM_CLASSES).sizes()
  return vit_train_flops(sizes, config.input.image_size,
                         NUM_CLASSES)


def has_torch_twin(name: str) -> bool:
  config = config_for(name)
  if config.optimizer.name not in ('adamw', 'sgd'):  # torch_worker's two
    return False
  model = config.model
  patch_vit = model.name == 'vit' and model.get('stem', 'patch') == 'patch'
  return patch_vit or (model.name == 'resnet' and model.depth == 18
                       and model.stem == 'cifar') or _airbench_fastcnn(model)


def has_inference_twin(name: str) -> bool:
  """A PyTorch twin whose plain forward pass is aisci's evaluation of model
  `name`: no test-time views."""
  model = config_for(name).model
  return (has_torch_twin(name) and not model.get('tta_flip')
          and not model.get('tta_translate'))


def _airbench_fastcnn(model) -> bool:
  """A FastCNN whose PyTorch twin is benchmarks/torch_cifar.py's network:
  the whitened stem, three groups, BatchNorm scales fixed."""
  return (model.name == 'fastcnn' and model.stem == 'whiten'
          and len(model.widths) == 3 and not model.bn_scale
          and not model.residual and model.get('bn_groups', 1) == 1)


def torch_model_and_batch(config: ml_collections.ConfigDict):
  """(PyTorch twin of config.model, images [batch, 3, size, size], labels
  [batch] int64) on the CPU, seeded, one thread per core: the synthetic
  batch aisci gets, stored NHWC (channels_last) for the CNNs, as aisci
  lays it out."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = torch_model(config)
  images, labels = synthetic_batch(config.input.batch_size,
                                   config.input.image_size)
  x = torch.from_numpy(images).permute(0, 3, 1, 2)  # NHWC storage
  if config.model.name in ('resnet', 'fastcnn'):
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  else:
    x = x.contiguous()
  return model, x, torch.from_numpy(labels).long()


def torch_model(config: ml_collections.ConfigDict,
                num_classes: int = NUM_CLASSES):
  """The PyTorch twin of `config.model` (ViT, CIFAR ResNet-18, or the
  airbench FastCNN)."""
  from aisci import models  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  m = config.model
  if m.name == 'vit':
    sizes = models.build_model(m, num_classes=num_classes).sizes()
    if m.pool != 'gap' or m.dropout or m.attention_dropout or m.stochastic_depth:
      raise ValueError('The PyTorch ViT twin has mean pooling and no dropout; '
                       'set pool=gap and zero dropouts in the benchmark config.')
    return torch_models.ViT(
        num_classes=num_classes, image_size=config.input.image_size,
        patch_size=sizes['patch_size'], width=sizes['width'],
        depth=sizes['depth'], heads=sizes['num_heads'],
        mlp_dim=sizes['mlp_dim'])
  if m.name == 'resnet' and m.depth == 18 and m.stem == 'cifar':
    return torch_models.ResNet18(num_classes=num_classes, width=m.width)
  if _airbench_fastcnn(m):
    return torch_models.airbench_net(m.widths, num_classes,
                                     aisci_shapes=m.stem_padding == 'SAME',
                                     bn_momentum=m.bn_momentum,
                                     head_scale=m.head_scale)
  raise ValueError(f'No PyTorch twin for model {m.to_dict()}.')
