"""Folders that `python -m aisci.main` keeps between runs, under the user's
cache directory: $XDG_CACHE_HOME/aisci, else ~/.cache/aisci."""

import os
from typing import Optional


def default_dir(name: str) -> str:
  """$XDG_CACHE_HOME/aisci/NAME, else ~/.cache/aisci/NAME."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'aisci', name)


def prepare(directory: Optional[str], name: str, flag: str, what: str
            ) -> Optional[str]:
  """The absolute folder to use, created: `directory` (None: default_dir(
  name); '': None, off).

  Raises ValueError naming `flag` when the folder cannot be created.
  what: what the folder holds, for that message.
  """
  if directory is None:
    directory = default_dir(name)
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise ValueError(
        f'Cannot create the {what} directory {directory!r} ({e}): pass '
        f"--{flag}=ANOTHER_DIR, or '' to run without it.") from e
  return directory
