"""A workdir refuses a config that trains something else; safe changes pass,
and --allow_config_change is recorded."""

import json

import pytest

from aisci.train import workdir_config
from configs import resnet_cifar
from configs import vit_cifar


def started(tmp_path, config):
  (tmp_path / 'config.json').write_text(json.dumps(config.to_dict()))
  return str(tmp_path)


def test_new_workdir_and_same_config_pass(tmp_path):
  config = vit_cifar.get_config('tiny')
  workdir_config.check(config.to_dict(), str(tmp_path))  # no config.json yet
  workdir_config.check(config.to_dict(), started(tmp_path, config))


def test_safe_changes_pass(tmp_path):
  config = vit_cifar.get_config('tiny')
  workdir = started(tmp_path, config)
  config.update(total_steps=99_999, log_every_steps=7, eval_every_steps=70,
                checkpoint_every_steps=700, keep_checkpoints=1, data_dir='/x')
  config.input.update(cache=False, skip_corrupt=True, eval_batch_size=50)
  config.optimizer.skip_nonfinite_updates = True
  config.mesh.data = 2
  config.update(grad_accum_steps=4, cpu_devices=2)
  config.model.remat = True
  config.model.attention = 'fused'
  config.init.path = '/elsewhere'
  workdir_config.check(config.to_dict(), workdir)
  assert not (tmp_path / workdir_config.CHANGES_FILE).exists()


def test_changes_that_alter_training_are_listed_and_refused(tmp_path):
  config = vit_cifar.get_config('tiny')
  workdir = started(tmp_path, config)
  config.model.depth = 6
  config.dataset = 'imagefolder:/data/other'
  config.optimizer.learning_rate = 1e-4
  config.input.mean = (0.5, 0.5, 0.5)
  config.total_steps = 10  # safe: not listed
  with pytest.raises(workdir_config.ConfigChangedError) as error:
    workdir_config.check(config.to_dict(), workdir)
  message = str(error.value)
  listed = [line.strip() for line in message.splitlines() if line.startswith('  ')]
  assert listed == [
      'dataset: "cifar10" -> "imagefolder:/data/other"',
      'input.mean: [0.4914, 0.4822, 0.4465] -> [0.5, 0.5, 0.5]',
      'model.depth: 4 -> 6',
      'optimizer.learning_rate: 0.002 -> 0.0001',
  ]
  assert 'in 4 field(s)' in message and '--allow_config_change' in message


def test_another_model_family_lists_the_fields_it_lacks(tmp_path):
  workdir = started(tmp_path, vit_cifar.get_config('tiny'))
  with pytest.raises(workdir_config.ConfigChangedError,
                     match=r'(?s)model.name: "vit" -> "resnet".*model.patch_size: 4 -> \(absent\)'):
    workdir_config.check(resnet_cifar.get_config('tiny').to_dict(), workdir)


def test_field_added_by_a_newer_aisci_is_not_a_change(tmp_path):
  config = vit_cifar.get_config('tiny')
  old = config.to_dict()
  del old['optimizer']['skip_nonfinite_updates'], old['input']['skip_corrupt']
  del old['cpu_devices']  # workdirs started before configs had the field
  (tmp_path / 'config.json').write_text(json.dumps(old))
  config.optimizer.skip_nonfinite_updates = True
  workdir_config.check(config.to_dict(), str(tmp_path))


def test_allowed_change_is_recorded(tmp_path):
  config = vit_cifar.get_config('tiny')
  workdir = started(tmp_path, config)
  config.optimizer.learning_rate = 1e-4
  workdir_config.check(config.to_dict(), workdir, allow_change=True)
  workdir_config.check(config.to_dict(), workdir, allow_change=True,
                       write_record=False)  # another process: no record
  lines = (tmp_path / workdir_config.CHANGES_FILE).read_text().splitlines()
  assert len(lines) == 1
  assert json.loads(lines[0])['changes'] == {
      'optimizer.learning_rate': [0.002, 0.0001]}
