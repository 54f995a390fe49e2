"""npz source: key conventions, standardization by training statistics,
clear errors for missing keys, mismatched lengths and pickled arrays."""

import numpy as np
import pytest

from aisci import data


def write(path, **arrays):
  np.savez(path, **arrays)
  return f'npz:{path}'


def test_float_sequences_with_labels(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, (40, 16)).astype(np.float32)
  dataset = write(tmp_path / 'd.npz', x=x, y=np.arange(40) % 3,
                  class_names=np.array(['low', 'mid', 'high']),
                  x_test=x[:10] + 1.0, y_test=np.zeros(10, np.int64))
  train = data.make_source(dataset, 'train', options={}, workdir=str(tmp_path))
  assert train.kind == 'sequence' and train.input_key == 'x'
  assert list(train.class_names) == ['low', 'mid', 'high']
  assert train.model_kwargs == {'max_len': 17}
  seq = np.stack([np.asarray(train.get(np.int64(i))['x']) for i in range(40)])
  assert seq.shape == (40, 16, 1)
  np.testing.assert_allclose(seq.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(seq.std(), 1.0, atol=1e-4)
  # 'dev' finds x_test; it is standardized with the training statistics.
  test = data.make_source(dataset, 'dev', options={}, workdir=str(tmp_path),
                          class_names=train.class_names)
  expected = (x[0] + 1.0 - x.mean()) / x.std()
  np.testing.assert_allclose(np.asarray(test.get(np.int64(0))['x'])[:, 0],
                             expected, rtol=1e-4, atol=1e-4)


def test_regression_targets_and_token_inputs(tmp_path):
  dataset = write(tmp_path / 'r.npz', x_train=np.arange(24).reshape(4, 6) % 5,
                  y_train=np.linspace(0, 1, 4))
  source = data.make_source(dataset, 'train', options={})
  assert source.input_key == 'tokens' and source.model_kwargs['vocab_size'] == 5
  assert list(source.class_names) == []
  assert np.asarray(source.get(np.int64(3))['label']).tolist() == [1.0]


@pytest.mark.parametrize('arrays, match', [
    (dict(x=np.zeros((4, 3)), y=np.zeros(5, np.int64)), '4 rows but y has 5'),
    (dict(inputs=np.zeros((4, 3)), y=np.zeros(4)), r"looked for \['x', 'x_train'\]"),
    (dict(x=np.zeros((4, 3))), "not its targets 'y'"),
    (dict(x=np.array([[1.0, np.nan]]), y=np.zeros(1, np.int64)), 'NaN or Inf'),
    (dict(x=np.zeros((2, 3, 4, 5)), y=np.zeros(2, np.int64)), r'\[n, length\]'),
    (dict(x=np.zeros((2, 3)), y=np.array([0, 5]), class_names=np.array(['a', 'b'])),
     'class labels'),
])
def test_bad_npz_files(tmp_path, arrays, match):
  dataset = write(tmp_path / 'bad.npz', **arrays)
  with pytest.raises((ValueError, KeyError), match=match):
    data.make_source(dataset, 'train', options=dict(class_names=('a', 'b')))


def test_pickled_arrays_are_refused(tmp_path):
  dataset = write(tmp_path / 'p.npz', x=np.array([{'a': 1}], dtype=object),
                  y=np.zeros(1))
  with pytest.raises(ValueError, match='pickle'):
    data.make_source(dataset, 'train', options={})
