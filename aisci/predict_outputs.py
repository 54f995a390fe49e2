"""What `python -m aisci.predict` makes of the model's outputs, by task:

  classification  the top-k classes with their probabilities
  regression      the predicted values (one per target column)
  segmentation    a mask PNG per image, in the training masks' own values
                  (0/255 for two classes, else class indices), an overlay
                  PNG of the mask on the image, and each class's share of
                  the pixels

Each task gives printed lines and a JSON record per example; a multi-task
run gives them per head, prefixed by the head's name.
"""

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from aisci.predict_inputs import Example


def tasks_of(task_config: Mapping[str, Any]) -> dict[Optional[str], str]:
  """{head name (None for a single-task run): task name}."""
  if task_config['name'] != 'multi':
    return {None: task_config['name']}
  return {head: sub['name'] for head, sub in task_config['tasks'].items()}


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int
          ) -> list[dict]:
  """[classes] -> the k most probable as [{'class', 'probability'}]."""
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'class': class_names[i], 'probability': float(probabilities[i])}
          for i in order]


class Writer:
  """Turns one example's outputs into lines and a record, writing PNGs for
  segmentation under `output_dir` (created when first needed)."""

  def __init__(self, *, class_names: Sequence[str], top_k: int,
               output_dir: str, mask_values: str = 'indices'):
    self.class_names = list(class_names)
    self.k = top_k
    self.output_dir = output_dir
    self.mask_values = mask_values
    self._used_stems: set[str] = set()

  def __call__(self, task: str, outputs: np.ndarray, example: Example,
               head: Optional[str]) -> tuple[list[str], dict]:
    return getattr(self, task)(np.asarray(outputs), example, head)

  def classification(self, logits, example, head):
    del example, head
    best = top_k(softmax(logits), self.class_names, self.k)
    width = max(len(c) for c in self.class_names)
    lines = [f'{e["class"]:<{width}}  {e["probability"]:.4f}' for e in best]
    return lines, {'top_k': best, 'logits': [float(v) for v in logits]}

  def regression(self, values, example, head):
    del example
    values = np.atleast_1d(values)
    text = ' '.join(f'{v:.6g}' for v in values)
    return [f'{head or "value"}  {text}'], {'values': [float(v) for v in values]}

  def _stem(self, name: str, head: Optional[str]) -> str:
    stem = os.path.splitext(os.path.basename(name))[0]
    if head:
      stem = f'{stem}_{head}'
    candidate, i = stem, 1
    while candidate in self._used_stems:  # same file name in two folders
      i += 1
      candidate = f'{stem}_{i}'
    self._used_stems.add(candidate)
    return candidate

  def segmentation(self, logits, example, head):
    h, w = example.crop or logits.shape[:2]
    mask = logits[:h, :w].argmax(-1).astype(np.uint8)
    stem = self._stem(example.name, head)
    os.makedirs(self.output_dir, exist_ok=True)
    mask_path = os.path.join(self.output_dir, f'{stem}_mask.png')
    # The training masks' own encoding, so a prediction can be corrected by
    # hand and added to the training set.
    stored = mask * 255 if self.mask_values == '0/255' else mask
    Image.fromarray(stored.astype(np.uint8)).save(mask_path)
    overlay_path = os.path.join(self.output_dir, f'{stem}_overlay.png')
    Image.fromarray(overlay(example.display, mask)).save(overlay_path)
    fractions = np.bincount(mask.ravel(), minlength=len(self.class_names)
                            ) / mask.size
    shares = '  '.join(f'{c} {f:.1%}' for c, f in zip(self.class_names, fractions))
    return [f'{head or "mask"}  {mask_path}  {shares}'], {
        'mask': mask_path, 'overlay': overlay_path,
        'class_fractions': {c: float(f) for c, f in zip(self.class_names,
                                                        fractions)}}


def overlay(pixels: np.ndarray, mask: np.ndarray, alpha: float = 0.45
            ) -> np.ndarray:
  """Image [h, w, c] uint8 with mask [h, w] colours blended in -> [h, w, 3] uint8."""
  from aisci.report import plots  # pylint: disable=g-import-not-at-top
  image = plots.to_display(pixels[None])[0]
  blended = (1 - alpha) * image + alpha * plots.colorize(mask[None])[0]
  return np.round(np.clip(blended, 0, 1) * 255).astype(np.uint8)
