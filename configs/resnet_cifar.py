"""ResNet-18 (CIFAR stem) on CIFAR-10, from scratch, SGD + cosine.

Variants (after a colon: configs/resnet_cifar.py:tiny):
  default  ResNet-18, width 64, 200 epochs of batch 128, SGD momentum 0.9,
           lr 0.1, weight decay 5e-4: the classic recipe, ~95% top-1 on the
           original CIFAR-10 test set; a GPU job of ~1.5 h.
  tiny     ResNet-18 at width 16 (1/16 of the FLOPs) for 2 CPU cores: 2500
           steps of batch 128, 9.5 minutes end to end; 78.86% top-1 on the
           JPEG copy of CIFAR-10 (experiments/cifar10.md, run R).

Commands:
  python -m aisci.main --config=configs/resnet_cifar.py --workdir=runs/resnet_cifar
  python -m aisci.main --config=configs/resnet_cifar.py:tiny \
      --config.dataset=imagefolder:.cache/data/cifar10-jpeg --workdir=runs/resnet_tiny

On a CPU the default model runs over 2 devices (config.cpu_devices), which
trained it 1.52x faster end to end than 8 (its step allocates 1.6-2 GB of
fresh memory each time; benchmarks/README.md, "Fresh memory every step").
Runs recorded before 2026-12-04 used 8 (--cpu_devices=8): the same
update, split differently.
"""

import ml_collections

VARIANTS = ('default', 'tiny')


def get_config(arg=None):
  variant = arg or 'default'
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of resnet_cifar; known: {VARIANTS}.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Compute dtype of the model ('float32' or 'bfloat16'); parameters,
  # norms, logits and losses stay float32.
  config.dtype = 'float32'

  config.dataset = 'cifar10'  # or imagefolder:PATH
  config.data_dir = ''
  config.train_split = 'train'
  config.eval_split = 'test'
  config.input = ml_collections.ConfigDict(dict(
      image_size=32,
      batch_size=128,
      eval_batch_size=1000,
      augment='cifar',
      # True: each image mirrored in every other epoch (airbench's
      # alternating flip), with a flip-free augment ('none', 'crop_pad2').
      alternating_flip=False,
      cache=True,
      # True: the decoded training split is held on the devices and each
      # epoch is shuffled and augmented there (aisci/train/device_input.py),
      # for GPUs that outrun tf.data; needs cache=True and fits CIFAR-sized
      # data. Another order than the tf.data path for the same seed.
      on_device=False,
      # Unreadable or non-image files: False stops with an error naming the
      # file; True leaves them out and counts them in the log.
      skip_corrupt=False,
      mean=(0.4914, 0.4822, 0.4465),
      std=(0.2470, 0.2435, 0.2616),
  ))

  config.model = ml_collections.ConfigDict(dict(
      name='resnet',
      depth=18,
      stem='cifar',
      width=64,
      zero_init_last_bn=True,
      remat=False,  # recompute each block's activations in the backward pass
  ))
  config.task = ml_collections.ConfigDict(dict(
      name='classification',
      label_smoothing=0.1,
  ))

  config.total_steps = 78_000  # 200 epochs of 390 steps
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd',
      learning_rate=0.1,
      weight_decay=5e-4,
      b1=0.9,  # adamw only
      b2=0.999,  # adamw only
      momentum=0.9,
      nesterov=True,
      grad_clip_norm=0.0,
      freeze=(),  # regexes of parameter names to keep fixed
      layer_decay=1.0,  # < 1: layer-wise learning-rate decay (fine-tuning)
      # (regex, factor) pairs: learning-rate factors by parameter name
      lr_mults=(),
      # A NaN/Inf loss or gradient norm: False stops the run (the last good
      # checkpoint is kept); True skips that update and counts it in the log.
      skip_nonfinite_updates=False,
  ))
  config.schedule = ml_collections.ConfigDict(dict(
      warmup_steps=390,
      decay='cosine',
      end_learning_rate_factor=0.0,
      warmup_start_factor=0.0,  # warm-up starts at this x peak
  ))

  # Fine-tuning: start from an aisci workdir/checkpoint, a ViT .npz or a
  # Hugging Face .safetensors file (see aisci/train/init_from.py).
  config.init = ml_collections.ConfigDict(dict(
      path='',  # '' = from scratch
      format='auto',  # auto | aisci | vit_npz | hf_vit | hf_bert | hf_resnet
      reinit=(),  # name prefixes initialised afresh, e.g. ('head',)
  ))
  # Magnitude pruning (aisci/train/prune.py), usually with config.init.path:
  # the `sparsity` fraction of the weights matching `include`, smallest
  # |value| over all of them, is set to zero and kept there by the optimizer.
  config.prune = ml_collections.ConfigDict(dict(
      sparsity=0.0,  # 0: no pruning; e.g. 0.5, 0.8, 0.9
      include=r'(^|/)kernel$',  # regex on parameter names: conv/dense weights
      exclude=r'(^|/)head/',  # ... but not the classifier's (prune.py says why)
  ))

  # Devices: data parallel over all of them; fsdp=N shards parameters and
  # optimizer state N ways, model=N splits transformer MLPs/heads N ways
  # (aisci/train/sharding.py). --config.mesh.fsdp=4 on 8 devices -> 2 x 4.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  # CPU runs only: the devices aisci.main splits the CPU into (--cpu_devices
  # overrides). A step holding hundreds of MB of activations per device ran
  # ~1.5x faster over 2 than over 8 on 2 cores: fewer threads zeroing fresh
  # memory at once (benchmarks/README.md, "Fresh memory every step").
  config.cpu_devices = 2
  # k > 1: each step's batch is processed as k micro-batches of batch_size/k
  # and their gradients averaged: the same update, k times less activation
  # memory (aisci/train/grad_accum.py).
  config.grad_accum_steps = 1
  # The progress line's MFU divides by this, per device in TFLOP/s; 0: the
  # datasheet figure of known GPUs and TPUs (aisci/train/flops.py), else
  # TFLOP/s only (CPUs, other chips).
  config.peak_tflops = 0.0
  # A jax.profiler trace of the steps after the first start_step, into
  # WORKDIR/profile (aisci/train/step_profile.py); num_steps=0: none.
  config.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  config.log_every_steps = 100
  config.eval_every_steps = 3900
  config.checkpoint_every_steps = 3900
  config.keep_checkpoints = 3

  if variant == 'tiny':
    config.model.width = 16
    config.total_steps = 2500
    config.schedule.warmup_steps = 200
    config.log_every_steps = 50
    config.eval_every_steps = 1250
    config.checkpoint_every_steps = 250
  return config
