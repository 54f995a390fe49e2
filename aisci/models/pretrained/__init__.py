"""Pretrained weights from other code bases, as aisci variable trees.

Sources:
  Hugging Face `safetensors` (huggingface.py; no PyTorch needed to read them):
    `load_hf_vit`     ViTForImageClassification / ViTModel -> aisci ViT
    `load_hf_bert`    BertModel (and the `bert.` part of BertFor*) ->
                      TransformerEncoder
    `load_hf_resnet`  ResNetForImageClassification / ResNetModel ->
                      ResNet(stem='imagenet'), with the BatchNorm running
                      statistics in `batch_stats`
  google-research/vision_transformer `.npz` (vit_npz.py): `load_vit_npz`,
    and `save_vit_npz` to write aisci params in that layout.
  `resize_posemb`: ViT position embeddings to a new patch grid.

Every loader takes the target `template`, the model's variables or just their
shapes:
  template = jax.eval_shape(model.init, jax.random.key(0), example_input)
  variables = load_hf_vit('model.safetensors', template)
  logits = model.apply(variables, images)
and checks the file against it name by name and shape by shape; a mismatch
raises one ValueError listing the missing, unexpected and mis-shaped names.
Model sizes (depth, width, heads, GELU form, LayerNorm eps) are not in the
weights: build the model from the checkpoint's config.json. Nothing here
unpickles: safetensors and `numpy.load(allow_pickle=False)` only.
"""

from aisci.models.pretrained.convert import flatten
from aisci.models.pretrained.convert import read_npz
from aisci.models.pretrained.convert import read_safetensors
from aisci.models.pretrained.convert import resize_posemb
from aisci.models.pretrained.convert import unflatten
from aisci.models.pretrained.huggingface import load_hf_bert
from aisci.models.pretrained.huggingface import load_hf_resnet
from aisci.models.pretrained.huggingface import load_hf_vit
from aisci.models.pretrained.vit_npz import load_vit_npz
from aisci.models.pretrained.vit_npz import save_vit_npz
