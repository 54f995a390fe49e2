"""Input pipeline: exact resumption, shuffling, eval padding and masks."""

import numpy as np
import pytest

from aisci import data
from aisci.data import augment
from aisci.data import pipeline
from aisci.data import preprocess

NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def preprocessing(source, augment_name='cifar'):
  return preprocess.make_preprocess(dict(NORM, augment=augment_name), source)


@pytest.fixture(scope='module')
def source(cifar10_small):
  return data.make_source(f'imagefolder:{cifar10_small}', 'test', image_size=32)


def take(ds, n):
  it = ds.as_numpy_iterator()
  return [next(it) for _ in range(n)]


def train_ds(source, start_step, seed=0, batch=64, process_index=0,
             process_count=1, augment_name='cifar', alternating_flip=False):
  return pipeline.train_dataset(
      source, local_batch_size=batch // process_count,
      process_index=process_index, process_count=process_count, seed=seed,
      start_step=start_step, preprocess=preprocessing(source, augment_name)[0],
      alternating_flip=alternating_flip)


def test_training_batches_resume_exactly_mid_epoch_and_across_epochs(source):
  # 500 examples, batch 64: 7 steps per epoch, so step 9 is in epoch 2.
  straight = take(train_ds(source, 0), 12)
  for start in (3, 9):
    resumed = take(train_ds(source, start), 12 - start)
    for a, b in zip(straight[start:], resumed):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_each_epoch_is_a_permutation_and_epochs_differ(source):
  labels = np.concatenate([b['label'] for b in take(train_ds(source, 0, batch=50), 20)])
  first, second = labels[:500], labels[500:]
  np.testing.assert_array_equal(np.bincount(first), [50] * 10)
  np.testing.assert_array_equal(np.bincount(second), [50] * 10)
  assert not np.array_equal(first, second)
  other_seed = np.concatenate(
      [b['label'] for b in take(train_ds(source, 0, seed=1, batch=50), 10)])
  assert not np.array_equal(first, other_seed)


def test_training_images_are_augmented_and_normalized(source):
  batch = take(train_ds(source, 0), 1)[0]
  assert batch['image'].shape == (64, 32, 32, 3)
  assert batch['image'].dtype == np.float32
  # Normalized with mean 0.5, std 0.25: values within [-2, 2].
  assert batch['image'].min() >= -2.0 and batch['image'].max() <= 2.0
  plain = train_ds(source, 0, augment_name='none')
  assert not np.array_equal(take(plain, 1)[0]['image'], batch['image'])
  np.testing.assert_array_equal(take(plain, 1)[0]['label'], batch['label'])


def test_training_batches_do_not_depend_on_the_process_count(source):
  # Two processes each read half of every global batch: put side by side,
  # their batches are the one-process batches, augmentation included.
  single = take(train_ds(source, 0, batch=64), 9)
  halves = [take(train_ds(source, 0, batch=64, process_index=p,
                          process_count=2), 9) for p in range(2)]
  for step, batch in enumerate(single):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          batch[key], np.concatenate([halves[0][step][key],
                                      halves[1][step][key]]))


