"""ViT on CIFAR-10, from scratch.

Variants (pass after a colon: configs/vit_cifar.py:tiny):
  default  ViT-S/4, 200 epochs of batch 512, AdamW, cosine; a GPU recipe
           (about 2 h on one A100/H100-class GPU). Expected top-1 on the
           original CIFAR-10 test set: ~90% (ViT-S/4 from scratch with
           crop+flip only; stronger augmentation adds more).
  tiny     a 4-block ViT of width 128 with a conv stem for 2 CPU cores:
           3200 steps of batch 128 (8 epochs); 71.51% top-1 on the JPEG
           copy of CIFAR-10 (experiments/cifar10.md, run C; 65.15% with
           the patch stem, run H, in 14 minutes end to end on a fast day).
  tiny_15min  tiny in 6.4 epochs of batch 64 (5000 steps) with alternating
           flip and flip + one-pixel-shift test-time views, for a
           15-minute budget: seeds 0, 1, 2 and 4 71.97%, 71.00%, 70.56%
           and 70.47% in 12:59-13:31 end to end on 2 CPU cores at ~420-480
           images/s; seed 3 (the same views on its final weights): 71.56%
           (experiments/cifar10.md), over 8 CPU devices; now over 2,
           faster at this batch: 71.69% in 12:38 on an AVX2-only CPU in a
           calm hour, 16:23 in a slow one (18:58 over 8).
  tiny_muon  tiny_15min with Muon on the blocks' matrices (AdamW on the
           rest; aisci/train/muon.py) in 3000 steps: seeds 0, 1 and 2
           76.63%, 75.54% and 76.08% in 9:45-10:48 end to end on 2 CPU
           cores, where tiny_15min made 71.69% in 12:38 the same hour.

Commands:
  python -m aisci.main --config=configs/vit_cifar.py --workdir=runs/vit_cifar
  python -m aisci.main --config=configs/vit_cifar.py:tiny \
      --config.dataset=imagefolder:.cache/data/cifar10-jpeg --workdir=runs/tiny

On a CPU the default variant runs over 2 devices (config.cpu_devices), the
tiny ones over 8. Larger ViTs on a 2-core CPU (e.g.
--config.model.variant=Ti/4 --config.input.batch_size=128): add
--config.grad_accum_steps=4 (each batch's update computed in 4
micro-batches); with the 2 devices that trained ViT-Ti/4 1.47x faster end
to end than 8 devices without micro-batches (benchmarks/README.md, "Fresh
memory every step").
"""

import ml_collections

VARIANTS = ('default', 'tiny', 'tiny_15min', 'tiny_muon')


