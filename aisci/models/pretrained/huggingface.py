"""Hugging Face `safetensors` checkpoints -> aisci ViT, TransformerEncoder, ResNet.

Reading safetensors needs neither PyTorch nor transformers.
"""

import re
from typing import Sequence

from aisci.models.pretrained.convert import Rule, Source, load

_VIT_BLOCK = r'encoder\.layer\.(\d+)\.'
_VIT_RULES: list[Rule] = [
    (r'embeddings\.cls_token', 'cls', 'tensor'),
    (r'embeddings\.position_embeddings',
     'Transformer/posembed_input/pos_embedding', 'tensor'),
    (r'embeddings\.patch_embeddings\.projection', 'embedding', 'conv'),
    (_VIT_BLOCK + r'layernorm_before',
     r'Transformer/encoderblock_\1/LayerNorm_0', 'ln'),
    (_VIT_BLOCK + r'attention\.attention\.(query|key|value)',
     r'Transformer/encoderblock_\1/MultiHeadDotProductAttention_1/\2', 'qkv'),
    (_VIT_BLOCK + r'attention\.output\.dense',
     r'Transformer/encoderblock_\1/MultiHeadDotProductAttention_1/out', 'out'),
    (_VIT_BLOCK + r'layernorm_after',
     r'Transformer/encoderblock_\1/LayerNorm_2', 'ln'),
    (_VIT_BLOCK + r'intermediate\.dense',
     r'Transformer/encoderblock_\1/MlpBlock_3/Dense_0', 'dense'),
    (_VIT_BLOCK + r'output\.dense',
     r'Transformer/encoderblock_\1/MlpBlock_3/Dense_1', 'dense'),
    (r'layernorm', 'Transformer/encoder_norm', 'ln'),
    (r'classifier', 'head', 'dense'),
    (r'pooler\.dense', 'pre_logits', 'dense'),  # ViTModel's Dense + tanh.
]
# transformers >= 5 names ViT modules differently in memory (`save_pretrained`
# still writes the names above): accept both.
_VIT_V5_NAMES = [
    (r'^layers\.(\d+)\.attention\.q_proj\.',
     r'encoder.layer.\1.attention.attention.query.'),
    (r'^layers\.(\d+)\.attention\.k_proj\.',
     r'encoder.layer.\1.attention.attention.key.'),
    (r'^layers\.(\d+)\.attention\.v_proj\.',
     r'encoder.layer.\1.attention.attention.value.'),
    (r'^layers\.(\d+)\.attention\.o_proj\.',
     r'encoder.layer.\1.attention.output.dense.'),
    (r'^layers\.(\d+)\.mlp\.fc1\.', r'encoder.layer.\1.intermediate.dense.'),
    (r'^layers\.(\d+)\.mlp\.fc2\.', r'encoder.layer.\1.output.dense.'),
    (r'^layers\.(\d+)\.', r'encoder.layer.\1.'),
]


def load_hf_vit(source: Source, template, *, ignore: Sequence[str] = (),
                keep_init: Sequence[str] = ()) -> dict:
  """Hugging Face ViT safetensors -> aisci ViT variables {'params': ...}.

  Build the ViT with `gelu_approximate=False` (HF uses exact GELU) and
  `pool='token'`. ViTModel's pooler (Dense + tanh) converts to `pre_logits`,
  which aisci's ViT lacks: pass `ignore=('pre_logits',)`.

  Args:
    source: a `.safetensors` path, or a mapping name -> array (a state dict).
    template: the model's variables, or their shapes (`jax.eval_shape`).
    ignore: prefixes of source or aisci names to drop from the file.
    keep_init: prefixes of aisci names to take from `template` (arrays)
      instead of the file, e.g. ('head',) for a new label set.
  """
  return load(source, template, _VIT_RULES, what='HF ViT checkpoint',
              strip_prefix='vit.', rename=_VIT_V5_NAMES, ignore=ignore,
              keep_init=keep_init,
              hint=" ViTModel's pooler: ignore=('pre_logits',).")


