"""Entry point: python -m aisci.main --config=configs/vit_cifar.py --workdir=DIR.

Any config field can be overridden on the command line
(--config.total_steps=500); the config is locked, so a mistyped field is an
error that names the field and suggests the nearest valid one.
"""

import logging as logging_std
import os
import sys

# Quiet TensorFlow's C++ start-up chatter; it only runs the input pipeline.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from aisci.train import loop
from aisci.train import preemption

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a variant: FILE.py:VARIANT.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, logs and reports go; rerunning with '
    'the same workdir resumes.')
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
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_PREEMPTED)


if __name__ == '__main__':
  app.run(main)
