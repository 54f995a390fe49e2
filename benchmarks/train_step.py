"""Train-step throughput: aisci's jitted train_step vs PyTorch eager.

  python -m benchmarks.train_step                     # all models, as aisci.main runs them
  python -m benchmarks.train_step --devices=1,2,8     # ... on 1, 2 and 8 CPU devices
  python -m benchmarks.train_step --models=vit_ti4 --repeats=20
  python -m benchmarks.train_step --models=vit_ti4 --devices=2,8 --grad_accum_steps=1,4

aisci runs its real step (aisci/train/steps.py with optimizer.py's optax
chain, the config's task loss, donated state, batch sharded over a mesh of
all CPU devices, exactly as aisci/train/loop.py jits it); PyTorch runs the
equivalent eager model (benchmarks/torch_models.py; torch_cifar.py for the
fast CNN) with the same batch,
optimizer (AdamW with clipping / SGD Nesterov, weight decay on kernels
only), label-smoothed cross-entropy, float32, channels_last for the CNN and
as many threads as the machine has CPUs. aisci runs with the memory
allocator `python -m aisci.main` restarts with (aisci/allocator.py:
tcmalloc or jemalloc where installed, else glibc malloc on huge pages);
PyTorch runs with and without it, and the faster counts. Each measurement runs in a fresh
process; images/s is batch / median step time over `--repeats` steps after
`--warmup` steps, each step waited for (block_until_ready); each side is
measured `--rounds` times, alternating, and its best counts. aisci's lines
also give the temporaries one device allocates per step and the system CPU
time per step, most of it the kernel zeroing those fresh pages
(benchmarks/README.md, "Fresh memory every step").
"""

import os
import resource
import statistics

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import models as bench_models

_MODELS = flags.DEFINE_list(
    'models', ['vit_ti4', 'vit_tiny', 'resnet18', 'resnet18_tiny'],
    f'Any of {list(bench_models.MODELS)} (of the fastcnn*, only '
    'fastcnn_airbench and fastcnn_airbench_valid have a PyTorch twin: '
    "airbench's network, benchmarks/torch_models.py).")
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_DEVICES = flags.DEFINE_list(
    'devices', ['config'], "CPU device counts to run aisci with; 'config': "
    "each model's config.cpu_devices, as python -m aisci.main runs it.")
_ACCUM = flags.DEFINE_list(
    'grad_accum_steps', ['1'], 'aisci micro-batch counts to run with '
    '(config.grad_accum_steps, aisci/train/grad_accum.py): k > 1 gives the '
    "same update as one batch for models without BatchNorm, holding a k-times "
    'smaller activation memory, which XLA:CPU allocates afresh every step.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Timed steps (median taken).')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 2, 'Measure each side this many times, aisci and PyTorch '
    'alternating, and keep the best of each: other load on a shared machine '
    'only ever slows a measurement down, and one side alone may catch it.')
_TORCH = flags.DEFINE_bool('torch', True, 'Measure the PyTorch reference.')
_HUGE_PAGES = flags.DEFINE_bool(
    'huge_pages', True, 'Run aisci with the allocator aisci.main restarts '
    'with (aisci/allocator.py: a preloaded tcmalloc or jemalloc where '
    'installed, else glibc malloc on transparent huge pages), and PyTorch '
    'both with and without, keeping its faster; --nohuge_pages: neither.')
# Internal: what a worker process measures.
_WORKER = flags.DEFINE_enum('worker', None, ['jax', 'torch'],
                            'Internal: measure one thing and emit it.')
_MODEL = flags.DEFINE_string('model', None, 'Internal: the worker\'s model.')
_NUM_DEVICES = flags.DEFINE_integer('num_devices', 1, 'Internal: CPU devices.')
_WORKER_ACCUM = flags.DEFINE_integer('accum', 1, 'Internal: the worker\'s '
                                     'config.grad_accum_steps.')
_CONV = flags.DEFINE_enum(
    'conv', 'auto', ['auto', 'patches', 'xla'], "Internal: aisci/models/"
    "conv.py as it is ('auto'), without Winograd ('patches'), or with "
    "neither Winograd nor the patch weight gradient ('xla'); "
    'benchmarks/conv_grad.py compares them.')


def jax_worker(name: str, num_devices: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from aisci.models import conv  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', num_devices)
  conv.PATCH_WEIGHT_GRAD_ON_CPU = _CONV.value != 'xla'
  conv.WINOGRAD_ON_CPU = _CONV.value == 'auto'
  compiled, compile_s, step, holder = bench_models.step_runner(
      *bench_models.aisci_train_step(name, _BATCH.value, _WORKER_ACCUM.value))

  for _ in range(_WARMUP.value):
    step()
  before = resource.getrusage(resource.RUSAGE_SELF)
  median, times, cpu = common.median_seconds(step, warmup=0,
                                             repeats=_REPEATS.value)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return dict(median_s=median, times=times, cpu=cpu, compile_s=compile_s,
              # Per timed step: page faults and kernel CPU time (huge_pages.py).
              minor_faults=(after.ru_minflt - before.ru_minflt) / _REPEATS.value,
              system_s=(after.ru_stime - before.ru_stime) / _REPEATS.value,
              devices=len(jax.devices()),
              temp_mb=_temp_mb(compiled),
              params=sum(x.size for x in jax.tree.leaves(holder[0].params)))


def _temp_mb(compiled) -> float:
  """MB of temporaries one device's step allocates (and frees) per execution."""
  analysis = compiled.memory_analysis()
  return analysis.temp_size_in_bytes / 1e6 if analysis else float('nan')


def torch_worker(name: str) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  config = bench_models.config_for(name, _BATCH.value)
  model, x, y = bench_models.torch_model_and_batch(config)
  threads = torch.get_num_threads()
  opt_config = config.optimizer
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  groups = torch_models.decayed_groups(model, opt_config.weight_decay)
  if opt_config.name == 'adamw':
    opt = torch.optim.AdamW(groups, lr=opt_config.learning_rate,
                            betas=(opt_config.b1, opt_config.b2))
  elif opt_config.name == 'sgd':
    opt = torch.optim.SGD(groups, lr=opt_config.learning_rate,
                          momentum=opt_config.momentum,
                          nesterov=opt_config.nesterov)
  else:  # has_torch_twin() leaves such models without a PyTorch side
    raise ValueError(f'No PyTorch twin of optimizer {opt_config.name!r}.')
  loss_fn = torch.nn.CrossEntropyLoss(
      label_smoothing=config.task.label_smoothing)
  model.train()

  # config.dtype='bfloat16': PyTorch's mixed precision, as aisci's (bf16
  # matrix products and convolutions, float32 parameters and loss).
  autocast = torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=config.dtype == 'bfloat16')

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      logits = model(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    if opt_config.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), opt_config.grad_clip_norm)
    opt.step()

  median, times, cpu = common.median_seconds(step, warmup=_WARMUP.value,
                                             repeats=_REPEATS.value)
  return dict(median_s=median, times=times, cpu=cpu, threads=threads,
              params=sum(p.numel() for p in model.parameters()),
              version=torch.__version__)


