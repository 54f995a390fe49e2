"""Compression of the CIFAR-10 runs: pruning x precision vs accuracy vs size.

    python experiments/compression.py            # all rows; writes the table
    python experiments/compression.py --models=vit --sparsities=0.9

For each trained run (runs/H: ViT tiny, runs/R: ResNet-18 tiny; read only,
never written), and each sparsity:
  1. one-shot: the run's weights magnitude-pruned (aisci/train/prune.py),
     no fine-tuning, evaluated with JAX on the 10,000 test images;
  2. fine-tuned: `python -m aisci.main` from the run (config.init.path) with
     config.prune.sparsity, --steps steps (each command is printed and kept
     in the table's notes; a finished workdir is reused, not retrained);
  3. exported to TFLite float32, int8 (full integer, calibrated on 200
     training images) and dynamic-range int8 (int8 weights), each run on the
     10,000 test images: accuracy, top-1 agreement with its JAX model, file
     size and gzip -9 size (zeros compress: the sparse model's real size).
Sparsity 0 has two rows: the run as trained, and the run fine-tuned the same
number of steps without pruning (the control for the extra training).

The table and the commands go between the markers of
experiments/compression.md (--markdown), so rerunning this command
reproduces the file's table. Everything is deterministic on a given machine
(same device count: main.py splits the CPU into 8 devices).
"""

import argparse
import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not experiments/ itself on the path: this file would shadow the
# `compression` package that jax imports (zstd).
sys.path[0] = REPO

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from aisci import export  # pylint: disable=g-import-not-at-top
from aisci import export_check
from aisci import inference
from aisci.train import prune

DATASET = 'imagefolder:.cache/data/cifar10-jpeg'
# name -> (trained run, config, fine-tuning overrides). Learning rates: half
# of each recipe's peak, warm-up 10% of the steps, cosine to 1% (for the ViT
# at 90%, 2e-4 recovered 47.6% in 300 steps, 1e-3 57.7%).
MODELS = {
    'vit': ('runs/H', 'configs/vit_cifar.py:tiny',
            {'optimizer.learning_rate': 1e-3}),
    'resnet': ('runs/R', 'configs/resnet_cifar.py:tiny',
               {'optimizer.learning_rate': 0.05}),
}
FORMATS = ('tflite', 'tflite_int8', 'tflite_dynamic')
BEGIN, END = '<!-- compression.py: begin -->', '<!-- compression.py: end -->'


def finetune_command(model: str, sparsity: float, steps: int, workdir: str
                     ) -> list[str]:
  run, config, overrides = MODELS[model]
  flags = {'dataset': DATASET, 'init.path': run, 'prune.sparsity': sparsity,
           'total_steps': steps, 'schedule.warmup_steps': steps // 10,
           'schedule.end_learning_rate_factor': 0.01,
           'log_every_steps': 50, 'eval_every_steps': 100 * steps,
           'checkpoint_every_steps': steps, **overrides}
  return ([sys.executable, '-m', 'aisci.main', f'--config={config}',
           f'--workdir={workdir}']
          + [f'--config.{k}={v}' for k, v in flags.items()])


def copy_run(run: str, target: str) -> None:
  """The run's config, data info and newest checkpoint (read-only source)."""
  if os.path.exists(os.path.join(target, 'eval_report.json')):
    return
  os.makedirs(os.path.join(target, 'checkpoints'), exist_ok=True)
  for name in ('config.json', 'dataset_info.json', 'eval_report.json'):
    shutil.copy(os.path.join(run, name), target)
  steps = sorted(int(s) for s in os.listdir(os.path.join(run, 'checkpoints'))
                 if s.isdigit())
  shutil.copytree(os.path.join(run, 'checkpoints', str(steps[-1])),
                  os.path.join(target, 'checkpoints', str(steps[-1])),
                  dirs_exist_ok=True)


def gzip_size(path: str) -> int:
  with open(path, 'rb') as f:
    return len(gzip.compress(f.read(), compresslevel=9, mtime=0))


def zero_fraction(params, include_all: bool) -> float:
  if include_all:
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    return sum(int((x == 0).sum()) for x in leaves) / sum(x.size for x in leaves)
  return prune.sparsity_of(params)


def measure(workdir: str, images: np.ndarray, labels: np.ndarray,
            calibration_count: int) -> dict:
  """JAX and TFLite accuracies, agreements and sizes of one workdir."""
  trained = inference.load_trained(workdir)
  calibration = export.calibration_images(trained, calibration_count)
  artefacts = {}
  for fmt in FORMATS:
    start = time.perf_counter()
    artefacts[fmt] = export.export(trained, fmt,
                                   os.path.join(workdir, 'export'),
                                   calibration=calibration)
    print(f'  exported {fmt} in {time.perf_counter() - start:.0f} s',
          flush=True)
  rows = export_check.check_all(trained, artefacts, images, labels,
                                log=lambda line: print('  ' + line, flush=True))
  result = dict(
      step=trained.step,
      sparsity=zero_fraction(trained.variables['params'], False),
      zeros_all=zero_fraction(trained.variables['params'], True))
  for row in rows:
    result[row['format']] = dict(
        accuracy=row['accuracy'], agreement=row['top1_agreement'],
        max_abs_diff=row['max_abs_diff'])
    if row['format'] != 'jax':
      result[row['format']].update(size=row['size'],
                                   gzip=gzip_size(artefacts[row['format']]))
  return result


