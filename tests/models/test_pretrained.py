"""Tests for aisci/models/pretrained/: file formats, checks and parity.

The `.npz` tests need nothing beyond the core install. The Hugging Face
parity tests build small random-weight `transformers` models from configs
(no download), save them as safetensors, load them with aisci's loaders and
compare outputs on the same input; they skip where torch/transformers are
absent.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aisci.models import pretrained
from aisci.models.resnet import ResNet
from aisci.models.transformer import TransformerEncoder
from aisci.models.vit import ViT
from aisci.train import steps

INTEROP = ('install the interop extra: pip install -e .[interop] '
           '(torch==2.13.0, transformers)')
TOL = 1e-4  # Max abs difference to PyTorch, float32.


def key(seed: int = 0):
  # 'rbg' keys: threefry's XLA compile time (about a second per parameter
  # shape on CPU) would dominate these small tests.
  return jax.random.key(seed, impl='rbg')


def normal(shape, seed: int = 1):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def shapes(model, *inputs):
  return jax.eval_shape(model.init, key(), *inputs)


def tiny_vit(num_classes=5, **kw):
  return ViT(num_classes, variant=None, width=16, depth=2, mlp_dim=32,
             num_heads=2, patch_size=4, head_zero_init=False, **kw)


# ------------------------------------------------------- .npz (no torch) ---

@pytest.fixture(scope='module')
def vit_npz(tmp_path_factory):
  """A tiny aisci ViT's params written as a google-research style `.npz`."""
  model = tiny_vit()
  params = steps.init_variables(model, key(),
                                jnp.zeros((1, 16, 16, 3)))['params']
  path = tmp_path_factory.mktemp('npz') / 'vit.npz'
  pretrained.save_vit_npz(path, params)
  return path, params


def test_npz_round_trip(vit_npz):
  path, params = vit_npz
  names = np.load(path, allow_pickle=False).files
  assert 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel' in names
  assert 'Transformer/posembed_input/pos_embedding' in names
  model = tiny_vit()
  template = shapes(model, jnp.zeros((1, 16, 16, 3)))
  loaded = pretrained.load_vit_npz(path, template)
  assert set(loaded) == {'params'}
  chex.assert_trees_all_close(loaded['params'], params)
  chex.assert_trees_all_equal_structs(loaded['params'], params)


def test_mismatched_file_lists_missing_unexpected_misshaped(vit_npz):
  path, _ = vit_npz
  arrays = pretrained.read_npz(path)
  del arrays['cls']
  arrays['pre_logits/kernel'] = np.zeros((16, 16), np.float32)
  model = tiny_vit(num_classes=7)  # The file's head has 5 classes.
  with pytest.raises(ValueError) as e:
    pretrained.load_vit_npz(arrays, shapes(model, jnp.zeros((1, 16, 16, 3))))
  message = str(e.value)
  for expected in ('missing (1)', 'params/cls', 'unexpected (1)',
                   'params/pre_logits/kernel', 'mis-shaped (2)',
                   'params/head/kernel: file (16, 5) vs model (16, 7)',
                   'params/head/bias'):
    assert expected in message, message


def test_ignore_and_keep_init(vit_npz):
  path, params = vit_npz
  arrays = pretrained.read_npz(path)
  arrays['pre_logits/kernel'] = np.zeros((16, 16), np.float32)
  model = tiny_vit(num_classes=7)
  template = steps.init_variables(model, key(5), jnp.zeros((1, 16, 16, 3)))
  loaded = pretrained.load_vit_npz(arrays, template, ignore=('pre_logits',),
                                   keep_init=('head',))
  chex.assert_trees_all_equal(loaded['params']['head'],
                              template['params']['head'])
  chex.assert_trees_all_close(loaded['params']['Transformer'],
                              params['Transformer'])
  with pytest.raises(ValueError, match='initialised variables'):
    pretrained.load_vit_npz(arrays, shapes(model, jnp.zeros((1, 16, 16, 3))),
                            ignore=('pre_logits',), keep_init=('head',))


