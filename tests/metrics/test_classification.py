"""Classification report against a direct count over label arrays."""

import numpy as np

from aisci.metrics import classification


def direct_report(labels, predictions, num_classes):
  """Precision/recall/F1 counted example by example (independent of numpy
  matrix algebra on the confusion matrix)."""
  rows = []
  for c in range(num_classes):
    tp = sum(1 for t, p in zip(labels, predictions) if t == c and p == c)
    fp = sum(1 for t, p in zip(labels, predictions) if t != c and p == c)
    fn = sum(1 for t, p in zip(labels, predictions) if t == c and p != c)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    rows.append((precision, recall, f1, tp + fn))
  return rows


def test_report_matches_direct_counts():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300)
  # Mostly right, with class 3 never predicted (zero-division case).
  predictions = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 3, 300))
  predictions = np.where(predictions == 3, 0, predictions)
  confusion = np.zeros((4, 4), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  report = classification.classification_report(confusion, ['a', 'b', 'c', 'd'])
  expected = direct_report(labels, predictions, 4)
  for row, (precision, recall, f1, support) in zip(report['per_class'], expected):
    np.testing.assert_allclose([row['precision'], row['recall'], row['f1']],
                               [precision, recall, f1], rtol=1e-12)
    assert row['support'] == support
  assert report['per_class'][3]['precision'] == 0.0
  np.testing.assert_allclose(report['accuracy'], np.mean(labels == predictions))
  np.testing.assert_allclose(report['macro avg']['f1'],
                             np.mean([e[2] for e in expected]))
  supports = np.array([e[3] for e in expected])
  np.testing.assert_allclose(report['weighted avg']['recall'],
                             np.mean(labels == predictions))
  np.testing.assert_allclose(report['weighted avg']['precision'],
                             np.dot([e[0] for e in expected], supports) / 300)


def test_table_lists_every_class_and_the_matrix():
  confusion = np.array([[5, 1], [2, 7]])
  text = classification.format_report(
      classification.classification_report(confusion, ['cat', 'dog']))
  lines = text.splitlines()
  assert any(l.split()[:1] == ['cat'] and l.split()[-1] == '6' for l in lines)
  assert any(l.split()[:2] == ['macro', 'avg'] for l in lines)
  assert lines[-1].split() == ['dog', '2', '7']