_BERT_BLOCK = r'encoder\.layer\.(\d+)\.'
_BERT_RULES: list[Rule] = [
    (r'embeddings\.position_ids', '', 'drop'),  # A buffer, not a weight.
    (r'embeddings\.word_embeddings', 'token_embed', 'embed'),
    (r'embeddings\.position_embeddings\.weight', 'pos_embedding', 'tensor'),
    (r'embeddings\.token_type_embeddings', 'type_embed', 'embed'),
    (r'embeddings\.LayerNorm', 'embed_norm', 'ln'),
    (_BERT_BLOCK + r'attention\.self\.(query|key|value)',
     r'encoderblock_\1/attention/\2', 'qkv'),
    (_BERT_BLOCK + r'attention\.output\.dense',
     r'encoderblock_\1/attention/out', 'out'),
    (_BERT_BLOCK + r'attention\.output\.LayerNorm',
     r'encoderblock_\1/attention_norm', 'ln'),
    (_BERT_BLOCK + r'intermediate\.dense', r'encoderblock_\1/mlp/Dense_0',
     'dense'),
    (_BERT_BLOCK + r'output\.dense', r'encoderblock_\1/mlp/Dense_1', 'dense'),
    (_BERT_BLOCK + r'output\.LayerNorm', r'encoderblock_\1/mlp_norm', 'ln'),
    (r'pooler\.dense', 'pooler', 'dense'),
]


def load_hf_bert(source: Source, template, *, ignore: Sequence[str] = (),
                 keep_init: Sequence[str] = ()) -> dict:
  """Hugging Face BertModel safetensors -> TransformerEncoder {'params': ...}.

  Build the encoder as BERT: `norm='post'`, `posemb='learned'`,
  `max_len=max_position_embeddings`, `type_vocab_size=2`, `pooler=True`,
  `pool='cls'`, `gelu_approximate=False`, `layer_norm_eps=1e-12`. Checkpoints
  of BertForPreTraining and the like (`bert.` prefix, e.g. bert-base-uncased)
  carry task heads under `cls.`: drop them with `ignore=('cls.',)`. Old
  LayerNorm names (`gamma`, `beta`) are understood. Arguments as
  `load_hf_vit`.
  """
  return load(source, template, _BERT_RULES, what='HF BERT checkpoint',
              strip_prefix='bert.', ignore=ignore, keep_init=keep_init,
              hint=" BertFor* task heads: ignore=('cls.',).")


def _resnet_block(m: re.Match) -> str:
  stage, block = int(m[1]) + 1, int(m[2]) + 1
  return f'stage{stage}_block{block}/'


_RESNET_LAYER = r'encoder\.stages\.(\d+)\.layers\.(\d+)\.'
_RESNET_RULES: list[Rule] = [
    (r'embedder\.embedder\.convolution', 'stem_conv', 'conv'),
    (r'embedder\.embedder\.normalization', 'stem_bn', 'bn'),
    (_RESNET_LAYER + r'layer\.(\d+)\.convolution',
     lambda m: _resnet_block(m) + f'conv{int(m[3]) + 1}', 'conv'),
    (_RESNET_LAYER + r'layer\.(\d+)\.normalization',
     lambda m: _resnet_block(m) + f'bn{int(m[3]) + 1}', 'bn'),
    (_RESNET_LAYER + r'shortcut\.convolution',
     lambda m: _resnet_block(m) + 'proj_conv', 'conv'),
    (_RESNET_LAYER + r'shortcut\.normalization',
     lambda m: _resnet_block(m) + 'proj_bn', 'bn'),
    (r'classifier\.1', 'head', 'dense'),
]


def load_hf_resnet(source: Source, template, *, ignore: Sequence[str] = (),
                   keep_init: Sequence[str] = ()) -> dict:
  """HF ResNetForImageClassification safetensors -> aisci ResNet variables.

  Returns {'params': ..., 'batch_stats': ...} (BatchNorm running statistics).
  Build `ResNet(stem='imagenet', width=embedding_size, depth=...)`; the HF
  config must have `downsample_in_bottleneck=False` (v1.5, the default: the
  weights cannot tell) and `downsample_in_first_stage=False`. Arguments as
  `load_hf_vit`.
  """
  return load(source, template, _RESNET_RULES, what='HF ResNet checkpoint',
              strip_prefix='resnet.', ignore=ignore, keep_init=keep_init)


