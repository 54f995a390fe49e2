"""Transformer encoder for text (or any sequence) classification, from scratch.

Variants (configs/transformer_text.py:VARIANT):
  sst2   SST-2 sentiment (GLUE): tsv:PATH with PATH/train.tsv and
         PATH/dev.tsv (`make data` extracts ../shared/data/sst2.tar.gz into
         .cache/data). A WordPiece tokenizer is trained on the training
         sentences only and saved as WORKDIR/tokenizer.json.
         6 minutes on a quiet 2-core AMD EPYC, 15 on a loaded machine
         (experiments/text.md; runs of it repeat exactly).
  imdb   tfds-style long reviews from a tsv/csv folder you provide
         (PATH/train.tsv, PATH/test.tsv with text, label columns): longer
         sequences, same model.
Where there is a network, tfds text sets load by name, e.g.
  --config.dataset=glue/sst2 --config.eval_split=validation
  --config.dataset=imdb_reviews --config.input.text_column=text --config.eval_split=test
Sequences that need no tokenizer (signals, spectra) train with the same
model: --config.dataset=npz:FILE.npz (aisci/data/npz_source.py).

Commands:
  python -m aisci.main --config=configs/transformer_text.py:sst2 --workdir=runs/sst2
  python -m aisci.main --config=configs/transformer_text.py \
      --config.dataset=npz:signals.npz --workdir=runs/signals
"""

import ml_collections

VARIANTS = ('sst2', 'imdb')


def get_config(arg=None):
  variant = arg or 'sst2'
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of transformer_text; known: {VARIANTS}.')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dtype = 'float32'  # compute dtype; 'bfloat16' on GPU/TPU

  config.dataset = 'tsv:.cache/data/sst2'
  config.data_dir = ''
  config.train_split = 'train'
  config.eval_split = 'dev'  # SST-2's test labels are not public
  config.input = ml_collections.ConfigDict(dict(
      text_column='sentence',
      label_column='label',
      class_names=('negative', 'positive'),  # label 0 and 1
      tokenizer='wordpiece',  # wordpiece | bpe | byte (no vocabulary)
      vocab_size=8000,
      max_length=64,  # tokens, [CLS] included; longer texts are truncated
      augment='none',
      batch_size=128,
      eval_batch_size=256,
  ))

  config.model = ml_collections.ConfigDict(dict(
      name='transformer',
      width=128,
      depth=2,
      num_heads=4,
      mlp_dim=256,
      posemb='learned',
      norm='pre',
      pool='mean',
      dropout=0.1,
      attention_dropout=0.1,
      gelu_approximate=True,
      patch_size=4,  # float sequences (npz:) only: 4 values per token
  ))
  config.task = ml_collections.ConfigDict(dict(
      name='classification',
      label_smoothing=0.0,
  ))

  config.total_steps = 1600  # 3 epochs of SST-2's 67,349 phrases
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw',
      learning_rate=1e-3,
      weight_decay=0.01,
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
      warmup_steps=100,
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
  # overrides). SST-2 steps 100-300 on 2 cores: 40 s over 8, 41 s over 2,
  # 47 s over 1 (benchmarks/README.md).
  config.cpu_devices = 8
  config.grad_accum_steps = 1
  # The progress line's MFU divides by this, per device in TFLOP/s; 0: the
  # datasheet figure of known GPUs and TPUs (aisci/train/flops.py), else
  # TFLOP/s only (CPUs, other chips).
  config.peak_tflops = 0.0
  # A jax.profiler trace of the steps after the first start_step, into
  # WORKDIR/profile (aisci/train/step_profile.py); num_steps=0: none.
  config.profile = ml_collections.ConfigDict(dict(start_step=10, num_steps=0))
  config.log_every_steps = 100
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.keep_checkpoints = 2
  config.best_metric = 'accuracy'
  config.best_metric_mode = 'max'
  config.early_stopping_patience = 0  # evaluations without improvement; 0: never stop

  if variant == 'imdb':
    config.dataset = 'tsv:.cache/data/imdb'
    config.eval_split = 'test'
    config.input.text_column = 'text'
    config.input.max_length = 256
    config.input.batch_size = 64
    config.input.eval_batch_size = 128
    config.total_steps = 2000
  return config
