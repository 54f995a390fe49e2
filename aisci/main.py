"""Entry point: python -m aisci.main --config=configs/vit_cifar.py --workdir=DIR.

Any config field can be overridden on the command line
(--config.total_steps=500); the config is locked, so a mistyped field is an
error that names the field, suggests the nearest valid one and lists the
fields there are (aisci/config_overrides.py).
"""

import logging as logging_std
import os
import sys

if __name__ == '__main__':
  # Before any import starts threads or allocates: a preloaded malloc, or
  # glibc's tunables, take effect only at process start (aisci/allocator.py).
  from aisci import allocator  # pylint: disable=g-import-not-at-top
  allocator.restart()
  # Before the heavy imports, whose objects the collector would walk again
  # and again; the loop resumes it (aisci/gc_pause.py).
  from aisci import gc_pause  # pylint: disable=g-import-not-at-top
  gc_pause.pause()

# Quiet TensorFlow's C++ start-up chatter; it only runs the input pipeline.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from aisci import allocator
from aisci import compile_cache
from aisci import config_overrides
from aisci import cpu_devices
from aisci.data import decoded_cache
from aisci.train import checkpoint
from aisci.train import distributed
from aisci.train import loop
from aisci.train import preemption
from aisci.train import workdir_config

# Exit statuses (sysexits.h), besides 75 for a pre-empted run (preemption.py).
EXIT_SAVE_FAILED = 74  # EX_IOERR: a checkpoint could not be written (disk full)
EXIT_CONFIG_CHANGED = 78  # EX_CONFIG: the config differs from the workdir's

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a variant: FILE.py:VARIANT.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, logs and reports go; rerunning with '
    'the same workdir resumes.')
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', None, 'Devices the CPU is split into when JAX runs on it '
    '(the batch is sharded over them); overrides config.cpu_devices, which '
    "each config sets to what trained it fastest on 2 cores; 8 when the "
    'config has no such field (aisci/cpu_devices.py). Small models run faster over 8 CPU devices '
    'than 1 (~15%, experiments/cifar10.md); models whose step holds '
    'hundreds of MB of activations per device ran ~1.5x faster over 2 '
    '(benchmarks/README.md, "Fresh memory every step"). No effect on '
    'GPU/TPU runs; ignored if XLA_FLAGS sets '
    '--xla_force_host_platform_device_count.', lower_bound=1)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'Resume a workdir even though the config '
    'differs from the one it was started with in fields that change what is '
    'trained (model, data, optimizer...); without it that is refused with '
    'the list of differing fields. Changes are logged to '
    'WORKDIR/config_changes.jsonl.')
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None, "JAX's persistent compilation cache: "
    'compiled steps are saved there and the next run with the same shapes '
    'starts without compiling them (benchmarks/README.md). Default: '
    "$XDG_CACHE_HOME/aisci/jax or ~/.cache/aisci/jax; '' turns it off.")
_DATA_CACHE_DIR = flags.DEFINE_string(
    'data_cache_dir', None, 'Image folders decoded into memory '
    '(imagefolder with config.input.cache=True) are saved there, and the '
    'next run with the same files reads them back instead of decoding them '
    '(aisci/data/decoded_cache.py). Default: $XDG_CACHE_HOME/aisci/images '
    "or ~/.cache/aisci/images; '' turns it off.")
_DATA_CACHE_MAX_GB = flags.DEFINE_float(
    'data_cache_max_gb', decoded_cache.DEFAULT_MAX_GB, 'Size limit of '
    '--data_cache_dir: after each save the entries used longest ago are '
    'deleted until the rest fit; a split larger than the limit is not saved. '
    '0: no limit.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'], 'Join a multi-process '
    '(multi-host) job with jax.distributed.initialize: auto = when the flags '
    'below are given or a multi-process SLURM srun, Open MPI or TPU-slice '
    'launch is detected; on = always (JAX detects the rest, e.g. on TPU '
    'VMs); off = never (aisci/train/distributed.py).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0 of a multi-process '
    'job, with --num_processes and --process_id (not needed under SLURM, '
    'Open MPI or on TPU VMs).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes in the job (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, "This process's rank, 0..num_processes-1.")
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging_std.Filter):
  """Drops INFO records of orbax, which logs every step of every save."""

  def filter(self, record):
    return record.levelno > logging_std.INFO or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  handler = logging.get_absl_handler()
  handler.setFormatter(logging_std.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  handler.addFilter(_QuietLibraries())
  config = _CONFIG.value
  try:
    source = cpu_devices.split(*cpu_devices.choose(_CPU_DEVICES.value, config))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if 'xla_cpu_collective_call_terminate_timeout_seconds' not in os.environ.get(
      'XLA_FLAGS', ''):
    # CPU devices are threads of this process: on a machine busy with other
    # jobs one may reach a collective long after the others, and XLA's
    # default (40 s) then aborts the whole run. Measured here: an SST-2 run
    # aborted at its first step under load average ~20 on 2 cores.
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_collective_call_terminate_timeout_seconds=1200').strip()
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR_ADDRESS.value,
                         _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:  # an unusable folder or limit: the message names the flag
    compile_cache.enable(_COMPILATION_CACHE_DIR.value)
    decoded_cache.enable(_DATA_CACHE_DIR.value, _DATA_CACHE_MAX_GB.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if jax.default_backend() == 'cpu':
    if 'cpu_devices' in config:
      config.cpu_devices = jax.local_device_count()  # config.json: what ran
    logging.info('CPU split into %d devices (%s).', jax.local_device_count(),
                 source)
    logging.info('Memory allocator: %s.', allocator.describe())
  try:
    loop.train_and_evaluate(config, _WORKDIR.value,
                            allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_PREEMPTED)
  except checkpoint.CheckpointSaveError as e:
    logging.error('%s', e)
    sys.exit(EXIT_SAVE_FAILED)
  except workdir_config.ConfigChangedError as e:
    logging.error('%s', e)
    sys.exit(EXIT_CONFIG_CHANGED)


if __name__ == '__main__':
  app.run(main, flags_parser=config_overrides.parse_flags)
