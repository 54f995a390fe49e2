"""Command-line parsing for aisci.main: a `--config.FIELD=VALUE` whose FIELD
the config lacks, or a --config file that is not there, is one clear line,
not ml_collections' traceback.

ml_collections raises a bare AttributeError or KeyError from inside absl's
parser for such a field (with a suggestion only when a name is close). This
parser catches it, finds the override whose path the config lacks, and
names it with the fields there are at that level.
"""

import difflib
import importlib.util
import os
import sys
from typing import Any, Optional, Sequence

from absl import app
import ml_collections


def load(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:variant' -> the ConfigDict its get_config returns."""
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('aisci_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def _overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
  """[(argument, dotted path)] of each --config.PATH[=VALUE] in argv."""
  found = []
  for argument in argv:
    if argument.startswith('--config.'):
      path = argument[len('--config.'):].partition('=')[0]
      found.append((argument, path))
  return found


def _config_spec(argv: Sequence[str]) -> Optional[str]:
  for i, argument in enumerate(argv):
    if argument.startswith('--config='):
      return argument[len('--config='):]
    if argument == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def unknown_field_message(config: Any, argv: Sequence[str]) -> Optional[str]:
  """The error for the first override in argv whose path `config` lacks;
  None when every override's path exists."""
  for argument, path in _overrides(argv):
    node, walked = config, 'config'
    for key in path.split('.'):
      fields = (list(node.keys())
                if isinstance(node, (dict, ml_collections.ConfigDict)) else [])
      if key in fields:
        node, walked = node[key], f'{walked}.{key}'
        continue
      if not fields:
        return (f'{argument}: {walked} is a value, not a group of fields, so '
                f'it has no field {key!r}.')
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f' Did you mean {walked}.{close[0]}?' if close else ''
      return (f'{argument}: {walked} has no field {key!r}.{hint} Its fields: '
              f'{", ".join(sorted(fields))}.')
  return None


def _fail(message: str) -> None:
  sys.stderr.write(f'FATAL Flags parsing error: {message}\n'
                   'Pass --helpfull to see help on flags.\n')
  sys.exit(1)


def missing_file_message(spec: Optional[str]) -> Optional[str]:
  """The error for a --config file that is not there (ml_collections says
  only 'Failed loading config file config_config'); None when it is."""
  if not spec:
    return None
  path = spec.partition(':')[0]
  if os.path.isfile(path):
    return None
  folder = os.path.dirname(path) or '.'
  there = (sorted(f for f in os.listdir(folder)
                  if f.endswith('.py') and not f.startswith('_'))
           if os.path.isdir(folder) else [])
  listing = (f' Config files in {folder}/: {", ".join(there)}.' if there else
             ' Run from the repository root, where configs/ is, or give the '
             "file's full path.")
  return f'--config={spec}: there is no file {path!r}.{listing}'


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser (app.run's flags_parser), with a missing config file and
  unknown config fields named in one line."""
  spec = _config_spec(argv)
  message = missing_file_message(spec)
  if message:
    _fail(message)
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    if spec:  # a file that is there (checked above)
      try:
        message = unknown_field_message(load(spec), argv)
      except Exception:  # pylint: disable=broad-except
        message = None  # the config itself fails: its own error says why
    if message is None:
      raise
    _fail(message)
