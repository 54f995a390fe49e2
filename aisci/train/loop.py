"""train_and_evaluate(config, workdir): the one place that ties data, model,
task, optimizer, checkpoints and reports together.

Read top to bottom: mesh, data, model and optimizer, state (restored or
fresh), jitted steps, the training loop, the final evaluation report.
"""

import contextlib
import functools
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from aisci import data
from aisci import gc_pause
from aisci import models
from aisci import report as report_lib
from aisci import tasks
from aisci.data import augment as augment_lib
from aisci.data import pipeline
from aisci.data import preprocess as preprocess_lib
from aisci.train import background_compile
from aisci.train import best as best_lib
from aisci.train import checkpoint as checkpoint_lib
from aisci.train import compute_dtype
from aisci.train import device_input
from aisci.train import distributed
from aisci.train import flops
from aisci.train import init_from
from aisci.train import metrics_log
from aisci.train import nonfinite
from aisci.train import optimizer as optimizer_lib
from aisci.train import preemption
from aisci.train import progress as progress_lib
from aisci.train import prune as prune_lib
from aisci.train import sharding as sharding_lib
from aisci.train import step_memory
from aisci.train import step_profile
from aisci.train import steps
from aisci.train import whiten
from aisci.train import workdir_config

# Steps Python may dispatch ahead of the devices. Enough to keep them busy;
# few enough that XLA:CPU never queues ~32 programs on a device, where with
# the CPU split into devices (aisci.main's default 8) the launch of the next
# step blocks on XLA's per-device in-flight limit while holding one of the
# threads the queued step's all-reduce needs: the run hangs until XLA
# aborts it 20 minutes later (tests/train/test_run_ahead.py).
MAX_STEPS_AHEAD = 4


# A run's end that waits longer than this on one of its closing steps says so.
_SLOW_END_S = 5.0


def _timed(what: str, fn: Callable[[], Any]) -> Any:
  """fn(), logging how long it took when that was over _SLOW_END_S: some
  runs were seen to wait 20-45 s at their end, and the line names where.
  One cause, found 2026-12-05, lay before these steps: deleting the
  finished evaluation iterator (pipeline.read_once)."""
  start = time.monotonic()
  result = fn()
  seconds = time.monotonic() - start
  if seconds > _SLOW_END_S:
    logging.info('%s took %.0f s.', what, seconds)
  return result


def _write_json(path: str, value: Any) -> None:
  if jax.process_index() == 0:
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(value, f, indent=2)


def _check_finite(fetched_metrics: list[dict[str, Any]], done: int,
                  checkpointer: checkpoint_lib.Checkpointer) -> None:
  """Stops the run at the first non-finite loss or gradient norm."""
  first_step = done - len(fetched_metrics) + 1
  for offset, metrics in enumerate(fetched_metrics):
    values = [float(metrics[k]) for k in ('loss', 'grad_norm')]
    if all(map(math.isfinite, values)):
      continue
    last = checkpointer.latest_step()
    raise FloatingPointError(
        f'Non-finite training loss {values[0]} / gradient norm {values[1]} at '
        f'step {first_step + offset}. Nothing after it was saved; '
        + (f'the last good checkpoint is step {last} in '
           f'{checkpointer.directory}, and rerunning resumes from it. '
           if last is not None else 'no checkpoint was written yet. ')
        + 'Usual fixes: lower config.optimizer.learning_rate, lengthen '
        'config.schedule.warmup_steps, set config.optimizer.grad_clip_norm '
        '(resuming with a changed config needs --allow_config_change), '
        'check the input data for NaN/Inf values, or set '
        'config.optimizer.skip_nonfinite_updates=True to skip such steps.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: Optional[int] = None,
                       allow_config_change: bool = False
                       ) -> Optional[dict[str, float]]:
  """Trains (or resumes) to config.total_steps; returns final eval metrics.

  stop_at_step: leave the run after this step's checkpoint, as a job that
    is cut off there would (no final evaluation; returns None). Rerunning
    with the same workdir continues it.
  allow_config_change: resume even if the config differs from the one the
    workdir was started with in fields that change what is trained
    (workdir_config.py); otherwise that raises ConfigChangedError.
  Raises preemption.Preempted after saving, on SIGTERM or SIGINT.
  """
  os.makedirs(workdir, exist_ok=True)
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0:
      stack.enter_context(preemption.workdir_lock(workdir))
    workdir_config.check(config.to_dict(), workdir,
                         allow_change=allow_config_change,
                         write_record=jax.process_index() == 0)
    stop_request = stack.enter_context(preemption.StopRequest())
    return _train_and_evaluate(config, workdir, stop_at_step, stop_request)


