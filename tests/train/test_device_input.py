"""Training batches made on the devices (aisci/train/device_input.py)."""

import json
import os
import socket
import subprocess
import sys
import types

import chex
import jax
import ml_collections
import numpy as np
import pytest

from aisci.data import source as source_lib
from aisci.train import device_input
from aisci.train import sharding as sharding_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _unnormalise(x):
  return np.rint((np.asarray(x) * np.asarray(STD) + np.asarray(MEAN)) * 255)


def _crops(image, pad):
  """Every h x w crop of `image` reflection-padded by `pad`."""
  size = image.shape[0]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
  return [padded[i:i + size, j:j + size]
          for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def _is_crop(image, original, pad, mirrored):
  if mirrored:
    original = original[:, ::-1]  # a mirrored crop = a crop of the mirror
  return any(np.array_equal(image, c) for c in _crops(original, pad))


def _images(n=10, size=6, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_alternating_flip_mirrors_every_other_epoch_from_each_images_coin():
  n, pad, batch = 10, 2, 4
  images = _images(n)
  labels = np.arange(n, dtype=np.int32)  # the label says which image it is
  coins = np.random.default_rng(1).integers(0, 2, n).astype(np.int32)
  for epoch in (0, 1):
    x, y = device_input.epoch_batches(
        images, labels, jax.random.PRNGKey(epoch), epoch, coins, steps=2,
        batch_size=batch, pad=pad, flip=False, alternating=True, mean=MEAN,
        std=STD)
    chex.assert_shape(x, (2, batch, 6, 6, 3))
    chex.assert_shape(y, (2, batch))
    y = np.asarray(y).ravel()
    assert len(set(y)) == 2 * batch  # a permutation: no image twice
    for image, index in zip(_unnormalise(x).reshape(-1, 6, 6, 3), y):
      assert _is_crop(image, images[index], pad,
                      mirrored=(coins[index] + epoch) % 2 == 1), (epoch, index)


@pytest.mark.parametrize('augment', sorted(device_input.AUGMENTS))
def test_each_augment_crops_and_flips_as_named(augment):
  pad, flip = device_input.AUGMENTS[augment]
  # 16 pixels: with padding half the image's size, reflections of a crop
  # can be crops of the mirror image too.
  images = _images(64, size=16)
  labels = np.arange(64, dtype=np.int32)
  x, y = device_input.epoch_batches(
      images, labels, jax.random.PRNGKey(3), 0, np.zeros(64, np.int32),
      steps=1, batch_size=64, pad=pad, flip=flip, alternating=False,
      mean=MEAN, std=STD)
  mirrored = 0
  for image, index in zip(_unnormalise(x[0]), np.asarray(y[0])):
    as_is = _is_crop(image, images[index], pad, mirrored=False)
    flipped = _is_crop(image, images[index], pad, mirrored=True)
    assert as_is or flipped
    mirrored += flipped and not as_is
  if flip:  # about half of 64 images; never with flip off
    assert 16 < mirrored < 48
  else:
    assert mirrored == 0


def _source(n=20):
  images = _images(n, size=4, seed=2)
  return source_lib.in_memory_source(
      images, np.arange(n), total_examples=n, class_names=['a', 'b'],
      description='test images')


def _options(**overrides):
  return ml_collections.ConfigDict({
      **dict(augment='cifar_pad2', alternating_flip=True, mean=MEAN, std=STD),
      **overrides})


def _batches(source, start_step, count, batch_size=6):
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(
      dict(data=-1, fsdp=1, model=1)))
  batches = device_input.train_batches(
      source, _options(), batch_sharding=sharding_lib.batch_sharding(mesh),
      global_batch_size=batch_size, seed=7, start_step=start_step)
  return [next(batches) for _ in range(count)]


def test_batches_resume_at_any_step_and_keep_the_epochs():
  source = _source()  # 20 examples, batches of 6: 3 steps per epoch
  fresh = _batches(source, 0, 7)
  resumed = _batches(source, 4, 3)
  chex.assert_trees_all_equal(fresh[4:], resumed)
  for batch in fresh:
    chex.assert_shape(batch['image'], (6, 4, 4, 3))
    assert batch['image'].sharding.is_equivalent_to(
        fresh[0]['image'].sharding, 4)
  # Each epoch: 18 distinct examples (2 dropped), in another order.
  epochs = [np.concatenate([np.asarray(b['label']) for b in fresh[i:i + 3]])
            for i in (0, 3)]
  assert all(len(set(e)) == 18 for e in epochs)
  assert not np.array_equal(epochs[0], epochs[1])


_BATCHES_SCRIPT = """
import sys
import jax
import numpy as np
from jax.experimental import multihost_utils
processes = int(sys.argv[1])
if processes > 1:
  jax.config.update('jax_num_cpu_devices', 2)
  from aisci.train import distributed
  assert distributed.initialize('auto', sys.argv[2], processes, int(sys.argv[3]))
from tests.train import test_device_input as t
batches = t._batches(t._source(), 0, 4, batch_size=8)
gather = lambda key: np.stack([
    multihost_utils.process_allgather(b[key], tiled=True) for b in batches])
images, labels = gather('image'), gather('label')
if jax.process_index() == 0:
  np.savez(sys.argv[4], images=images, labels=labels, devices=[
      len(jax.devices()), len(batches[0]['image'].sharding.device_set)])
"""


def _run_batches_script(devices: int, processes: int, out: str):
  """{'images', 'labels'} of 4 batches as the script's process 0 sees them,
  'devices': [devices, devices of a batch's sharding]."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  if processes == 1:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  address = f'localhost:{_free_port()}'
  runs = [subprocess.Popen(
      [sys.executable, '-c', _BATCHES_SCRIPT, str(processes), address, str(i),
       out],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for i in range(processes)]
  outputs = [run.communicate(timeout=300) for run in runs]
  for run, (_, err) in zip(runs, outputs):
    assert run.returncode == 0, err.decode()[-3000:]
  with np.load(out) as arrays:
    return dict(arrays)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_the_same_batches_on_several_devices_and_processes(tmp_path):
  # Each device makes its own rows of every batch; the batches of 2
  # processes x 2 devices (each process holding the whole split) are those
  # of 1 device.
  one = _run_batches_script(1, 1, str(tmp_path / 'one.npz'))
  assert list(one['devices']) == [1, 1]
  batches = _run_batches_script(2, 2, str(tmp_path / 'two.npz'))
  assert list(batches['devices']) == [4, 4]
  np.testing.assert_array_equal(batches['labels'], one['labels'])
  # The same crops and flips; the normalisation rounds differently when
  # split (last bit of float32).
  np.testing.assert_allclose(batches['images'], one['images'], atol=1e-6)


@pytest.mark.parametrize('share,total,process_count', [
    (20, 20, 1),  # one process: 20 examples in batches of 6, 4 rows padded
    (9, 19, 2),  # the smaller share of 2 processes pads to the larger's steps
])
def test_eval_batches_are_the_tf_data_pipelines(share, total, process_count):
  # pylint: disable=g-import-not-at-top
  from aisci.data import pipeline
  from aisci.data import preprocess as preprocess_lib
  # pylint: enable=g-import-not-at-top
  images = _images(share, size=4, seed=3)
  source = source_lib.in_memory_source(
      images, np.arange(share) % 2, total_examples=total,
      class_names=['a', 'b'], description='test images')
  options = _options()
  _, eval_fn = preprocess_lib.make_preprocess(options, source)
  expected = list(pipeline.eval_dataset(
      source, local_batch_size=6, process_count=process_count,
      preprocess=eval_fn).as_numpy_iterator())
  got = list(device_input.eval_batches(source, options, local_batch_size=6,
                                       process_count=process_count))
  assert len(got) == len(expected) == -(-(-(-total // process_count)) // 6)
  for g, e in zip(got, expected):
    assert set(g) == set(e) == {'image', 'label', 'mask'}
    for key in e:
      assert g[key].dtype == e[key].dtype, key
      np.testing.assert_array_equal(g[key], e[key], err_msg=key)
  mask = np.concatenate([g['mask'] for g in got])
  assert mask.sum() == share and mask[:share].all()


def test_refusals_name_the_fix():
  image = _source()
  with pytest.raises(ValueError, match='config.input.cache=True'):
    device_input.check(_options(), types.SimpleNamespace(
        kind='image', load_arrays=None, description='a folder'))
  with pytest.raises(ValueError, match="holds 'text' data"):
    device_input.check(_options(), types.SimpleNamespace(
        kind='text', load_arrays=None, description='sst2'))
  with pytest.raises(ValueError, match="augment='randaugment' has no on-device"):
    device_input.check(_options(augment='randaugment'), image)


_RUN_WITHOUT_TENSORFLOW = """
import json, shutil, sys
# As on a machine where TensorFlow is not installed: importing it fails.
sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None
import aisci.main  # everything `python -m aisci.main` imports
from aisci.train import loop
from configs import cifar_fast
data, straight, resumed = sys.argv[1:]
config = cifar_fast.get_config('cpu_airbench_opt')
config.dataset = f'imagefolder:{data}'
config.model.update(widths=(16, 32, 32), tta_translate=False)
config.input.update(on_device=True, batch_size=64, eval_batch_size=500)
config.update(total_steps=40, log_every_steps=20, eval_every_steps=1000,
              checkpoint_every_steps=20, keep_checkpoints=2, cpu_devices=1)
config.schedule.warmup_steps = 8
metrics = loop.train_and_evaluate(config, straight)
# The same run, as if stopped after step 20 (of 31 per epoch): it goes on
# from there, into the second epoch.
shutil.copytree(straight, resumed)
shutil.rmtree(f'{resumed}/checkpoints/40')
loop.train_and_evaluate(config, resumed)
assert sys.modules['tensorflow'] is None
print(json.dumps({k: float(v) for k, v in metrics.items()
                  if k in ('accuracy', 'loss')}))
"""


def test_a_run_on_device_needs_no_tensorflow_learns_and_resumes_exactly(
    cifar10_small, tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  result = subprocess.run(
      [sys.executable, '-c', _RUN_WITHOUT_TENSORFLOW, str(cifar10_small),
       str(straight), str(resumed)], cwd=REPO, capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  # 10 balanced classes: chance is 10 %. 40 steps on 2,000 real images
  # (27.2 % on the EPYC, 30.6 % through tf.data).
  assert metrics['accuracy'] >= 0.2, metrics
  # What a run writes, TensorFlow or not: the report, its pictures and the
  # TensorBoard events.
  for name in ('report.md', 'confusion_matrix.png', 'metrics.jsonl'):
    assert (straight / name).is_file(), name
  assert list(straight.glob('**/events.out.tfevents.*'))

  def final_params(workdir):
    manager = ocp.CheckpointManager(str(workdir / 'checkpoints'))
    assert manager.latest_step() == 40
    params = manager.restore(40)['params']
    manager.close()
    return params

  # The resumed run ends at the same parameters, bit for bit.
  chex.assert_trees_all_close(final_params(straight), final_params(resumed),
                              rtol=0, atol=0)
