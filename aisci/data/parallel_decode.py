"""Decoding many image files in one process per core (config.input.cache).

A CIFAR-sized JPEG decodes in ~0.2 ms, most of it Python, so threads only
take turns holding the GIL (2 threads: 5.4 s for 20,000 CIFAR images where
one thread took 3.2 s); processes scale with the cores. Each worker is a
fresh `python -m aisci.data.parallel_decode JOB`, not a multiprocessing
child: those re-run the caller's main script, which breaks every script and
notebook without an `if __name__ == '__main__'` guard. Workers write their
images into a temporary folder; failures come back as messages, in order.
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np

# Fewer images decode in the calling process: a worker starts an
# interpreter and imports numpy, PIL and imagefolder (0.1-0.2 s) first.
MIN_IMAGES = 8192
_IMAGES_PER_WORKER = 1000  # at least, where there are fewer than cores


def workers_for(num_images: int) -> int:
  """Processes to decode `num_images` in: 1 (the caller) below MIN_IMAGES,
  else up to one per core."""
  if num_images < MIN_IMAGES:
    return 1
  return min(os.cpu_count() or 1,
             max(2, num_images // _IMAGES_PER_WORKER))


def decode(paths: Sequence[str], image_size: int,
           workers: Optional[int] = None) -> list[tuple[bool, object]]:
  """(True, image [image_size, image_size, 3] uint8) or (False, ValueError)
  for each path, in order, as aisci/data/imagefolder.py's load_image gives
  them; in `workers` processes (default: one per core), each decoding a
  contiguous share."""
  workers = max(1, min(workers or os.cpu_count() or 1, len(paths)))
  shares = np.array_split(np.arange(len(paths)), workers)
  # The caller's import path, so that workers import this same aisci.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p or os.getcwd() for p in sys.path))
  with tempfile.TemporaryDirectory(prefix='aisci_decode_') as folder:
    processes = []
    for i, share in enumerate(shares):
      job = os.path.join(folder, f'{i}.json')
      with open(job, 'w', encoding='utf-8') as f:
        json.dump(dict(paths=[paths[j] for j in share], image_size=image_size,
                       out=os.path.join(folder, f'{i}.npz')), f)
      processes.append(subprocess.Popen(
          [sys.executable, '-m', 'aisci.data.parallel_decode', job], env=env,
          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errors = [p.communicate()[1] for p in processes]
    for process, error in zip(processes, errors):
      if process.returncode:
        raise RuntimeError(
            f'A decoding process failed (exit {process.returncode}): '
            f'{error.decode(errors="replace")[-2000:]}')
    outcomes = []
    for i in range(len(shares)):
      with np.load(os.path.join(folder, f'{i}.npz'),
                   allow_pickle=False) as result:
        images, ok = iter(result['images']), result['ok']
        messages = iter(json.loads(str(result['messages'])))
        outcomes += [(True, next(images)) if good else
                     (False, ValueError(next(messages))) for good in ok]
  return outcomes


def _work(job: str) -> None:
  """In a worker: decodes the job's paths; writes images, flags, messages."""
  from aisci.data import imagefolder  # pylint: disable=g-import-not-at-top
  with open(job, encoding='utf-8') as f:
    spec = json.load(f)
  size = spec['image_size']
  outcomes = [imagefolder._outcome(  # pylint: disable=protected-access
      lambda p: imagefolder.load_image(p, size), path)
              for path in spec['paths']]
  images = [value for ok, value in outcomes if ok]
  messages = [str(value) for ok, value in outcomes if not ok]
  ok = [ok for ok, _ in outcomes]
  np.savez(spec['out'], ok=np.asarray(ok, bool),
           images=(np.stack(images) if images
                   else np.zeros((0, size, size, 3), np.uint8)),
           messages=json.dumps(messages))


if __name__ == '__main__':
  _work(sys.argv[1])
