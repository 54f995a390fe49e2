"""Bad input gets a clear error naming the cause and the fix: one table.

Each row makes one mistake a user makes and checks the error's type and that
its message names the culprit (file, field, numbers) and what to do. Image
folders are built from real CIFAR-10 JPEGs.

Covered elsewhere (not repeated): a mistyped override and a wrong type on
the real command line (tests/test_main.py); a checkpoint of another model or
optimizer and a non-finite loss (tests/train/test_loop.py); a workdir in use
by a running job (tests/train/test_preemption.py); a NaN update skipped
instead (tests/train/test_nonfinite.py). Below: the rest, the disk filling up
while saving, and a real folder with corrupt, grayscale, RGBA, 16-bit and
non-image files and an empty class folder.
"""

import json
import os
import shutil
import subprocess
import sys

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from aisci import data
from aisci import models
from aisci import tasks
from aisci.data import imagefolder
from aisci.data import tfds_source
from aisci.train import loop
from aisci.train import optimizer
from aisci.train import sharding
from aisci.train import steps
from aisci.train import workdir_config
from configs import vit_cifar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def jpegs(cifar10_dir):
  """Eight real CIFAR-10 JPEGs."""
  return sorted((cifar10_dir / 'test' / 'cat').iterdir())[:8]


def image_folder(root, jpegs, classes=('cat', 'dog'), per_class=3,
                 split='train'):
  """root/split/<class>/NNN.jpg from real JPEGs; returns root."""
  for c, name in enumerate(classes):
    (root / split / name).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      shutil.copy(jpegs[(c * per_class + i) % len(jpegs)],
                  root / split / name / f'{i:03d}.jpg')
  return root


def source(root, split='train', **kwargs):
  return data.make_source(f'imagefolder:{root}', split, image_size=32,
                          **kwargs)


def parse_flags(monkeypatch, *overrides):
  """The command line's config parsing, in process."""
  argv = ['aisci.main', '--config=configs/vit_cifar.py:tiny', *overrides]
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads sys.argv
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values,
                                  lock_config=True)
  flag_values(argv)
  return flag_values.config


def tiny_config(**model):
  config = vit_cifar.get_config('tiny')
  config.model.update(width=32, depth=1, mlp_dim=64, num_heads=2,
                      patch_size=8, **model)
  return config


# ------------------------------------------------------------- the cases --
# Each: (tmp_path, jpegs, monkeypatch) -> makes the mistake.

def mistyped_field(tmp, jpegs, mp):
  parse_flags(mp, '--config.totl_steps=5')


def wrong_type_int(tmp, jpegs, mp):
  parse_flags(mp, '--config.total_steps=abc')


def wrong_type_bool(tmp, jpegs, mp):
  parse_flags(mp, '--config.optimizer.skip_nonfinite_updates=maybe')


def unknown_variant(tmp, jpegs, mp):
  vit_cifar.get_config('huge')


def unknown_dataset(tmp, jpegs, mp):
  data.make_source('cifar1O', 'train', image_size=32, data_dir=str(tmp))


def no_network(tmp, jpegs, mp):
  mp.setattr(tfds_source, '_PROBE_HOST', 'aisci-test.invalid')  # RFC 2606
  data.make_source('cifar10', 'train', image_size=32, data_dir=str(tmp))


def folder_missing(tmp, jpegs, mp):
  source(tmp / 'no_such_folder')


def folder_empty(tmp, jpegs, mp):
  source(tmp)


def split_without_class_folders(tmp, jpegs, mp):
  (tmp / 'train').mkdir()
  shutil.copy(jpegs[0], tmp / 'train' / 'loose.jpg')
  source(tmp)


def empty_class_folder(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'empty_class').mkdir()
  source(tmp)


def eval_class_unknown_to_training(tmp, jpegs, mp):
  image_folder(tmp, jpegs, classes=('cat', 'zebra'), split='test')
  source(tmp, 'test', class_names=['cat', 'dog'])