def get_config(arg=None):
  variant = arg or 'default'
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of vit_cifar; known: {VARIANTS}.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Compute dtype of the model ('float32' or 'bfloat16'); parameters,
  # norms, logits and losses stay float32.
  config.dtype = 'float32'

  # Data: a tfds name or imagefolder:PATH (PATH/{train,test}/<class>/*.jpg).
  config.dataset = 'cifar10'
  config.data_dir = ''  # tfds data_dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.train_split = 'train'
  config.eval_split = 'test'
  config.input = ml_collections.ConfigDict(dict(
      image_size=32,
      batch_size=512,  # global, over all devices and processes
      eval_batch_size=1000,
      augment='cifar',  # pad 4 + random 32x32 crop + horizontal flip
      # True: each image mirrored in every other epoch (airbench's
      # alternating flip), with a flip-free augment ('none', 'crop_pad2').
      alternating_flip=False,
      cache=True,  # decode images once into memory
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
      name='vit',
      variant='S/4',
      width=None, depth=None, mlp_dim=None, num_heads=None, patch_size=None,
      pool='gap',
      dropout=0.0,
      attention_dropout=0.0,
      stochastic_depth=0.1,
      head_zero_init=True,
      remat=False,
      stem='patch',  # 'conv': strided 3x3 convs embed the patches (vit.py)
      stem_width=32,  # channels of the conv stem's first conv
      tta_flip=False,  # evaluation: average the logits with the mirror image's
      tta_translate=False,  # ... and with those of one-pixel shifts (tta.py)
      # 'fused': cuDNN flash attention on NVIDIA GPUs (the same XLA
      # computation elsewhere; aisci/models/attention.py), no attention
      # dropout.
      attention='xla',
  ))
  config.task = ml_collections.ConfigDict(dict(
      name='classification',
      label_smoothing=0.1,
  ))

  config.total_steps = 19_500  # 200 epochs of 97 steps
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw',  # 'adamw', 'sgd' or 'muon' (aisci/train/muon.py)
      learning_rate=1e-3,
      weight_decay=0.05,
      b1=0.9,
      b2=0.999,
      momentum=0.9,  # sgd and muon (muon's Nesterov momentum)
      nesterov=False,  # sgd only
      grad_clip_norm=1.0,
      freeze=(),  # regexes of parameter names to keep fixed
      layer_decay=1.0,  # < 1: layer-wise learning-rate decay (fine-tuning)
      # (regex, factor) pairs: learning-rate factors by parameter name
      lr_mults=(),
      # A NaN/Inf loss or gradient norm: False stops the run (the last good
      # checkpoint is kept); True skips that update and counts it in the log.
      skip_nonfinite_updates=False,
      # every > 0: an EMA of the weights every `every` steps, the model
      # ending at the EMA (aisci/train/lookahead.py); 0: off.
      lookahead=dict(every=0, decay=0.0),
  ))
  config.schedule = ml_collections.ConfigDict(dict(
      warmup_steps=975,  # 10 epochs
      decay='cosine',
      end_learning_rate_factor=0.01,
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
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3

  if variant in ('tiny', 'tiny_15min', 'tiny_muon'):
    config.model.variant = None
    # A conv stem and flip TTA: +2.3 and +1.5 points in 600-step proxies
    # (experiments/cifar10.md), for 10% more time per step.
    config.model.update(width=128, depth=4, mlp_dim=256, num_heads=4,
                        patch_size=4, stochastic_depth=0.0, stem='conv',
                        tta_flip=True)
    config.input.batch_size = 128
    # A batch of 1,000 test images does not stay in the CPU's caches: on 8
    # CPU devices evaluation ran at 465-505 images/s, at 200 715-760 (10,000
    # test images in 13-14 s instead of 17-20 s; tiny_15min's 6 views 160
    # instead of 133-144). The default recipe keeps 1,000 for accelerators.
    config.input.eval_batch_size = 200
    # 7 epochs underfit (train accuracy below test): flips only, no crops.
    config.input.augment = 'flip'
    config.total_steps = 3200  # 8.2 epochs
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 0.05
    config.schedule.warmup_steps = 200
    config.log_every_steps = 50
    config.eval_every_steps = 1600
    config.checkpoint_every_steps = 200
    # Small steps: 8 devices as fast as 2 or faster, and the recorded runs
    # used 8 (benchmarks/README.md).
    config.cpu_devices = 8
  if variant in ('tiny_15min', 'tiny_muon'):
    # 6.4 epochs, each image mirrored in every other one (airbench's
    # alternating flip) instead of a coin flip each time. Batch 64: the
    # step's images/s on 2 cores are those of batch 128, so twice the
    # updates in the same time (+1.4 points for seed 1); the peak learning
    # rate scaled by ~1/sqrt(2) (experiments/cifar10.md).
    config.input.update(batch_size=64, augment='none', alternating_flip=True)
    config.total_steps = 5000
    config.optimizer.learning_rate = 1.5e-3
    config.schedule.warmup_steps = 400
    # Evaluation also on copies shifted by one pixel (airbench's views):
    # +0.8 to +1.1 points on the final weights of five seeds, for ~38 s
    # more per evaluation; so only the final one.
    config.model.tta_translate = True
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 400
    # At batch 64, 8 devices hold 8 images each: over 2 the step ran 1.24x
    # faster and the whole run ended in 16:23 instead of 18:58 (71.69 % and
    # 71.64 %; an AVX2-only CPU, experiments/cifar10.md). The five seeds
    # recorded above ran over 8 (--config.cpu_devices=8 repeats them).
    config.cpu_devices = 2
  if variant == 'tiny_muon':
    # Muon on the blocks' matrices (aisci/train/muon.py): in 1250-step
    # proxies 63.7 % at AdamW's 1.5e-3 and 66.8 % at 3e-3, against AdamW's
    # 56.7 %. Its Newton-Schulz steps cost 12-25 % of the step on 2 CPU
    # cores, so 3000 steps (3.8 epochs) instead of 5000 (experiments/cifar10.md).
    config.optimizer.update(name='muon', learning_rate=3e-3, momentum=0.95)
    config.total_steps = 3000
    config.schedule.warmup_steps = 240
    config.eval_every_steps = 3000
  return config
