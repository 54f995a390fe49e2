"""One experiment per workdir: a changed config is refused on resume.

A workdir's `config.json` holds the config it was started with. Resuming
with a config that trains something else (another model shape, data set,
task, input size, optimizer...) would silently mix two experiments in one
run, so it is refused with the list of differing fields, unless the user
asks for it (`--allow_config_change`, e.g. after moving the data, or to
lower the learning rate after a divergence). Fields that only say how long
to train, how often to log/evaluate/save, or where things are read from
may change freely (`SAFE_FIELDS`).
"""

import datetime
import json
import os
from typing import Any, Mapping

from absl import logging

CONFIG_FILE = 'config.json'
# Allowed changes are recorded here, so what a run was trained with stays known.
CHANGES_FILE = 'config_changes.jsonl'

# Dotted field names (or prefixes ending in '.') that may differ on resume.
SAFE_FIELDS = (
    'total_steps',  # train longer or shorter
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints',
    'data_dir',  # where tfds data are read from, not which
    'eval_split', 'input.eval_batch_size',  # what is evaluated, not trained
    'input.cache', 'input.skip_corrupt',
    'mesh.', 'cpu_devices',  # the device layout; the same step, split differently
    # Memory knobs: the same update computed in pieces or recomputed.
    'grad_accum_steps', 'model.remat',
    'model.attention',  # the same function, another kernel (models/attention.py)
    'init.',  # only read when a run starts from scratch
    'optimizer.skip_nonfinite_updates',  # a guard, to get past a bad batch
    'profile.',  # which steps are traced (train/step_profile.py)
    'peak_tflops',  # what MFU is measured against (train/flops.py)
)


class ConfigChangedError(ValueError):
  """The config differs from the workdir's in fields that are not safe."""


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _is_safe(field: str) -> bool:
  return any(field == s or (s.endswith('.') and field.startswith(s))
             for s in SAFE_FIELDS)


_MISSING = object()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]
                ) -> dict[str, tuple[Any, Any]]:
  """{dotted field: (old value, new value)} for fields that differ.

  Both are nested dicts as JSON holds them (tuples become lists). A field
  the old config lacks is not a difference: an older aisci wrote it, before
  the field existed. A field the new config lacks is (old, _MISSING).
  """
  old_flat, new_flat = _flatten(old), _flatten(new)
  return {k: (old_flat[k], new_flat.get(k, _MISSING))
          for k in sorted(old_flat) if old_flat[k] != new_flat.get(k, _MISSING)}


def _show(value: Any) -> str:
  return '(absent)' if value is _MISSING else json.dumps(value)


def _as_json(config_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The config as config.json stores it (tuples as lists, and so on)."""
  return json.loads(json.dumps(config_dict))


def check(config_dict: Mapping[str, Any], workdir: str, *,
          allow_change: bool = False, write_record: bool = True) -> None:
  """Refuses to go on in `workdir` with a config that differs from its own.

  config_dict: config.to_dict() of this run.
  allow_change: go on anyway, logging the differing fields and appending
    them to WORKDIR/config_changes.jsonl (if write_record).
  Raises ConfigChangedError listing the fields that differ and are not in
  SAFE_FIELDS. A workdir without config.json (new) passes.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigChangedError(
        f'Cannot read {path} ({e}), the config this workdir was started '
        'with, to compare it with this one. Restore the file, or pass '
        '--allow_config_change to go on without the comparison.') from e
  diff = differences(old, _as_json(config_dict))
  safe = {k: v for k, v in diff.items() if _is_safe(k)}
  unsafe = {k: v for k, v in diff.items() if not _is_safe(k)}
  lines = [f'  {k}: {_show(a)} -> {_show(b)}' for k, (a, b) in unsafe.items()]
  if safe:
    logging.info('Config changes since the last start (allowed): %s', ', '.join(
        f'{k} {_show(a)} -> {_show(b)}' for k, (a, b) in safe.items()))
  if not unsafe:
    return
  if not allow_change:
    raise ConfigChangedError(
        f'The config differs from the one workdir {workdir} was started with '
        f'({path}) in {len(unsafe)} field(s) that change what is trained:\n'
        + '\n'.join(lines) + '\n'
        'Resuming would mix two experiments in one run. Run with the '
        "workdir's config, start a new --workdir, or pass "
        '--allow_config_change to resume with the new values (e.g. after '
        'moving the data set or lowering the learning rate).')
  logging.warning('Resuming %s with a changed config (--allow_config_change):'
                  '\n%s', workdir, '\n'.join(lines))
  if write_record:
    record = dict(time=datetime.datetime.now().isoformat(timespec='seconds'),
                  changes={k: [None if a is _MISSING else a,
                               None if b is _MISSING else b]
                           for k, (a, b) in unsafe.items()})
    with open(os.path.join(workdir, CHANGES_FILE), 'a', encoding='utf-8') as f:
      f.write(json.dumps(record) + '\n')