def corrupt_file(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'dog' / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
  source(tmp)


def truncated_jpeg(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  whole = jpegs[0].read_bytes()
  (tmp / 'train' / 'dog' / 'cut.jpg').write_bytes(whole[:len(whole) // 2])
  source(tmp)


def text_named_as_image(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'cat' / 'notes.png').write_text('not a picture')
  source(tmp)


def empty_file(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'cat' / 'zero.jpg').touch()
  source(tmp)


def non_image_extension(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'cat' / 'labels.csv').write_text('a,b\n')
  source(tmp)


def corrupt_file_streamed(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  (tmp / 'train' / 'dog' / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
  source(tmp, cache=False)


def tiff_streamed(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  Image.open(jpegs[0]).save(tmp / 'train' / 'cat' / 'scan.tif')
  source(tmp, cache=False)


def class_all_unreadable_when_skipping(tmp, jpegs, mp):
  image_folder(tmp, jpegs)
  for path in (tmp / 'train' / 'dog').iterdir():
    path.write_bytes(b'broken')
  imagefolder.make_source(str(tmp), 'train', image_size=32, skip_corrupt=True)


def batch_not_divisible_by_devices(tmp, jpegs, mp):
  class EightDevices:  # only .shape is read
    shape = {'data': 8}
  sharding.check_batch_size(12, EightDevices(), 'config.input.batch_size')


def image_size_not_divisible_by_patch(tmp, jpegs, mp):
  model = models.build_model(tiny_config().model, num_classes=10)
  steps.init_variables(model, jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 3)))


def unknown_model(tmp, jpegs, mp):
  config = tiny_config()
  config.model.name = 'vitt'
  _refused_before_data(tmp, config)


def unknown_task(tmp, jpegs, mp):
  config = tiny_config()
  config.task.name = 'classify'
  _refused_before_data(tmp, config)


def unknown_optimizer(tmp, jpegs, mp):
  config = tiny_config()
  config.optimizer.name = 'adam'
  _refused_before_data(tmp, config)


def unknown_model_field(tmp, jpegs, mp):
  config = tiny_config()
  config.model.widht = 32
  _refused_before_data(tmp, config)


def unknown_multi_task_field(tmp, jpegs, mp):
  config = tiny_config()
  config.task = dict(name='multi', tasks=dict(
      label=dict(name='classification'),
      area=dict(name='regression', targte='area')))
  _refused_before_data(tmp, config)


def unknown_dtype(tmp, jpegs, mp):
  config = tiny_config()
  config.dtype = 'bf16'
  _refused_before_data(tmp, config)


def _refused_before_data(tmp, config):
  # The folder does not even exist: the config's error must come first.
  config.dataset = f'imagefolder:{tmp}/no_such_folder'
  loop.train_and_evaluate(config, str(tmp / 'run'))


def unknown_schedule(tmp, jpegs, mp):
  config = tiny_config()
  config.schedule.decay = 'exponential'
  _refused_before_data(tmp, config)


def _started_workdir(tmp, config):
  workdir = tmp / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  return workdir


def config_changed_on_resume(tmp, jpegs, mp):
  config = tiny_config()
  config.dataset = f'imagefolder:{tmp}/data'
  workdir = _started_workdir(tmp, config)
  config.model.width = 48
  config.input.image_size = 64
  config.total_steps = 10  # a safe change, not listed
  # Refused before any data is read (the folder does not even exist).
  loop.train_and_evaluate(config, str(workdir))


def config_json_unreadable(tmp, jpegs, mp):
  workdir = tmp / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{"model": ')
  loop.train_and_evaluate(tiny_config(), str(workdir))


IMAGE = (r"Cannot read image '.*{}' \(.*\)\. Replace or delete the file\. To "
         r"leave unreadable files out instead \(counted in the log\), set "
         r"config.input.skip_corrupt=True\.")
CASES = [
    (mistyped_field, AttributeError, r'Did you mean "total_steps" instead of "totl_steps"'),
    (wrong_type_int, flags.IllegalFlagValueError, r"total_steps=abc: invalid literal for int\(\)"),
    (wrong_type_bool, flags.IllegalFlagValueError, r"skip_nonfinite_updates=maybe: .*Non-boolean"),
    (unknown_variant, ValueError, r"Unknown variant 'huge' of vit_cifar; known: \('default', 'tiny'"),
    (unknown_dataset, ValueError, r"Unknown dataset 'cifar1O'.*imagefolder"),
    (no_network, RuntimeError, r'no network.*imagefolder:PATH'),
    (folder_missing, FileNotFoundError, r"Dataset folder '.*no_such_folder' does not exist .*check the path"),
    (folder_empty, FileNotFoundError, r"Dataset folder '.*/train' does not exist\. .* expects .*/train/<class name>/<image files>"),
    (split_without_class_folders, FileNotFoundError, r"train' has no class sub-folders: put the images of each class in their own folder"),
    (empty_class_folder, FileNotFoundError, r"Class folder '.*empty_class' holds no image files .* add images or remove the folder"),
    (eval_class_unknown_to_training, ValueError, r"class folders \['zebra'\] that the training split does not have"),
    (corrupt_file, ValueError, IMAGE.format(r'dog/broken\.jpg')),
    (truncated_jpeg, ValueError, r"Cannot read image '.*dog/cut\.jpg' \(OSError: .*[Tt]runcated"),
    (text_named_as_image, ValueError, IMAGE.format(r'cat/notes\.png')),
    (empty_file, ValueError, IMAGE.format(r'cat/zero\.jpg')),
    (non_image_extension, ValueError, r"not images by their extension: '.*cat/labels\.csv' .* Convert or remove them, or set config.input.skip_corrupt=True"),
    (corrupt_file_streamed, ValueError, IMAGE.format(r'dog/broken\.jpg')),
    (tiff_streamed, ValueError, r"Image '.*cat/scan\.tif' is TIFF, which config.input.cache=False cannot decode .* set config.input.cache=True"),
    (class_all_unreadable_when_skipping, ValueError, r"Class folder\(s\) \['dog'\] of split 'train' hold no readable image"),
    (batch_not_divisible_by_devices, ValueError, r'batch_size=12 is not divisible by the 8 devices.*use a multiple of 8'),
    (image_size_not_divisible_by_patch, ValueError, r'Image size 30x30 is not divisible by the ViT patch size 8: change config.input.image_size or config.model.patch_size'),
    (unknown_model, ValueError, r"Unknown model name 'vitt' in config.model.name\. Known models: \[.*'vit'"),
    (unknown_model_field, TypeError, r"config.model does not fit model 'vit': it has no field\(s\) \['widht'\]\. Valid fields of ViT: \[.*'width'"),
    (unknown_task, ValueError, r"Unknown task 'classify' in config.task.name; known: \[.*'classification'"),
    (unknown_multi_task_field, ValueError, r"config.task.tasks.area has fields \['targte'\] that task 'regression' does not take; its fields: \[.*'target'"),
    (unknown_optimizer, ValueError, r"Unknown config.optimizer.name 'adam'; known: 'adamw', 'sgd'"),
    (unknown_dtype, ValueError, r"Unknown config.dtype 'bf16'; known: \('float32', 'bfloat16'\)"),
    (unknown_schedule, ValueError, r"Unknown config.schedule.decay 'exponential'; known:"),
    (config_changed_on_resume, workdir_config.ConfigChangedError,
     r'differs from the one workdir .*run was started with .* in 2 field\(s\).*:\n'
     r'  input.image_size: 32 -> 64\n  model.width: 32 -> 48\n.*--allow_config_change'),
    (config_json_unreadable, workdir_config.ConfigChangedError, r'Cannot read .*config.json .*--allow_config_change'),
]


@pytest.mark.parametrize('make_mistake, error, message', CASES,
                         ids=[c[0].__name__ for c in CASES])
def test_bad_input_is_a_clear_error(make_mistake, error, message, tmp_path,
                                    jpegs, monkeypatch):
  with pytest.raises(error, match=message):
    make_mistake(tmp_path, jpegs, monkeypatch)


def test_there_are_twenty_cases_or_more():
  assert len(CASES) >= 20


# ------------------------------------------- a real, messy image folder --

def test_messy_real_folder_gives_the_documented_behaviour(tmp_path, jpegs):
  """Corrupt and non-image files, grayscale/RGBA/16-bit images among real
  JPEGs, and an empty class folder: each is an error naming it, until the
  folder is removed and config.input.skip_corrupt skips and counts the rest."""
  root = image_folder(tmp_path, jpegs, per_class=4)
  cat, dog = root / 'train' / 'cat', root / 'train' / 'dog'
  rgb = np.asarray(Image.open(jpegs[0]))  # [32, 32, 3] uint8
  Image.fromarray(rgb).convert('L').save(cat / 'gray.png')
  Image.fromarray(np.dstack([rgb, np.full((32, 32), 77, np.uint8)])).save(
      cat / 'rgba.png')
  deep = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
  Image.fromarray(deep).save(dog / 'deep.png')  # 16-bit grayscale
  (dog / 'broken.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  whole = jpegs[1].read_bytes()
  (dog / 'cut.jpg').write_bytes(whole[:len(whole) // 3])
  (cat / 'README.txt').write_text('photos from the lab')
  (cat / '.DS_Store').write_bytes(b'\0\1')  # hidden: ignored
  (root / 'train' / 'horse').mkdir()

  with pytest.raises(FileNotFoundError, match=r"Class folder '.*horse' holds no image"):
    source(root)
  (root / 'train' / 'horse').rmdir()
  with pytest.raises(ValueError, match=r"not images by their extension: '.*README\.txt'"):
    source(root)
  (cat / 'README.txt').rename(tmp_path / 'README.txt')
  with pytest.raises(ValueError, match=r"Cannot read image '.*dog/broken\.jpg'"):
    source(root, options=dict(image_size=32, skip_corrupt=False))
  (tmp_path / 'README.txt').rename(cat / 'README.txt')

  skipping = source(root, options=dict(image_size=32, skip_corrupt=True))
  # 4 + 2 cat images (gray, rgba), 4 + 1 dog images (deep); 2 unreadable
  # and README.txt skipped and counted.
  assert skipping.num_examples == skipping.total_examples == 11
  assert 'skipped 2 unreadable and 1 non-image files' in skipping.description
  images = [np.asarray(skipping.get(np.int64(i))['image']) for i in range(11)]
  labels = [int(skipping.get(np.int64(i))['label']) for i in range(11)]
  assert labels == [0] * 6 + [1] * 5
  # Sorted names: cat/000..003.jpg, gray.png, rgba.png; dog/000..003, deep.png.
  gray, rgba, deep8 = images[4], images[5], images[10]
  assert {im.shape for im in images} == {(32, 32, 3)}
  expected_gray = np.asarray(Image.fromarray(rgb).convert('L'))
  for channel in range(3):  # grayscale: three equal channels
    np.testing.assert_array_equal(gray[..., channel], expected_gray)
  np.testing.assert_array_equal(rgba, rgb)  # RGBA: alpha dropped, colours kept
  expected_deep = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
  np.testing.assert_array_equal(deep8[..., 0], expected_deep)
  np.testing.assert_array_equal(images[0], np.asarray(Image.open(jpegs[0])))


# ---------------------------------------------------- disk full on save --

def test_disk_full_while_saving_fails_clearly_and_keeps_checkpoints(
    tmp_path, jpegs):
  root = image_folder(tmp_path / 'data', jpegs, per_class=8)
  image_folder(root, jpegs, per_class=2, split='test')
  workdir = tmp_path / 'run'
  args = [sys.executable, '-m', 'aisci.main', '--config=configs/vit_cifar.py:tiny',
          '--cpu_devices=1', f'--config.dataset=imagefolder:{root}',
          f'--workdir={workdir}', '--config.checkpoint_every_steps=2',
          '--config.log_every_steps=2', '--config.input.batch_size=4',
          '--config.input.eval_batch_size=4', '--config.model.width=32',
          '--config.model.depth=1', '--config.model.mlp_dim=64',
          '--config.model.num_heads=2', '--config.model.patch_size=8']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  first = subprocess.run(args + ['--config.total_steps=2'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]

  # No file may grow past 20 kB, so the next checkpoint cannot be written.
  # The limit is set in the child before it becomes the run (a preexec_fn
  # would run Python in a fork of this multithreaded process).
  limited = [sys.executable, '-c', 'import os, resource, sys; '
             'resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)); '
             'os.execv(sys.executable, [sys.executable] + sys.argv[1:])']
  full = subprocess.run(limited + args[1:] + ['--config.total_steps=6'],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert full.returncode == 74, full.stderr[-3000:]
  assert 'Resuming from step 2' in full.stderr
  assert (f"Could not write checkpoint 4 to {workdir}/checkpoints (ValueError: "
          in full.stderr)
  assert 'File too large' in full.stderr
  assert ('The disk may be full, or a quota or file-size limit reached: free '
          'space (or lower config.keep_checkpoints) and rerun the same '
          'command. It resumes from checkpoint 2, which is complete and '
          'unharmed.') in full.stderr
  checkpoints = workdir / 'checkpoints'
  assert sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit()) == ['2']
  manager = ocp.CheckpointManager(checkpoints)
  state = manager.restore(2)
  manager.close()
  assert int(state['step']) == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state['params']))
