"""optax optimizer and learning-rate schedule from `config.optimizer` and
`config.schedule`."""

import re
from typing import Any, Optional, Sequence

import jax
import ml_collections
import optax

from aisci.train import lookahead as lookahead_lib
from aisci.train import muon as muon_lib
from aisci.train import prune as prune_lib


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from warmup_start_factor * peak (0 by default) to the
  peak rate, then `decay` to the end rate."""
  peak = config.optimizer.learning_rate
  warmup = config.schedule.warmup_steps
  # Configs written before the field existed warm up from 0.
  start = peak * config.schedule.get('warmup_start_factor', 0.0)
  end = peak * config.schedule.end_learning_rate_factor
  decay_steps = max(config.total_steps - warmup, 1)
  if config.schedule.decay == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif config.schedule.decay == 'linear':
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif config.schedule.decay == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f'Unknown config.schedule.decay {config.schedule.decay!r}; '
                     "known: 'cosine', 'linear', 'constant'.")
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(start, peak, warmup), decay], [warmup])


def weight_decay_mask(params: Any) -> Any:
  """True for weight matrices and conv kernels only.

  Norm scales and biases, position/class/token embeddings (`pos_embedding`,
  `cls`, `nn.Embed`'s `embedding`) are all named otherwise in Flax, so the
  parameter name alone decides.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


# Blocks in order of depth: ViT/transformer `encoderblock_3`, ResNet
# `stage2_block1`; `\d+` parts compare as numbers.
_BLOCK = re.compile(r'(encoderblock_\d+|stage\d+_block\d+)')
_INPUT_SIDE = re.compile(r'(^|/)(embedding|cls|posembed_input|stem_\w+|'
                         r'token_embed\w*|type_embed\w*)(/|$)')
# Kept on AdamW under Muon (muon.py), as in Muon's recipes: the input side
# and the classifier head.
_NOT_MUON = re.compile(_INPUT_SIDE.pattern + r'|(^|/)head(/|$)')


def muon_adamw_only(path) -> bool:
  """True for the parameters Muon leaves to AdamW even if they are
  matrices."""
  return bool(_NOT_MUON.search(_path_name(path)))


def layer_scales(params: Any, decay: float) -> Any:
  """Learning-rate factor per parameter for layer-wise decay.

  The input side (embeddings, stem) is layer 0, block i is layer i + 1, the
  rest (final norm, head) layer n + 1; a parameter of layer l is scaled by
  decay ** (n + 1 - l) (BEiT, Bao et al. 2022).
  """
  names = [_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  blocks = sorted({m.group(1) for m in map(_BLOCK.search, names) if m},
                  key=lambda b: [int(n) for n in re.findall(r'\d+', b)])
  depth = {block: i + 1 for i, block in enumerate(blocks)}
  top = len(blocks) + 1

  def scale(path, _):
    name = _path_name(path)
    match = _BLOCK.search(name)
    layer = (depth[match.group(1)] if match
             else 0 if _INPUT_SIDE.search(name) else top)
    return decay ** (top - layer)

  return jax.tree_util.tree_map_with_path(scale, params)


def pattern_scales(params: Any, mults: Sequence[tuple[str, float]]) -> Any:
  """Learning-rate factor per parameter from (regex, factor) pairs: the
  first pattern that the '/'-joined name matches (re.search) gives the
  factor, 1 if none does (big_vision's lr_mults)."""
  compiled = [(re.compile(pattern), float(factor)) for pattern, factor in mults]

  def scale(path, _):
    name = _path_name(path)
    return next((f for c, f in compiled if c.search(name)), 1.0)

  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_lr_factors(layer_decay: float = 1.0,
                        lr_mults: Sequence[tuple[str, float]] = ()
                        ) -> optax.GradientTransformation:
  """Multiplies each update by its layer's factor (see `layer_scales`) and
  by its name's factor (see `pattern_scales`): after the optimizer, that
  is each parameter's learning rate times the product."""

  def update_fn(updates, state, params=None):
    del params
    scales = jax.tree.map(lambda a, b: a * b, layer_scales(updates, layer_decay),
                          pattern_scales(updates, lr_mults))
    return jax.tree.map(lambda u, s: u * s, updates, scales), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update_fn)


def frozen_labels(params: Any, patterns: Sequence[str]) -> Any:
  """'frozen' where the '/'-joined parameter name matches a pattern."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: ('frozen' if any(c.search(_path_name(path)) for c in compiled)
                       else 'trained'), params)


def make_optimizer(config: ml_collections.ConfigDict,
                   mesh: Optional[jax.sharding.Mesh] = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer chain (clip -> update) and its learning-rate schedule.

  mesh: the training mesh; Muon splits its orthogonalisation over the
  mesh's data-parallel devices (muon.py).

  config.optimizer.freeze (regexes on names like 'Transformer/encoderblock_0/
  MlpBlock_3/Dense_0/kernel') leaves the matching parameters unchanged;
  config.optimizer.layer_decay < 1 scales learning rates down with depth
  from the top (fine-tuning); config.optimizer.lr_mults, (regex, factor)
  pairs, multiplies the learning rates of the matching parameters (e.g.
  (('bn\\d*/bias$', 64.0),) for airbench's BatchNorm biases).
  """
  opt = config.optimizer
  schedule = make_schedule(config)
  chain = []
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2,
                             weight_decay=opt.weight_decay,
                             mask=weight_decay_mask))
  elif opt.name == 'sgd':
    # Weight decay added to the gradient before momentum, as PyTorch's SGD
    # does, so that recipes carry over with the same numbers.
    if opt.weight_decay:
      chain.append(optax.add_decayed_weights(opt.weight_decay,
                                             mask=weight_decay_mask))
    chain.append(optax.sgd(schedule, momentum=opt.momentum or None,
                           nesterov=opt.nesterov))
  elif opt.name == 'muon':
    chain.append(muon_lib.muon(schedule, momentum=opt.momentum,
                               weight_decay=opt.weight_decay, b1=opt.b1,
                               b2=opt.b2, weight_decay_mask=weight_decay_mask,
                               adamw_only=muon_adamw_only, mesh=mesh))
  else:
    raise ValueError(f"Unknown config.optimizer.name {opt.name!r}; known: "
                     "'adamw', 'sgd', 'muon'.")
  lr_mults = tuple(opt.get('lr_mults', ()))  # absent in older configs
  for entry in lr_mults:
    if (not isinstance(entry, (tuple, list)) or len(entry) != 2
        or not isinstance(entry[0], str)):
      raise ValueError(
          f'config.optimizer.lr_mults holds {entry!r}; each entry must be a '
          "(regex, factor) pair, e.g. (('bn\\d*/bias$', 64.0),).")
  if opt.layer_decay != 1.0 or lr_mults:
    chain.append(scale_by_lr_factors(opt.layer_decay, lr_mults))
  tx = optax.chain(*chain)
  if opt.freeze:
    tx = optax.multi_transform(
        {'trained': tx, 'frozen': optax.set_to_zero()},
        lambda params: frozen_labels(params, opt.freeze))
  lookahead = opt.get('lookahead')
  if lookahead is not None and lookahead.every:
    # Before pruning, which must stay last; the slow weights are an EMA of
    # the fast ones (lookahead.py).
    tx = optax.chain(tx, lookahead_lib.lookahead(
        lookahead.every, lookahead.decay, config.total_steps))
  prune = config.get('prune')
  if prune is not None and prune.sparsity:
    # Last, so that pruned weights get exactly zero updates (prune.py).
    tx = optax.chain(tx, prune_lib.keep_pruned(
        prune.sparsity, prune.include, prune.get('exclude', '')))
  return tx, schedule
