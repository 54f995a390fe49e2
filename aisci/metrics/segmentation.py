"""Segmentation metrics from a pixel confusion matrix summed over a split.

Dice and IoU are computed once from the split's total intersections and
unions (not averaged over batches or images), the convention of the ISBI
and medical-imaging benchmarks that report per-class Dice.
"""

from typing import Any, Sequence

import numpy as np


def segmentation_report(confusion: np.ndarray,
                        class_names: Sequence[str]) -> dict[str, Any]:
  """confusion: [classes, classes] pixel counts, [true, predicted].

  Returns per-class dice, iou, precision, recall and support (pixels), their
  means over classes present in the truth or the prediction, and pixel
  accuracy.
  """
  confusion = np.asarray(confusion, np.float64)
  true_pixels = confusion.sum(axis=1)
  predicted_pixels = confusion.sum(axis=0)
  intersection = np.diag(confusion)
  union = true_pixels + predicted_pixels - intersection
  # A class absent from both truth and prediction has no defined score.
  present = (true_pixels + predicted_pixels) > 0
  with np.errstate(divide='ignore', invalid='ignore'):
    dice = np.where(present, 2 * intersection / (true_pixels + predicted_pixels), np.nan)
    iou = np.where(present, intersection / union, np.nan)
    precision = np.where(predicted_pixels > 0, intersection / predicted_pixels, 0.0)
    recall = np.where(true_pixels > 0, intersection / true_pixels, 0.0)
  per_class = {
      name: dict(dice=float(dice[i]), iou=float(iou[i]),
                 precision=float(precision[i]), recall=float(recall[i]),
                 support=int(true_pixels[i]))
      for i, name in enumerate(class_names)}
  total = confusion.sum()
  return dict(
      per_class=per_class,
      mean_dice=float(np.nanmean(dice)) if present.any() else 0.0,
      mean_iou=float(np.nanmean(iou)) if present.any() else 0.0,
      pixel_accuracy=float(intersection.sum() / total) if total else 0.0,
      num_pixels=int(total),
      confusion=confusion.astype(np.int64).tolist(),
      class_names=list(class_names))


def format_report(report: dict[str, Any]) -> str:
  """A fixed-width table: one row per class, then the means."""
  lines = [f'{"class":>16} {"dice":>7} {"iou":>7} {"precision":>9} '
           f'{"recall":>7} {"pixels":>11}']
  for name, r in report['per_class'].items():
    lines.append(f'{name[:16]:>16} {r["dice"]:7.4f} {r["iou"]:7.4f} '
                 f'{r["precision"]:9.4f} {r["recall"]:7.4f} {r["support"]:11d}')
  lines.append(f'{"mean":>16} {report["mean_dice"]:7.4f} '
               f'{report["mean_iou"]:7.4f}')
  lines.append(f'pixel accuracy {report["pixel_accuracy"]:.4f} over '
               f'{report["num_pixels"]} pixels')
  return '\n'.join(lines)