def test_resize_posemb():
  posemb = normal((1, 1 + 4 * 4, 8))
  same = pretrained.resize_posemb(posemb, (4, 4))
  np.testing.assert_allclose(same, posemb, atol=1e-6)
  bigger = pretrained.resize_posemb(posemb, (6, 8))
  chex.assert_shape(bigger, (1, 1 + 6 * 8, 8))
  np.testing.assert_array_equal(bigger[:, 0], posemb[:, 0])  # Class token.
  constant = np.ones((1, 9, 3), np.float32)
  np.testing.assert_allclose(
      pretrained.resize_posemb(constant, (5, 5), num_prefix_tokens=0), 1.0,
      atol=1e-6)
  with pytest.raises(ValueError, match='square'):
    pretrained.resize_posemb(np.ones((1, 1 + 6, 3)), (3, 3))
  # A file for 16x16 images fits a 24x24-image model once resized.
  model = tiny_vit()
  params = jax.eval_shape(model.init, key(), jnp.zeros((1, 16, 16, 3)))
  arrays = {k: np.ones(v.shape, v.dtype)
            for k, v in pretrained.flatten(params['params']).items()}
  template = shapes(model, jnp.zeros((1, 24, 24, 3)))
  with pytest.raises(ValueError, match='resize_posemb'):
    pretrained.load_vit_npz(arrays, template)
  name = 'Transformer/posembed_input/pos_embedding'
  arrays[name] = pretrained.resize_posemb(arrays[name], (6, 6))
  pretrained.load_vit_npz(arrays, template)


# --------------------------------------------- Hugging Face (torch) parity ---

@pytest.fixture(scope='module')
def hf():
  torch = pytest.importorskip('torch', reason=INTEROP)
  transformers = pytest.importorskip('transformers', reason=INTEROP)
  torch.set_num_threads(1)
  torch.manual_seed(0)
  return torch, transformers


