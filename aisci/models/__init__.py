"""Model registry: `config.model.name` -> a Flax Linen module.

Adding a model is one new file in this folder plus one line in `MODELS`.
Every field of `config.model` except `name` is passed to the module's
constructor, so the config file lists the model's hyper-parameters in full.
"""

import importlib
from typing import Any, Mapping

import flax.linen as nn

# name -> "module:ClassName"; imported lazily so that one model's import cost
# (or missing optional dependency) never touches another.
MODELS = {
    'vit': 'aisci.models.vit:ViT',
    'resnet': 'aisci.models.resnet:ResNet',
    'unet': 'aisci.models.unet:UNet',
    'transformer': 'aisci.models.transformer:TransformerEncoder',
    'multi_head': 'aisci.models.heads:MultiHead',
    'fastcnn': 'aisci.models.fastcnn:FastCNN',
}


def get_model_class(name: str) -> type[nn.Module]:
  if name not in MODELS:
    raise ValueError(
        f'Unknown model name {name!r} in config.model.name. '
        f'Known models: {sorted(MODELS)}. To add one, put the module in '
        'aisci/models/ and register it in aisci/models/__init__.py:MODELS.')
  module_name, class_name = MODELS[name].split(':')
  return getattr(importlib.import_module(module_name), class_name)


def _fields(cls: type[nn.Module]) -> list[str]:
  return sorted(f for f in cls.__dataclass_fields__
                if f not in ('parent', 'name'))


def check_config(model_config: Mapping[str, Any]) -> None:
  """The name and field errors build_model would raise, before the data
  decide the rest (num_classes): the loop checks the config with it before
  reading any data."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  cls = get_model_class(name)
  unknown = sorted(set(kwargs) - set(_fields(cls)))
  if unknown:
    raise TypeError(f'config.model does not fit model {name!r}: it has no '
                    f'field(s) {unknown}. Valid fields of {cls.__name__}: '
                    f'{_fields(cls)}.')


def build_model(model_config: Mapping[str, Any], **extra: Any) -> nn.Module:
  """Builds `config.model` into a module; `extra` adds derived fields.

  `extra` carries what the data decides, such as `num_classes`, so that the
  config never repeats the dataset's own facts.
  """
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  cls = get_model_class(name)
  if 'backbone' in cls.__dataclass_fields__:
    # Data-decided fields the wrapper lacks (vocab_size, max_len, ...) are
    # the backbone's.
    routed = {k: extra.pop(k) for k in list(extra)
              if k not in cls.__dataclass_fields__}
    kwargs['backbone'] = dict(kwargs['backbone'], **routed)
  kwargs.update(extra)
  try:
    return cls(**kwargs)
  except TypeError as e:
    raise TypeError(
        f'config.model does not fit model {name!r}: {e}. '
        f'Valid fields of {cls.__name__}: {_fields(cls)}.') from e
