"""The report's pictures, as PNG files: headless matplotlib.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas rather
than through pyplot, so nothing here needs a display, touches pyplot's
global state or changes the backend of a notebook that imports aisci.

Every function takes plain numpy arrays, writes one PNG and returns its
path; none of them knows about models, tasks or workdirs. matplotlib is
imported when the first picture is drawn, not with aisci: training needs it
only for the report at the end (benchmarks/README.md, "Start-up").
"""

import functools
from typing import Mapping, Optional, Sequence

import numpy as np

DPI = 100


def _new_figure(**kwargs):
  """A matplotlib.figure.Figure(**kwargs)."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  return figure.Figure(**kwargs)


@functools.cache
def _class_colors() -> np.ndarray:
  """Categorical colours for segmentation classes (tab10) [10, 3]."""
  from matplotlib import colors  # pylint: disable=g-import-not-at-top
  return np.asarray([colors.to_rgb(f'C{i}') for i in range(10)], np.float32)


def _save(fig, path: str) -> str:
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  backend_agg.FigureCanvasAgg(fig)
  fig.savefig(path, dpi=DPI)
  return path


def curves(series: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str, *,
           title: str = '', ylabel: str = '') -> str:
  """Lines of value vs step, one per series (e.g. 'train', 'eval').

  series: name -> (steps [n], values [n]); a series with one point is drawn
    as a marker, so a single final evaluation still shows.
  """
  fig = _new_figure(figsize=(6, 4))
  ax = fig.add_subplot()
  for name, (steps, values) in series.items():
    ax.plot(steps, values, marker='o' if len(steps) < 20 else None,
            label=f'{name} (last {values[-1]:.4g})')
  ax.set_xlabel('step')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return _save(fig, path)


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str],
                     path: str) -> str:
  """Heat map of row-normalized counts (recall per true class), with counts.

  confusion: [classes, classes] int, confusion[true, predicted].
  """
  confusion = np.asarray(confusion)
  n = len(class_names)
  if confusion.shape != (n, n):
    raise ValueError(f'confusion has shape {confusion.shape}, expected '
                     f'({n}, {n}) for {n} class names.')
  rows = confusion.sum(axis=1, keepdims=True)
  fraction = np.divide(confusion, rows, out=np.zeros(confusion.shape),
                       where=rows > 0)
  size = min(4 + 0.5 * n, 20)
  fig = _new_figure(figsize=(size, size * 0.85))
  ax = fig.add_subplot()
  shown = ax.imshow(fraction, cmap='Blues', vmin=0, vmax=1)
  fig.colorbar(shown, ax=ax, fraction=0.046, label='fraction of true class')
  ticks = np.arange(n)
  ax.set_xticks(ticks, labels=class_names, rotation=45, ha='right')
  ax.set_yticks(ticks, labels=class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'Confusion matrix ({int(confusion.sum())} examples)')
  if n <= 30:  # Counts stay legible up to about 30 classes.
    for t in range(n):
      for p in range(n):
        ax.text(p, t, str(int(confusion[t, p])), ha='center', va='center',
                fontsize=8, color='white' if fraction[t, p] > 0.5 else 'black')
  fig.tight_layout()
  return _save(fig, path)


def to_display(images: np.ndarray) -> np.ndarray:
  """uint8 or float [0, 1] images, [n, h, w], [n, h, w, 1] or [n, h, w, 3]
  -> float [n, h, w, 3] in [0, 1]."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = images.astype(np.float32) / 255.0
  images = np.clip(images.astype(np.float32), 0.0, 1.0)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'images have shape {images.shape}; expected [n, h, w], '
                     '[n, h, w, 1] or [n, h, w, 3].')
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _grid(n: int, columns: int, cell: float, extra_height: float = 0.0):
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  fig = _new_figure(figsize=(columns * cell, rows * (cell + extra_height)))
  axes = fig.subplots(rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  return fig, axes.flat


def example_grid(images: np.ndarray, labels: np.ndarray,
                 predicted: np.ndarray, class_names: Sequence[str], path: str,
                 *, probabilities: Optional[np.ndarray] = None,
                 max_images: int = 24, columns: int = 6,
                 only_errors: bool = True) -> Optional[str]:
  """A grid of (by default misclassified) examples titled true / predicted.

  Args:
    images: [n, h, w, c] uint8 or float in [0, 1] (see `to_display`).
    labels: [n] int true classes.
    predicted: [n] int predicted classes.
    class_names: label i is class_names[i].
    path: PNG to write.
    probabilities: optional [n, classes]: the predicted class's probability
      is shown, and errors are ordered most confident first.
    max_images: at most this many cells.
    only_errors: False shows all examples (correct ones titled in green).
  Returns:
    path, or None when there is nothing to show (no errors).
  """
  images = to_display(images)
  labels, predicted = np.asarray(labels), np.asarray(predicted)
  chosen = np.flatnonzero(labels != predicted) if only_errors else np.arange(
      len(labels))
  if probabilities is not None:
    confidence = np.asarray(probabilities)[np.arange(len(predicted)), predicted]
    chosen = chosen[np.argsort(-confidence[chosen], kind='stable')]
  chosen = chosen[:max_images]
  if not len(chosen):
    return None
  fig, axes = _grid(len(chosen), columns, cell=1.6, extra_height=0.35)
  for ax, i in zip(axes, chosen):
    ax.imshow(images[i], interpolation='nearest')
    title = f'true {class_names[labels[i]]}\npred {class_names[predicted[i]]}'
    if probabilities is not None:
      title += f' {confidence[i]:.0%}'
    # y given: matplotlib then skips placing each title clear of the
    # (hidden) axis, a third of the grid's drawing time; the same pixels.
    ax.set_title(title, fontsize=8, y=1.0,
                 color='tab:green' if labels[i] == predicted[i] else 'tab:red')
  fig.suptitle('Misclassified test examples (most confident first)'
               if only_errors else 'Test examples', fontsize=10)
  fig.tight_layout()
  return _save(fig, path)


def colorize(masks: np.ndarray) -> np.ndarray:
  """[n, h, w] int class masks -> [n, h, w, 3] float colours (class 0 dark)."""
  masks = np.asarray(masks).astype(np.int64)
  palette = np.concatenate([np.zeros((1, 3), np.float32), _class_colors()])
  return palette[np.mod(masks, len(palette))]


def overlay_grid(images: np.ndarray, true_masks: np.ndarray,
                 pred_masks: np.ndarray, path: str, *, alpha: float = 0.45,
                 max_images: int = 8) -> str:
  """Segmentation: per example, the image, true mask and predicted mask
  overlaid on it, and the disagreement (red where they differ).

  Args:
    images: [n, h, w, c] uint8 or float in [0, 1] (see `to_display`).
    true_masks: [n, h, w] int class per pixel (0: background).
    pred_masks: [n, h, w] int class per pixel.
    path: PNG to write.
    alpha: opacity of the mask colours over the image.
    max_images: rows drawn at most (the first ones).
  """
  images = to_display(images)[:max_images]
  true_masks = np.asarray(true_masks)[:max_images]
  pred_masks = np.asarray(pred_masks)[:max_images]
  if not (images.shape[:3] == true_masks.shape == pred_masks.shape):
    raise ValueError(
        f'overlay_grid needs images [n, h, w, c] and masks [n, h, w] of the '
        f'same n, h, w; got {images.shape}, {true_masks.shape}, '
        f'{pred_masks.shape}.')
  n = len(images)
  blend = lambda masks: (1 - alpha) * images + alpha * colorize(masks)
  errors = (true_masks != pred_masks)[..., None]
  panels = {'image': images, 'true mask': blend(true_masks),
            'predicted mask': blend(pred_masks),
            'errors': np.where(errors, np.asarray([1.0, 0.0, 0.0]), images * 0.5)}
  fig = _new_figure(figsize=(4 * 2.0, n * 2.0 + 0.3))
  axes = fig.subplots(n, 4, squeeze=False)
  for row in range(n):
    error_rate = float(errors[row].mean())
    for col, (name, panel) in enumerate(panels.items()):
      ax = axes[row, col]
      ax.imshow(panel[row], interpolation='nearest')
      ax.axis('off')
      if row == 0:
        ax.set_title(name, fontsize=9)
      if col == 3:
        ax.text(0.02, 0.02, f'{error_rate:.1%} wrong', color='white',
                fontsize=8, transform=ax.transAxes)
  fig.tight_layout()
  return _save(fig, path)


def read_png(path: str) -> np.ndarray:
  """PNG -> [h, w, 3] uint8 (for TensorBoard's image tab)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))
