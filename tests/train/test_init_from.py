"""Fine-tuning: weights from a trained run into a new model, frozen
parameters, layer-wise learning-rate decay."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aisci import models
from aisci.models import pretrained
from aisci.train import init_from
from aisci.train import loop
from aisci.train import optimizer
from aisci.train import steps
from configs import vit_cifar


def vit(num_classes, **kw):
  fields = dict(name='vit', variant=None, width=32, depth=2, mlp_dim=64,
                num_heads=2, patch_size=8, pool='token')
  return models.build_model({**fields, **kw}, num_classes=num_classes)


def init(model, size, seed=0):
  return steps.init_variables(model, jax.random.PRNGKey(seed),
                              jnp.zeros((1, size, size, 3)))


def test_new_head_and_resized_position_embeddings():
  source = pretrained.flatten(init(vit(10), 32, seed=1))
  template = pretrained.flatten(init(vit(2), 48, seed=2))
  merged = init_from.merge(source, template, reinit=(), what='test')
  # Same-shaped weights come from the source, the 2-class head stays fresh.
  name = 'params/Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'
  np.testing.assert_array_equal(merged[name], source[name])
  np.testing.assert_array_equal(merged['params/head/kernel'],
                                template['params/head/kernel'])
  # 4x4 patch grid + class token -> 6x6 + class token, class token kept.
  posemb = merged['params/Transformer/posembed_input/pos_embedding']
  assert posemb.shape == (1, 37, 32)
  np.testing.assert_array_equal(
      posemb[:, 0], source['params/Transformer/posembed_input/pos_embedding'][:, 0])


def test_reinit_prefix_and_mismatch_errors():
  source = pretrained.flatten(init(vit(10), 32, seed=1))
  template = pretrained.flatten(init(vit(10), 32, seed=2))
  merged = init_from.merge(source, template, reinit=('Transformer/encoderblock_1',),
                           what='test')
  name = 'params/Transformer/encoderblock_1/LayerNorm_0/scale'
  assert merged[name] is template[name]
  wider = pretrained.flatten(init(vit(10, width=48, num_heads=2), 32))
  with pytest.raises(ValueError, match=r'(?s)does not fit.*Different shapes.*embedding/kernel'):
    init_from.merge(source, wider, reinit=(), what='test')
  del source['params/Transformer/encoder_norm/scale']
  with pytest.raises(ValueError, match=r'(?s)Missing from the file.*encoder_norm/scale'):
    init_from.merge(source, template, reinit=(), what='test')


def test_fine_tuning_from_a_trained_workdir(cifar10_small, tmp_path, monkeypatch):
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{cifar10_small}'
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8)
  config.input.update(batch_size=32, eval_batch_size=250)
  config.update(total_steps=4, log_every_steps=2, eval_every_steps=100,
                checkpoint_every_steps=2)
  source_dir = str(tmp_path / 'source')
  loop.train_and_evaluate(config, source_dir)
  source = init_from.read_aisci_checkpoint(source_dir)
  # Frozen encoder: after fine-tuning it still holds the source's weights.
  monkeypatch.chdir(tmp_path)
  config.init.path = 'source'  # relative, as typed on a command line
  config.optimizer.freeze = ('^Transformer/',)
  tuned_dir = str(tmp_path / 'tuned')
  loop.train_and_evaluate(config, tuned_dir)
  tuned = init_from.read_aisci_checkpoint(tuned_dir)
  for name, value in source.items():
    if name.startswith('params/Transformer/'):
      np.testing.assert_array_equal(tuned[name], value, err_msg=name)
  assert not np.array_equal(tuned['params/head/kernel'], source['params/head/kernel'])


def test_frozen_parameters_get_no_update():
  config = vit_cifar.get_config('tiny')
  config.optimizer.freeze = ('^embedding/', 'LayerNorm')
  config.schedule.warmup_steps = 0
  tx, _ = optimizer.make_optimizer(config)
  params = init(vit(3), 16)['params']
  grads = jax.tree.map(jnp.ones_like, params)
  # One program rather than each leaf's update op by op.
  updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  flat = pretrained.flatten(updates)
  assert not np.any(flat['embedding/kernel'])
  assert not np.any(flat['Transformer/encoderblock_0/LayerNorm_0/scale'])
  assert np.all(flat['head/kernel'] != 0)
  assert np.all(flat['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'] != 0)


def test_layer_decay_scales_by_depth():
  params = init(vit(3), 16)['params']
  scales = pretrained.flatten(optimizer.layer_scales(params, 0.5))
  # 2 blocks: embeddings layer 0 (0.5**3), block i layer i+1, head top (1).
  assert scales['embedding/kernel'] == 0.125
  assert scales['Transformer/posembed_input/pos_embedding'] == 0.125
  assert scales['Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel'] == 0.25
  assert scales['Transformer/encoderblock_1/LayerNorm_0/scale'] == 0.5
  assert scales['head/kernel'] == scales['Transformer/encoder_norm/scale'] == 1.0
  resnet = models.build_model(dict(name='resnet', depth=18, stem='cifar', width=8),
                              num_classes=3)
  resnet_params = steps.init_variables(resnet, jax.random.PRNGKey(0),
                                       jnp.zeros((1, 8, 8, 3)))['params']
  resnet_scales = pretrained.flatten(optimizer.layer_scales(resnet_params, 0.5))
  assert resnet_scales['stem_conv/kernel'] == 0.5 ** 9
  assert resnet_scales['stage1_block1/conv1/kernel'] == 0.5 ** 8
  assert resnet_scales['stage4_block2/conv1/kernel'] == 0.5


def test_a_bad_init_path_stops_the_run_before_the_data_are_read(
    cifar10_small, tmp_path):
  # The weights are read only after init has run, which waits for the data
  # and the train step's compilation; the path and format are checked before
  # either (the dataset folder here does not even exist).
  config = vit_cifar.get_config('tiny')
  config.dataset = f'imagefolder:{tmp_path / "no_such_folder"}'
  config.init.path = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError,
                     match=r"config.init.path='.*no_such_run' does not exist"):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  config.init.update(path=str(cifar10_small), format='onnx')
  with pytest.raises(ValueError, match=r"Unknown config.init.format 'onnx'"):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert init_from.check(ml_collections.ConfigDict(
      dict(path=str(cifar10_small), format='auto'))) == (str(cifar10_small),
                                                         'aisci')
