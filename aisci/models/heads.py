"""Task heads and the backbone + named heads model.

Any registered backbone built with `num_classes=0` returns features: pooled
`[batch, features]` (ViT, ResNet, transformer with pooling) or maps
`[batch, height, width, features]` (U-Net) or tokens `[batch, length,
features]` (transformer with pool='none'). A head turns features into one
task's outputs, so multi-task models need no new model class:

  config.model = dict(
      name='multi_head',
      backbone=dict(name='unet', depth=3, base_width=16),
      heads=dict(mask=dict(kind='segmentation', num_outputs=2),
                 area=dict(kind='regression', num_outputs=1)))
"""

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp


class ClassificationHead(nn.Module):
  """Pooled features [batch, f] (maps are averaged first) -> logits [batch, n]."""
  num_outputs: int
  zero_init: bool = True

  @nn.compact
  def __call__(self, features):
    if features.ndim > 2:
      features = features.mean(axis=tuple(range(1, features.ndim - 1)))
    init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
    return nn.Dense(self.num_outputs, kernel_init=init, dtype=jnp.float32)(
        features.astype(jnp.float32))


class RegressionHead(ClassificationHead):
  """Pooled features -> values [batch, n]; same form as classification,
  distinct so that configs say what the outputs mean."""
  zero_init: bool = False


class DenseHead(nn.Module):
  """Per-position outputs: maps [batch, h, w, f] -> [batch, h, w, n] (a 1x1
  convolution), tokens [batch, length, f] -> [batch, length, n]."""
  num_outputs: int

  @nn.compact
  def __call__(self, features):
    if features.ndim < 3:
      raise ValueError(
          'A segmentation (per-position) head needs feature maps or tokens, '
          f'got features of shape {features.shape}: use a backbone that keeps '
          "positions (unet, or transformer with pool='none').")
    return nn.Dense(self.num_outputs, dtype=jnp.float32)(
        features.astype(jnp.float32))


HEADS = {
    'classification': ClassificationHead,
    'regression': RegressionHead,
    'segmentation': DenseHead,
    'token': DenseHead,
}


class MultiHead(nn.Module):
  """A registered backbone (features) and named heads -> {head name: outputs}.

  Attributes:
    backbone: the backbone's config, as config.model would be for it alone.
    heads: name -> dict(kind=one of HEADS, num_outputs=..., ...).
    num_classes: ignored (heads say their sizes); accepted so that the
      loop's `build_model(config.model, num_classes=...)` works unchanged.
    dtype: the backbone's compute dtype.
  """
  backbone: Mapping[str, Any]
  heads: Mapping[str, Mapping[str, Any]]
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool = False, **kwargs):
    from aisci import models  # pylint: disable=g-import-not-at-top
    backbone = models.build_model(self.backbone, num_classes=0, dtype=self.dtype,
                                  name='backbone')
    features = backbone(inputs, train=train, **kwargs)
    outputs = {}
    for name, head_config in self.heads.items():
      head_config = dict(head_config)
      kind = head_config.pop('kind')
      if kind not in HEADS:
        raise ValueError(f'Unknown head kind {kind!r} for head {name!r}; known: '
                         f'{sorted(HEADS)}.')
      outputs[name] = HEADS[kind](name=name, **head_config)(features)
    return outputs
