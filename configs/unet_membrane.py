"""U-Net on the ISBI 2012 electron-microscopy membrane set (Ronneberger et
al. 2015's data): two classes per pixel, membrane and cell interior.

Data: segfolder:PATH with PATH/{train,val}/{images,masks}/N.png (25 train,
5 val slices of 512x512; `make data` extracts ../shared/data/
isbi2012-membrane.tar.gz into .cache/data). Training sees random 128x128
crops under the 8 flips/90-degree rotations; evaluation runs on the full
512x512 validation slices (the U-Net is fully convolutional) and reports
per-class and mean Dice and IoU over all their pixels.

Variants (configs/unet_membrane.py:VARIANT):
  default    U-Net depth 4, base width 16, cross-entropy + Dice loss, for 2
             CPU cores in about 20 minutes (experiments/segmentation.md).
  multitask  the same U-Net with two heads: the mask, and the regression of
             each crop's membrane-pixel fraction (weight 0.5).

Commands:
  python -m aisci.main --config=configs/unet_membrane.py \
      --config.dataset=segfolder:.cache/data/isbi2012-membrane --workdir=runs/unet
"""

import ml_collections

VARIANTS = ('default', 'multitask')


def get_config(arg=None):
  variant = arg or 'default'
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of unet_membrane; known: {VARIANTS}.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dtype = 'float32'  # compute dtype; 'bfloat16' on GPU/TPU

  config.dataset = 'segfolder:.cache/data/isbi2012-membrane'
  config.data_dir = ''
  config.train_split = 'train'
  config.eval_split = 'val'
  config.input = ml_collections.ConfigDict(dict(
      image_size=0,  # 0: keep the files' 512x512
      channels=1,  # grayscale EM
      class_names=('membrane', 'interior'),  # mask 0 and 255
      # tfds sets by name only: the mask feature and the value of class 0,
      # e.g. --config.dataset=oxford_iiit_pet --config.input.mask_feature=segmentation_mask
      # --config.input.mask_offset=1 --config.input.image_size=128 --config.input.channels=3
      mask_feature='',
      mask_offset=0,
      crop_size=128,  # random training crops; eval sees whole slices
      augment='dihedral',  # the 8 flips and 90-degree rotations, image and mask alike
      intensity_jitter=0.1,  # brightness/contrast +-10%, image only
      batch_size=8,
      eval_batch_size=8,  # the 5 slices; run as one batch of 6 on 2 devices
      cache=True,
      mean=(0.491,),  # of the 25 training slices
      std=(0.171,),
  ))

  config.model = ml_collections.ConfigDict(dict(
      name='unet',
      depth=4,
      base_width=16,
      norm='batch',
      upsample='transpose',
      tta='dihedral',  # evaluate on the 8 flips/rotations, averaged
  ))
  config.task = ml_collections.ConfigDict(dict(
      name='segmentation',
      loss_type='ce+dice',
      dice_smooth=1.0,
      target='label',
  ))

  config.total_steps = 760
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw',
      learning_rate=2e-3,
      weight_decay=1e-4,
      b1=0.9,
      b2=0.999,
      momentum=0.9,  # sgd and muon (aisci/train/muon.py)
      nesterov=False,  # sgd only
      grad_clip_norm=1.0,
      freeze=(),
      layer_decay=1.0,
      # (regex, factor) pairs: learning-rate factors by parameter name
      lr_mults=(),
      skip_nonfinite_updates=False,
  ))
  config.schedule = ml_collections.ConfigDict(dict(
      warmup_steps=50,
      decay='cosine',
      end_learning_rate_factor=0.01,
      warmup_start_factor=0.0,  # warm-up starts at this x peak
  ))
  config.init = ml_collections.ConfigDict(dict(path='', format='auto', reinit=()))
  # Magnitude pruning when fine-tuning from config.init (aisci/train/prune.py).
  config.prune = ml_collections.ConfigDict(dict(
      sparsity=0.0, include=r'(^|/)kernel$', exclude=r'(^|/)(head|logits)/'))

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  # CPU runs only: the devices aisci.main splits the CPU into (--cpu_devices
  # overrides). Batch 8 over 8 devices is one crop each; over 2, steps
  # 50-150 took 52-53 s instead of 57-58 s on 2 cores, and a 150-step run
  # 2:03 instead of 2:27 from launch (benchmarks/README.md).
  config.cpu_devices = 2
  config.grad_accum_steps = 1
  # The progress line's MFU divides by this, per device in TFLOP/s; 0: the
  # datasheet figure of known GPUs and TPUs (aisci/train/flops.py), else
  # TFLOP/s only (CPUs, other chips).
  config.peak_tflops = 0.0
  # A jax.profiler trace of the steps after the first start_step, into
  # WORKDIR/profile (aisci/train/step_profile.py); num_steps=0: none.
  config.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  config.log_every_steps = 50
  config.eval_every_steps = 380
  config.checkpoint_every_steps = 190
  config.keep_checkpoints = 2
  # Keep the checkpoint of the best validation Dice besides the latest.
  config.best_metric = 'mean_dice'
  config.best_metric_mode = 'max'
  config.early_stopping_patience = 0  # evaluations without improvement; 0: never stop

  if variant == 'multitask':
    config.model = ml_collections.ConfigDict(dict(
        name='multi_head',
        backbone=dict(name='unet', depth=4, base_width=16, norm='batch',
                      upsample='transpose'),
        heads=dict(mask=dict(kind='segmentation', num_outputs=2),
                   area=dict(kind='regression', num_outputs=1)),
    ))
    config.task = ml_collections.ConfigDict(dict(
        name='multi',
        tasks=dict(
            mask=dict(name='segmentation', weight=1.0, loss_type='ce+dice'),
            # Membrane (class 0) share of each crop's pixels, in [0, 1].
            area=dict(name='regression', weight=0.5,
                      target='class_fractions', target_index=0),
        ),
    ))
    config.best_metric = 'mask/mean_dice'
  return config