def test_cifar_augment_is_a_crop_of_the_padded_image():
  image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  out = augment.cifar_augment(image, np.array([1, 2], np.int64), pad=2).numpy()
  padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode='reflect')
  windows = [padded[i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
  assert any(np.array_equal(out, w) or np.array_equal(out, w[:, ::-1])
             for w in windows)


def test_eval_sees_every_example_exactly_once(source):
  # 500 examples in batches of 64: 8 batches, the last with 52 padding rows.
  batches = list(pipeline.eval_dataset(
      source, local_batch_size=64, process_count=1,
      preprocess=preprocessing(source)[1]).as_numpy_iterator())
  assert len(batches) == pipeline.eval_steps(source, 64, 1) == 8
  assert all(b['image'].shape[0] == 64 for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert mask.sum() == 500 and mask[:500].all() and not mask[500:].any()
  np.testing.assert_array_equal(np.bincount(labels[mask]), [50] * 10)


def test_eval_shares_of_two_processes_cover_the_split(cifar10_small):
  counts = []
  for index in range(2):
    share = data.make_source(f'imagefolder:{cifar10_small}', 'test',
                             image_size=32, process_index=index, process_count=2)
    batches = list(pipeline.eval_dataset(
        share, local_batch_size=32, process_count=2,
        preprocess=preprocessing(share)[1]).as_numpy_iterator())
    assert len(batches) == pipeline.eval_steps(share, 32, 2)
    counts.append(sum(int(b['mask'].sum()) for b in batches))
  assert counts == [250, 250]


def test_batch_larger_than_the_split_is_a_clear_error(source):
  with pytest.raises(ValueError, match='larger than the training split'):
    pipeline.steps_per_epoch(source, 1000)


def test_flip_augmentation_only_mirrors():
  image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
  outs = [augment.flip(image, np.array([0, k], np.int64)).numpy() for k in range(8)]
  assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1])
             for o in outs)
  assert any(np.array_equal(o, image[:, ::-1]) for o in outs)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch(source):
  # 500 examples, batch 50: epochs of 10 batches.
  batches = take(train_ds(source, 0, batch=50, augment_name='none',
                          alternating_flip=True), 30)
  images = np.concatenate([b['image'] for b in batches])
  epochs = [images[i * 500:(i + 1) * 500] for i in range(3)]
  originals = np.concatenate([b['image'] for b in take(pipeline.eval_dataset(
      source, local_batch_size=50, process_count=1,
      preprocess=preprocessing(source, 'none')[1]), 10)])
  key = lambda image: image.tobytes()  # pylint: disable=unnecessary-lambda-assignment
  unflipped = {key(x) for x in originals}
  mirrored = {key(x[:, ::-1]) for x in originals}
  as_seen = [np.array([key(x) in unflipped for x in epoch]) for epoch in epochs]
  for epoch in epochs:
    # Every image is its original or its mirror image ...
    assert all(key(x) in unflipped or key(x) in mirrored for x in epoch)
  # ... about half of them mirrored, each one from its own random side ...
  assert 150 < int((~as_seen[0]).sum()) < 350
  # ... and the mirrored ones of one epoch are the unmirrored of the next.
  def sides(epoch, seen):
    return {key(x if s else x[:, ::-1]): s for x, s in zip(epoch, seen)}
  first, second, third = (sides(e, s) for e, s in zip(epochs, as_seen))
  assert all(second[k] != v for k, v in first.items())
  assert first == third
  # Resumed mid-run: the same images, flips included.
  resumed = take(train_ds(source, 13, batch=50, augment_name='none',
                          alternating_flip=True), 2)
  np.testing.assert_array_equal(resumed[0]['image'], batches[13]['image'])


@pytest.mark.parametrize('augment_name, kind', [('cifar', 'image'), ('flip', 'image'),
                                                ('none', 'text')])
def test_alternating_flip_refuses_flipping_or_non_image_input(augment_name,
                                                                kind):
  with pytest.raises(ValueError, match='alternating_flip'):
    augment.check_alternating_flip(augment_name, kind)


def test_alternating_flip_accepts_every_flip_free_image_augmentation():
  for name in augment.WITHOUT_FLIP:
    augment.check_alternating_flip(name, 'image')  # raises if refused


def test_map_functions_are_traced_as_written_without_autograph(source):
  """AutoGraph is off (pipeline.parallel_map; 0.2-0.3 s per start): a preprocess
  that branches in Python on a tensor is an error, not a tf.cond."""
  def branching(features, seed=None):
    del seed
    if features['label'] > 4:
      return features
    return dict(features, label=features['label'] + 1)
  with pytest.raises(TypeError, match='tf.Tensor'):
    pipeline.train_dataset(source, local_batch_size=8, process_index=0,
                           process_count=1, seed=0, start_step=0,
                           preprocess=branching)
  with pytest.raises(TypeError, match='tf.Tensor'):
    pipeline.eval_dataset(source, local_batch_size=8, process_count=1,
                          preprocess=branching)


def test_evaluation_batches_start_no_autotuning_thread(source):
  """pipeline.read_once: deleting a finished iterator waited for that
  thread, 7-8 s after evaluation's last batch in half the runs."""
  ds = pipeline.eval_dataset(source, local_batch_size=100, process_count=1,
                             preprocess=preprocessing(source)[1])
  assert ds.options().autotune.enabled is False
  assert sum(len(b['label']) for b in ds.as_numpy_iterator()) == 500
  train = train_ds(source, 0)  # endless: keeps autotuning
  assert train.options().autotune.enabled is not False