def _steps(result: dict) -> str:
  return (f'step wall s median {result["median_s"]:.3f} min '
          f'{min(result["times"]):.3f} max {max(result["times"]):.3f}, CPU s '
          f'median {statistics.median(result["cpu"]):.3f}')


def main(argv):
  del argv
  if _WORKER.value == 'jax':
    common.emit(jax_worker(_MODEL.value, _NUM_DEVICES.value))
    return
  if _WORKER.value == 'torch':
    common.emit(torch_worker(_MODEL.value))
    return

  common.header(f'train step, batch {_BATCH.value}, float32 (bf16 where named), median of '
                f'{_REPEATS.value} steps after {_WARMUP.value} warm-up steps, '
                f'best of {_ROUNDS.value} rounds per side')
  huge_env = common.main_env(_HUGE_PAGES.value)
  print(f'# XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; aisci runs with '
        f'{huge_env or "default malloc"}', flush=True)
  passed = [f'--batch_size={_BATCH.value}', f'--warmup={_WARMUP.value}',
            f'--repeats={_REPEATS.value}']
  # (devices, micro-batches) settings aisci runs with, and their names.
  settings = [(d if d == 'config' else int(d), int(k))
              for d in _DEVICES.value for k in _ACCUM.value]
  label = {s: ('config.cpu_devices' if s[0] == 'config' else f'{s[0]} dev')
           + (f' k={s[1]}' if s[1] > 1 else '') for s in settings}
  headers = (['model', 'params']
             + [f'aisci {label[s]} img/s' for s in settings]
             + (['PyTorch img/s'] + [f'ratio {label[s]}' for s in settings]
                if _TORCH.value else []) + ['load'])
  rows = []
  for name in _MODELS.value:
    bench_models.config_for(name, _BATCH.value)  # fail fast on a bad name
    twin = _TORCH.value and bench_models.has_torch_twin(name)
    # PyTorch as it is usually run, and with aisci's malloc setting (which
    # helps some of its models): the faster is the reference.
    torch_envs = {'default malloc': {}}
    if huge_env:
      torch_envs[os.path.basename(huge_env['LD_PRELOAD'].split()[0])
                 if 'LD_PRELOAD' in huge_env else 'huge pages'] = huge_env
    aisci_rates = {s: 0.0 for s in settings}
    torch_rate, params = 0.0, ''
    config_devices = bench_models.cpu_devices(name)
    for _ in range(_ROUNDS.value):
      for d, k in settings:
        devices = config_devices if d == 'config' else d
        result = common.run_worker('benchmarks.train_step', [
            '--worker=jax', f'--model={name}', f'--num_devices={devices}',
            f'--accum={k}', *passed], env=huge_env)
        rate = _BATCH.value / result['median_s']
        aisci_rates[d, k] = max(aisci_rates[d, k], rate)
        params = f'{result["params"]:,}'
        print(f'#   {name} aisci {devices} dev'
              + (f' k={k}' if k > 1 else '') + f': {rate:.1f} img/s, compile '
              f'{result["compile_s"]:.1f} s, {_steps(result)}, temporaries '
              f'{result["temp_mb"]:.0f} MB/device, system CPU '
              f'{result["system_s"]:.3f} s/step, load {common.load()}',
              flush=True)
      for setting, env in (torch_envs.items() if twin else ()):
        result = common.run_worker('benchmarks.train_step', [
            '--worker=torch', f'--model={name}', *passed], env=env)
        rate = _BATCH.value / result['median_s']
        torch_rate = max(torch_rate, rate)
        print(f'#   {name} PyTorch {result["version"]} ({result["threads"]} '
              f'threads, {setting}): {rate:.1f} img/s, params '
              f'{result["params"]:,}, {_steps(result)}, load {common.load()}',
              flush=True)
    row = [bench_models.MODELS[name][2]
           + (f' [{config_devices} dev]'
              if any(d == 'config' for d, _ in settings) else ''), params]
    row += [f'{aisci_rates[s]:.1f}' for s in settings]
    if twin:
      row.append(f'{torch_rate:.1f}')
      row += [f'{aisci_rates[s] / torch_rate:.2f}' for s in settings]
    elif _TORCH.value:
      row += ['-'] * (1 + len(settings))
    row.append(common.load().split()[0])
    rows.append(row)
  print()
  print(common.table(headers, rows))


if __name__ == '__main__':
  app.run(main)
