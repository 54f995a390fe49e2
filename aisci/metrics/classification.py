"""Classification report from a confusion matrix: precision, recall, F1.

Everything derives from the confusion matrix summed over the whole
evaluation split, so the figures are exact for the split rather than an
average of per-batch figures.
"""

from typing import Any, Sequence

import numpy as np


def classification_report(confusion: np.ndarray,
                          class_names: Sequence[str]) -> dict[str, Any]:
  """Per-class and averaged precision, recall, F1 and support.

  Args:
    confusion: [num_classes, num_classes], confusion[true, predicted] counts.
    class_names: name of each class, in label order.
  Returns:
    dict with `per_class` (list of dicts), `macro avg`, `weighted avg`,
    `accuracy`, `num_examples` and `confusion_matrix` (nested lists).
  """
  confusion = np.asarray(confusion, np.int64)
  true_positives = np.diag(confusion).astype(np.float64)
  support = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)
  # A class never predicted (or never present) has precision (recall) 0, as
  # scikit-learn reports with zero_division=0.
  precision = np.divide(true_positives, predicted,
                        out=np.zeros_like(true_positives), where=predicted > 0)
  recall = np.divide(true_positives, support,
                     out=np.zeros_like(true_positives), where=support > 0)
  denominator = precision + recall
  f1 = np.divide(2 * precision * recall, denominator,
                 out=np.zeros_like(true_positives), where=denominator > 0)
  total = int(support.sum())
  per_class = [
      dict(name=str(name), precision=float(p), recall=float(r), f1=float(f),
           support=int(s))
      for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
  ]
  weights = support / max(total, 1)
  average = lambda w: dict(
      precision=float((precision * w).sum()), recall=float((recall * w).sum()),
      f1=float((f1 * w).sum()), support=total)
  return {
      'per_class': per_class,
      'macro avg': average(np.full(len(support), 1.0 / len(support))),
      'weighted avg': average(weights),
      'accuracy': float(true_positives.sum() / max(total, 1)),
      'num_examples': total,
      'confusion_matrix': confusion.tolist(),
  }


def format_report(report: dict[str, Any]) -> str:
  """The report as a fixed-width table, then the confusion matrix."""
  names = [c['name'] for c in report['per_class']]
  width = max([len(n) for n in names] + [len('weighted avg')])
  lines = [f'{"":>{width}}  precision  recall      f1  support']
  row = lambda name, r: (f'{name:>{width}}  {r["precision"]:9.4f}  '
                         f'{r["recall"]:6.4f}  {r["f1"]:6.4f}  '
                         f'{r["support"]:7d}')
  lines += [row(c['name'], c) for c in report['per_class']]
  lines.append('')
  lines.append(f'{"accuracy":>{width}}  {"":9}  {"":6}  '
               f'{report["accuracy"]:6.4f}  {report["num_examples"]:7d}')
  lines.append(row('macro avg', report['macro avg']))
  lines.append(row('weighted avg', report['weighted avg']))
  lines.append('')
  lines.append('confusion matrix (rows: true class, columns: predicted)')
  cell = max(5, max(len(str(v)) for r in report['confusion_matrix'] for v in r) + 1)
  short = [n[:cell - 1] for n in names]
  lines.append(f'{"":>{width}}' + ''.join(f'{s:>{cell}}' for s in short))
  for name, counts in zip(names, report['confusion_matrix']):
    lines.append(f'{name:>{width}}' + ''.join(f'{v:>{cell}d}' for v in counts))
  return '\n'.join(lines)