def _train_and_evaluate(config, workdir, stop_at_step, stop_request):
  process_index, process_count = jax.process_index(), jax.process_count()
  # Before the data are read (minutes for a large folder), so that a typo in
  # a name or field fails fast.
  dtype = compute_dtype.parse(config.dtype)
  compute_dtype.warn_if_slow(dtype, jax.default_backend())
  models.check_config(config.model)
  tasks.check_config(config.task)

  # ------------------------------------------------------------------ mesh --
  mesh = sharding_lib.make_mesh(config.mesh)
  sharding_lib.check_batch_size(config.input.batch_size, mesh,
                                'config.input.batch_size',
                                micro_batches=config.get('grad_accum_steps', 1))
  sharding_lib.check_batch_size(config.input.eval_batch_size, mesh,
                                'config.input.eval_batch_size')
  batch_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)
  local_batch_size = config.input.batch_size // process_count
  logging.info('Mesh %s over %d devices, %d process(es).', dict(mesh.shape),
               mesh.size, process_count)
  tx, schedule = optimizer_lib.make_optimizer(config, mesh)  # before data too
  checkpointer = checkpoint_lib.Checkpointer(
      workdir, every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  latest = checkpointer.latest_step()
  if latest is None and config.init.path:  # its weights are read after init
    init_from.check(config.init)

  # ------------------------------------------------------------------ data --
  source_kwargs = dict(options=config.input, workdir=workdir,
                       data_dir=config.data_dir or None)
  # Every process can read the whole training split and takes its rows of
  # each global batch (pipeline.py): the data order is the same whatever the
  # number of processes. Evaluation reads a share per process.
  train_source = data.make_source(config.dataset, config.train_split,
                                  **source_kwargs)
  class_names = list(train_source.class_names)
  eval_source = data.make_source(config.dataset, config.eval_split,
                                 class_names=class_names,
                                 process_index=process_index,
                                 process_count=process_count, **source_kwargs)
  logging.info('Train: %s. Eval: %s. %d classes.', train_source.description,
               eval_source.description, len(class_names))
  train_preprocess, eval_preprocess = preprocess_lib.make_preprocess(
      config.input, train_source)
  alternating_flip = config.input.get('alternating_flip', False)  # configs without it
  if alternating_flip:
    augment_lib.check_alternating_flip(config.input.augment, train_source.kind)
  on_device = config.input.get('on_device', False)  # configs without it
  eval_batch_size = sharding_lib.fitted_eval_batch_size(
      config.input.eval_batch_size, eval_source.total_examples, mesh)
  if eval_batch_size < config.input.eval_batch_size:
    logging.info('Evaluating the %d examples of %s in one batch of %d '
                 '(config.input.eval_batch_size=%d, fewer padding rows).',
                 eval_source.total_examples, config.eval_split,
                 eval_batch_size, config.input.eval_batch_size)
  local_eval_batch_size = eval_batch_size // process_count
  if on_device:
    # No tf.data (nor TensorFlow) in such a run: the evaluation split's
    # decoded images are batched on the host.
    device_input.check(config.input, train_source)
    device_input.check(config.input, eval_source)
    eval_batches = functools.partial(
        device_input.eval_batches, eval_source, config.input,
        local_batch_size=local_eval_batch_size, process_count=process_count)
    num_eval_batches = pipeline.eval_steps(
        eval_source, local_eval_batch_size, process_count)
    # [h, w, c] uint8 images, normalised to float32.
    example_input = jnp.zeros(
        (1,) + eval_source.load_arrays()['image'].shape[1:], jnp.float32)
  else:
    eval_dataset = pipeline.eval_dataset(
        eval_source, local_batch_size=local_eval_batch_size,
        process_count=process_count, preprocess=eval_preprocess)
    eval_batches = eval_dataset.as_numpy_iterator
    num_eval_batches = int(eval_dataset.cardinality())
    input_spec = eval_dataset.element_spec[train_source.input_key]
    example_input = jnp.zeros((1,) + tuple(input_spec.shape[1:]),
                              input_spec.dtype.as_numpy_dtype)
  input_key = train_source.input_key

  # ---------------------------------------------- model, task, optimizer --
  # What the data decide; a source may set num_classes itself (the width
  # of regression targets).
  model_kwargs = {'num_classes': len(class_names), **train_source.model_kwargs}
  model = models.build_model(config.model, dtype=dtype,
                             **model_kwargs)
  task = tasks.build_task(config.task, num_classes=len(class_names))
  # The model is initialised on one example shaped as the data says.
  init_fn = functools.partial(steps.init_state, model=model, tx=tx,
                              example_input=example_input)
  rng = jax.random.PRNGKey(config.seed)
  abstract_state = jax.eval_shape(init_fn, rng)
  state_sharding = sharding_lib.state_sharding(abstract_state, mesh)
  sharding_lib.log_sharding_table(sharding_lib.sharding_table(
      abstract_state, state_sharding, mesh), workdir)
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  logging.info('Model %s: %s parameters.', config.model.name, f'{num_params:,}')

  # ----------------------------------------------------------------- state --
  abstract_state = checkpoint_lib.abstract_with_sharding(abstract_state,
                                                         state_sharding)
  if latest is not None:
    state = checkpointer.restore(latest, abstract_state)
    logging.info('Resuming from step %d (checkpoint in %s).', latest,
                 checkpointer.directory)
    start_step = int(state.step)
  else:
    # Compiled on a worker thread while the train step is traced and
    # compiled below (background_compile.py); run after that.
    init_compiled = background_compile.start(
        jax.jit(init_fn, out_shardings=state_sharding), rng,
        compiler_options=steps.init_compiler_options(jax.default_backend()))
    start_step = 0
  _write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  # What prediction and export need to know about the data, without it.
  dataset_info = dict(
      dataset=config.dataset, kind=train_source.kind, input_key=input_key,
      class_names=class_names, train_examples=train_source.total_examples,
      eval_examples=eval_source.total_examples, model_kwargs=model_kwargs,
      **train_source.info)
  if 'mean' in config.input:
    dataset_info.update(mean=list(config.input.mean), std=list(config.input.std))
    dataset_info.setdefault('image_size', config.input.image_size)
  _write_json(os.path.join(workdir, 'dataset_info.json'), dataset_info)

  # ----------------------------------------------------------------- steps --
  train_fn = functools.partial(steps.train_step, model=model, task=task,
                               tx=tx, schedule=schedule, input_key=input_key,
                               grad_accum_steps=config.get('grad_accum_steps', 1))
  if config.optimizer.get('skip_nonfinite_updates', False):
    train_fn = nonfinite.guard(train_fn)
  train_step = jax.jit(
      train_fn, in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  eval_step = jax.jit(
      functools.partial(steps.eval_step, model=model, task=task,
                        input_key=input_key),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(replicated, batch_sharding))

  def evaluate(state, examples=None):
    """(scalars, report) of the task on the evaluation split; `examples`
    (an ExampleCollector) also receives this process's rows and outputs."""
    # One evaluation step in flight at a time. Eval steps do not depend on
    # each other, and XLA:CPU can deadlock when several such multi-device
    # programs with collectives are queued at once: on 2026-12-02 a fast-CNN
    # run on 8 CPU devices hung at its first evaluation, 7 devices waiting
    # in an all-reduce for the 8th, whose launch waited behind the next
    # batch's. Waiting costs nothing here (the step is the bottleneck and
    # tf.data prefetches the next batch meanwhile).
    jax.block_until_ready(state)
    sums = None
    for local_batch in progress_lib.track(  # a line every 30 s if long
        eval_batches(), num_eval_batches, 'Evaluating', unit='batches'):
      batch_sums, outputs = eval_step(
          state, sharding_lib.to_global(local_batch, batch_sharding))
      if examples is not None and not examples.full:
        examples.add(local_batch, sharding_lib.to_local(outputs, batch_sharding))
      sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums,
                                                          batch_sums)
      jax.block_until_ready(sums)
    return task.summarize(jax.device_get(sums), class_names)

  # ------------------------------------------------------------------ loop --
  best = best_lib.BestKeeper(
      workdir, metric=config.get('best_metric', ''),
      mode=config.get('best_metric_mode', 'max'),
      patience=config.get('early_stopping_patience', 0), start_step=start_step)
  # A run that stopped early stays stopped when rerun.
  end_step = config.total_steps if best.stopped_step is None else start_step
  writer = metrics_log.create_writer(workdir)
  progress = progress_lib.Progress(config.total_steps, config.input.batch_size,
                                   start_step)
  if on_device:
    train_batches = device_input.train_batches(
        train_source, config.input, batch_sharding=batch_sharding,
        global_batch_size=config.input.batch_size, seed=config.seed,
        start_step=start_step)
    logging.info('Training batches are made on the devices '
                 '(config.input.on_device): %d examples held there.',
                 train_source.total_examples)
  else:
    train_batches = sharding_lib.prefetch_to_mesh(
        pipeline.train_dataset(
            train_source, local_batch_size=local_batch_size,
            process_index=process_index, process_count=process_count,
            seed=config.seed, start_step=start_step,
            preprocess=train_preprocess,
            alternating_flip=alternating_flip).as_numpy_iterator(),
        batch_sharding)
  if start_step < end_step:
    train_step, step_jaxpr, train_batches = distributed.compile_together(
        train_step, abstract_state, train_batches)
    memory_line = step_memory.describe(
        train_step, jax.default_backend(), mesh.size,
        config.get('grad_accum_steps', 1))
    step_flops = flops.matmul_flops(step_jaxpr)
    device_kind = jax.devices()[0].device_kind
    peak = flops.peak_tflops(device_kind, config.get('peak_tflops', 0.0))
    progress.set_flops(step_flops, mesh.size, peak)
    if process_index == 0:
      for line in (memory_line, flops.describe(
          step_flops, config.input.batch_size, device_kind, peak)):
        if line:
          logging.info('%s', line)
  if latest is None:
    state = init_compiled.result()(rng)
    if config.init.path:
      variables = init_from.load(
          config.init, {'params': state.params, **state.model_state})
      params = variables.pop('params')
      state = state.replace(
          params=jax.device_put(params, state_sharding.params),
          model_state=jax.device_put(variables, state_sharding.model_state))
    logging.info('Starting at step 0 from %s (no checkpoint in %s).',
                 config.init.path or 'scratch', checkpointer.directory)
    whiten_layer = config.init.get('whiten_layer', '')  # configs without it
    if whiten_layer and config.init.path:
      logging.info('config.init.whiten_layer=%r: the kernel comes from %s, '
                   'not whitened.', whiten_layer, config.init.path)
    elif whiten_layer:
      # From the first batch (put back), as the model sees it: augmented
      # and normalised.
      first = next(train_batches)
      train_batches = itertools.chain([first], train_batches)
      state = whiten.whiten_state(state, first[input_key], tx, whiten_layer,
                                  config.init.whiten_eps)
      logging.info('Set the kernel of %s to the whitening transform of the '
                   "first batch's patches (config.init.whiten_layer).",
                   whiten_layer)
    state = prune_lib.prune_state(state, tx)  # config.prune; else a no-op
  if start_step < end_step:
    logging.info('Training steps %d..%d, global batch %d (%.1f epochs).',
                 start_step, config.total_steps, config.input.batch_size,
                 config.total_steps / pipeline.steps_per_epoch(
                     train_source, config.input.batch_size))
  stop_agreement = distributed.StopAgreement(mesh)
  frozen = gc_pause.resume()  # start-up is over (aisci/gc_pause.py)
  if frozen:
    logging.info('Garbage collector back on; %d start-up objects frozen.',
                 frozen)
  profiler = step_profile.StepProfiler(
      config.get('profile'), workdir, start_step, end_step,  # configs without it
      hlo_text=lambda: train_step.as_text())
  try:
    pending_metrics = []
    for step in range(start_step, end_step):
      profiler.before_step(step, state)
      state, metrics = train_step(state, next(train_batches))
      profiler.after_step(step + 1, (state, metrics))
      pending_metrics.append(metrics)
      if len(pending_metrics) > MAX_STEPS_AHEAD:
        jax.block_until_ready(pending_metrics[-MAX_STEPS_AHEAD - 1])
      done = step + 1
      # Read once (signals come any time); all processes stop at one step.
      preempted = stop_agreement(stop_request.requested)
      stopping = done == stop_at_step or preempted
      saving = checkpointer.is_due(done) or done == config.total_steps or stopping
      logging_now = done % config.log_every_steps == 0 or done == config.total_steps
      if saving or logging_now:
        # Metrics are fetched only here, so steps run ahead without host syncs;
        # and no state is saved before its losses were seen to be finite.
        fetched = jax.device_get(pending_metrics)
        if not config.optimizer.get('skip_nonfinite_updates', False):
          _check_finite(fetched, done, checkpointer)
      if logging_now:
        means = nonfinite.interval_means(fetched)
        if means.get(nonfinite.SKIPPED):
          logging.warning('Skipped %d non-finite update(s) in steps %d..%d '
                          '(config.optimizer.skip_nonfinite_updates).',
                          means[nonfinite.SKIPPED], done - len(fetched) + 1,
                          done)
        pending_metrics = []
        writer.write_scalars(done, {f'train/{k}': v for k, v in means.items()})
        logging.info('%s', progress.line(done, means))
      stopping_early = False
      if done % config.eval_every_steps == 0 and done < config.total_steps:
        progress.pause()
        scalars, _ = evaluate(state)
        writer.write_scalars(done, {f'eval/{k}': v for k, v in scalars.items()})
        logging.info('eval at step %d: %s', done, ', '.join(
            f'{k} {v:.4f}' for k, v in scalars.items()))
        stopping_early = best.update(done, scalars, state)
        if stopping_early:
          logging.info('Early stopping at step %d: eval %s has not improved for '
                       '%d evaluations (best %.4f at step %d).', done,
                       best.metric, best.patience, best.summary()['value'],
                       best.summary()['step'])
          saving = True
        progress.resume()
      if saving:
        checkpointer.save(done, state)
      if preempted:
        raise preemption.Preempted(
            done, stop_request.signal_name or 'a signal to another process',
            workdir)
      if stopping:
        logging.info('Stopping after step %d as asked; rerun to resume.', done)
        return None
      if stopping_early:
        break

    # ------------------------------------------------------ final report --
    final_step = int(state.step)
    # The report's pictures show process 0's first evaluation rows with
    # the outputs this evaluation computes for them.
    examples = (report_lib.ExampleCollector(
        num_batches=num_eval_batches)
                if process_index == 0 else None)
    scalars, report = evaluate(state, examples)
    _timed('Writing the final metrics', lambda: writer.write_scalars(
        final_step, {f'eval/{k}': v for k, v in scalars.items()}))
    _timed('Keeping the best checkpoint',
           lambda: best.update(final_step, scalars, state))
  finally:
    profiler.close()
    # Whatever ends the run, saves already started are completed.
    _timed('Closing the metrics writer', writer.close)
    _timed('Finishing the checkpoint saves', checkpointer.close)
    _timed('Closing the best-checkpoint keeper', best.close)
  _write_json(os.path.join(workdir, 'eval_report.json'),
              dict(step=final_step, split=config.eval_split, **scalars,
                   best=best.summary(), report=report))
  logging.info('Final evaluation at step %d on %s (%d examples): %s\n%s',
               final_step, config.eval_split, report['num_examples'],
               ', '.join(f'{k} {v:.4f}' for k, v in scalars.items()),
               task.format_report(report))
  report_lib.write_all(  # WORKDIR/report.md and PNGs; process 0 only
      workdir, config=config, task=task, class_names=class_names,
      scalars=scalars, report=report, step=final_step,
      timings=progress.timings(),
      examples=examples.result() if examples is not None else None,
      input_key=input_key)
  return scalars