def one_shot_accuracy(run_dir: str, sparsity: float, images: np.ndarray,
                      labels: np.ndarray) -> float:
  trained = inference.load_trained(run_dir)
  params = trained.variables['params']
  mask = prune.magnitude_mask(params, sparsity)
  pruned = jax.tree.map(lambda p, m: np.where(m, p, 0), params, mask)
  variables = dict(trained.variables, params=pruned)
  trained = inference.Trained(**{**vars(trained), 'variables': variables})
  logits = inference.predict_logits(trained, images, batch_size=500)
  return float(np.mean(logits.argmax(-1) == labels))


def kb(n: int) -> str:
  return f'{n / 1e3:,.0f}'


def table(results: list[dict]) -> str:
  lines = [
      '| model | sparsity | fine-tuning | one-shot top-1 | JAX top-1 | '
      'TFLite fp32 top-1 | int8 top-1 (agree) | dyn-int8 top-1 (agree) | '
      'fp32 kB (gzip) | int8 kB (gzip) | dyn-int8 kB (gzip) |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results:
    m = r['measured']
    cell = lambda f: f'{m[f]["accuracy"]:.2%} ({m[f]["agreement"]:.2%})'
    size = lambda f: f'{kb(m[f]["size"])} ({kb(m[f]["gzip"])})'
    one_shot = (f'{r["one_shot"]:.2%}' if r.get('one_shot') is not None
                else '-')
    lines.append(
        f'| {r["model"]} | {m["sparsity"]:.0%} | {r["finetune"]} | '
        f'{one_shot} | {m["jax"]["accuracy"]:.2%} | '
        f'{m["tflite"]["accuracy"]:.2%} | {cell("tflite_int8")} | '
        f'{cell("tflite_dynamic")} | {size("tflite")} | '
        f'{size("tflite_int8")} | {size("tflite_dynamic")} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='vit,resnet')
  parser.add_argument('--sparsities', default='0.5,0.8,0.9')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--out', default='runs/compress')
  parser.add_argument('--calibration_images', type=int, default=200)
  parser.add_argument('--markdown', default='experiments/compression.md',
                      help="Table goes between this file's markers; '' to "
                      'only print it.')
  args = parser.parse_args()
  os.chdir(REPO)
  sparsities = [float(s) for s in args.sparsities.split(',')]
  # The whole test split, in file order, preprocessed as in training.
  reference = inference.load_trained(MODELS['vit'][0])
  images, labels = export.dataset_images(reference, 'test', 10_000)
  print(f'{len(images)} test images', flush=True)
  results, commands = [], []
  for model in args.models.split(','):
    run = MODELS[model][0]
    trained_copy = os.path.join(args.out, f'{model}_trained')
    copy_run(run, trained_copy)
    print(f'{model}: the trained run {run}', flush=True)
    results.append(dict(model=model, finetune='none (as trained)',
                        measured=measure(trained_copy, images, labels,
                                         args.calibration_images)))
    for sparsity in [0.0] + sparsities:
      workdir = os.path.join(args.out, f'{model}_s{round(sparsity * 100)}')
      command = finetune_command(model, sparsity, args.steps, workdir)
      shown = ' '.join(shlex.quote(c) for c in ['python'] + command[1:])
      commands.append(shown)
      if not os.path.exists(os.path.join(workdir, 'eval_report.json')):
        print(f'{model}: {shown}', flush=True)
        start = time.perf_counter()
        with open(workdir + '.log', 'w') as log:
          subprocess.run(command, cwd=REPO, check=True, stdout=log,
                         stderr=subprocess.STDOUT)
        print(f'  trained in {time.perf_counter() - start:.0f} s', flush=True)
      one_shot = (one_shot_accuracy(trained_copy, sparsity, images, labels)
                  if sparsity else None)
      results.append(dict(
          model=model, finetune=f'{args.steps} steps', one_shot=one_shot,
          measured=measure(workdir, images, labels, args.calibration_images)))
      print(table(results[-1:]), flush=True)
  text = table(results)
  print(text)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  if args.markdown:
    with open(args.markdown, encoding='utf-8') as f:
      page = f.read()
    if BEGIN not in page or END not in page:
      sys.exit(f'{args.markdown} lacks the markers {BEGIN} ... {END}.')
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    generated = '\n'.join(
        [BEGIN, '', text, '', 'Fine-tuning commands (run by the script):', '',
         '```bash'] + commands + ['```', '', END])
    with open(args.markdown, 'w', encoding='utf-8') as f:
      f.write(head + generated + tail)
    print(f'Wrote the table into {args.markdown}')


if __name__ == '__main__':
  main()