def perturb(torch, model):
  """Moves every weight off its (often zero or one) init, then eval mode."""
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def max_diff(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_resize_posemb_matches_torch_bilinear(hf):
  torch, _ = hf
  posemb = normal((1, 1 + 4 * 6, 8))
  for grid in ((8, 12), (3, 4)):
    grid_nchw = torch.from_numpy(posemb[:, 1:]).reshape(1, 4, 6, 8).permute(
        0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(
        grid_nchw, size=grid, mode='bilinear', align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy()
    got = pretrained.resize_posemb(posemb, grid, old_grid=(4, 6))
    assert max_diff(got[:, 1:], expected) < 1e-5


def vit_config(transformers, **kw):
  # layer_norm_eps: aisci's ViT uses flax's 1e-6 (HF's google/vit-* configs
  # say 1e-12, but those weights were trained with 1e-6 in JAX).
  return transformers.ViTConfig(
      hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=32, image_size=16, patch_size=4, layer_norm_eps=1e-6,
      **kw)


def test_hf_vit_classifier_parity(hf, tmp_path):
  torch, transformers = hf
  hf_model = perturb(torch, transformers.ViTForImageClassification(
      vit_config(transformers, num_labels=5)))
  hf_model.save_pretrained(tmp_path)
  pixels = normal((2, 3, 16, 16))
  with torch.no_grad():
    expected = hf_model(pixel_values=torch.from_numpy(pixels)).logits.numpy()

  model = tiny_vit(gelu_approximate=False)
  images = jnp.asarray(pixels.transpose(0, 2, 3, 1))  # NCHW -> NHWC.
  template = shapes(model, images)
  variables = pretrained.load_hf_vit(tmp_path / 'model.safetensors', template)
  chex.assert_trees_all_equal_shapes(variables, template)
  logits = jax.jit(model.apply)(variables, images)
  assert max_diff(logits, expected) <= TOL
  # transformers>=5 names modules differently in memory; the in-memory state
  # dict loads to the same variables.
  in_memory = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  chex.assert_trees_all_equal(
      pretrained.load_hf_vit(in_memory, template), variables)
  # With flax's default tanh GELU the error is 100x larger: the parity above
  # checks the GELU form too.
  approx = jax.jit(tiny_vit().apply)(variables, images)
  assert max_diff(approx, expected) > 100 * max_diff(logits, expected)


def test_hf_vit_model_parity(hf, tmp_path):
  torch, transformers = hf
  hf_model = perturb(torch, transformers.ViTModel(vit_config(transformers)))
  hf_model.save_pretrained(tmp_path)
  pixels = normal((2, 3, 16, 16))
  with torch.no_grad():
    expected = hf_model(pixel_values=torch.from_numpy(pixels))
  model = tiny_vit(num_classes=0, gelu_approximate=False)
  images = jnp.asarray(pixels.transpose(0, 2, 3, 1))
  template = shapes(model, images)
  path = tmp_path / 'model.safetensors'
  with pytest.raises(ValueError, match=r'pre_logits/kernel[\s\S]*ignore='):
    pretrained.load_hf_vit(path, template)  # ViTModel has a pooler.
  variables = pretrained.load_hf_vit(path, template, ignore=('pre_logits',))
  features = jax.jit(model.apply)(variables, images)
  assert max_diff(features, expected.last_hidden_state[:, 0].numpy()) <= TOL


def bert_models(num_layers=2):
  kw = dict(vocab_size=99, max_len=24, width=32, depth=num_layers,
            num_heads=4, mlp_dim=64, type_vocab_size=2, norm='post',
            gelu_approximate=False, layer_norm_eps=1e-12)
  return (TransformerEncoder(0, pool='cls', pooler=True, **kw),
          TransformerEncoder(0, pool='none', **kw))


def test_hf_bert_parity(hf, tmp_path):
  torch, transformers = hf
  config = transformers.BertConfig(
      vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=24, type_vocab_size=2)
  hf_model = perturb(torch, transformers.BertModel(config))
  hf_model.save_pretrained(tmp_path)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 99, (2, 12))
  mask = np.ones((2, 12), np.int64)
  mask[1, 7:] = 0  # Padding at the end of the second sequence.
  types = np.zeros((2, 12), np.int64)
  types[:, 5:] = 1
  with torch.no_grad():
    expected = hf_model(input_ids=torch.from_numpy(ids),
                        attention_mask=torch.from_numpy(mask),
                        token_type_ids=torch.from_numpy(types))

  pooled_model, token_model = bert_models()
  inputs = dict(mask=jnp.asarray(mask, bool),
                token_types=jnp.asarray(types, jnp.int32))
  tokens = jnp.asarray(ids, jnp.int32)
  template = jax.eval_shape(
      functools.partial(pooled_model.init, **inputs), key(), tokens)
  variables = pretrained.load_hf_bert(tmp_path / 'model.safetensors', template)
  hidden = jax.jit(functools.partial(token_model.apply, **inputs))(
      variables, tokens)
  pooled = jax.jit(functools.partial(pooled_model.apply, **inputs))(
      variables, tokens)
  assert max_diff(hidden, expected.last_hidden_state.numpy()) <= TOL
  assert max_diff(pooled, expected.pooler_output.numpy()) <= TOL


def test_hf_bert_pretraining_checkpoint_needs_ignore(hf):
  torch, transformers = hf
  config = transformers.BertConfig(
      vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=24, type_vocab_size=2)
  state = {k: v.numpy() for k, v in
           transformers.BertForPreTraining(config).state_dict().items()}
  assert any(k.startswith('bert.') for k in state)
  # Old checkpoints name LayerNorm parameters gamma/beta.
  state = {k.replace('LayerNorm.weight', 'LayerNorm.gamma')
            .replace('LayerNorm.bias', 'LayerNorm.beta'): v
           for k, v in state.items()}
  pooled_model, _ = bert_models(num_layers=1)
  template = shapes(pooled_model, jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match=r'cls\.predictions[\s\S]*ignore='):
    pretrained.load_hf_bert(state, template)
  variables = pretrained.load_hf_bert(state, template, ignore=('cls.',))
  np.testing.assert_array_equal(
      variables['params']['embed_norm']['scale'],
      state['bert.embeddings.LayerNorm.gamma'])


@pytest.mark.parametrize('depth,width,layer_type,hidden_sizes,depths', [
    (18, 8, 'basic', [8, 16, 32, 64], [2, 2, 2, 2]),
    (50, 4, 'bottleneck', [16, 32, 64, 128], [3, 4, 6, 3]),
])
def test_hf_resnet_parity(hf, tmp_path, depth, width, layer_type,
                          hidden_sizes, depths):
  torch, transformers = hf
  config = transformers.ResNetConfig(
      embedding_size=width, hidden_sizes=hidden_sizes, depths=depths,
      layer_type=layer_type, num_labels=5)
  hf_model = transformers.ResNetForImageClassification(config).eval()
  with torch.no_grad():  # BatchNorm away from the identity, logits O(1).
    for m in hf_model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.6, 1.0)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 1.5)
  hf_model.save_pretrained(tmp_path)
  pixels = normal((2, 3, 64, 64))
  with torch.no_grad():
    expected = hf_model(pixel_values=torch.from_numpy(pixels)).logits.numpy()

  model = ResNet(5, depth=depth, stem='imagenet', width=width)
  images = jnp.asarray(pixels.transpose(0, 2, 3, 1))
  template = shapes(model, images)
  variables = pretrained.load_hf_resnet(tmp_path / 'model.safetensors',
                                        template)
  assert set(variables) == {'params', 'batch_stats'}
  np.testing.assert_array_equal(
      variables['batch_stats']['stem_bn']['var'],
      hf_model.resnet.embedder.embedder.normalization.running_var.numpy())
  logits = jax.jit(model.apply)(variables, images)
  assert max_diff(logits, expected) <= TOL
