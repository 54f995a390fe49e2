"""Test accuracy of a trained FastCNN or ViT run with each test-time
augmentation.

    python -m experiments.eval_tta runs/fast_cpu_whiten14 \
        .cache/data/cifar10-jpeg/test

Evaluates the run's latest parameters on an image folder (one subfolder per
class, in the order of the run's class names) with flip TTA alone and with
flip + translate TTA (`tta_translate`, aisci/models/tta.py), on one device.
"""

import os
import sys
import time

import jax
import numpy as np

from aisci import inference


def main(workdir: str, folder: str) -> None:
  trained = inference.load_trained(workdir, checkpoint='latest')
  files, labels = [], []
  for label, name in enumerate(sorted(os.listdir(folder))):
    names = sorted(os.listdir(os.path.join(folder, name)))
    files += [os.path.join(folder, name, f) for f in names]
    labels += [label] * len(names)
  labels = np.asarray(labels)
  images = np.concatenate([trained.preprocess(files[i:i + 1000])
                           for i in range(0, len(files), 1000)])
  for translate in (False, True):
    model = trained.model.clone(tta_flip=True, tta_translate=translate)
    apply = jax.jit(lambda variables, x, model=model: model.apply(
        variables, x, train=False))
    start = time.perf_counter()
    predictions = np.concatenate([
        np.argmax(apply(trained.variables, images[i:i + 500]), axis=-1)
        for i in range(0, len(images), 500)])
    print(f'flip{" + translate" if translate else ""} TTA: accuracy '
          f'{np.mean(predictions == labels):.4f} on {len(labels)} images '
          f'({time.perf_counter() - start:.1f} s)')


if __name__ == '__main__':
  main(*sys.argv[1:])
