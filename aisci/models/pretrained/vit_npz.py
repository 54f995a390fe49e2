"""google-research/vision_transformer `.npz` checkpoints <-> aisci ViT.

The names and layouts are aisci ViT's own, '/'-joined
(`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`).
"""

import os
from typing import Any, Mapping, Sequence

import numpy as np

from aisci.models.pretrained.convert import Source, flatten, load


def load_vit_npz(source: Source, template, *, ignore: Sequence[str] = (),
                 keep_init: Sequence[str] = ()) -> dict:
  """google-research/vision_transformer `.npz` -> aisci ViT {'params': ...}.

  Build the ViT with the checkpoint's sizes and the default
  `gelu_approximate=True`, as these checkpoints were trained. ImageNet-21k
  checkpoints with a representation layer hold `pre_logits`, which aisci's
  ViT lacks: `ignore=('pre_logits',)`. Arguments as `load_hf_vit`.
  """
  return load(source, template, [(r'(.*)', r'\1', 'tensor')],
              what='ViT .npz checkpoint', strip_prefix='params/',
              ignore=ignore,
              keep_init=keep_init,
              hint=" Representation layer: ignore=('pre_logits',).")


def save_vit_npz(path, params: Mapping[str, Any]) -> None:
  """Writes aisci ViT params as a google-research/vision_transformer `.npz`."""
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  np.savez(os.fspath(path), **flat)
