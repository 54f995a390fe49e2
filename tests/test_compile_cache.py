"""aisci/compile_cache.py: where the persistent compilation cache goes."""

import os

import jax
import pytest

from aisci import compile_cache


@pytest.fixture
def restore_jax_config():
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  yield
  jax.config.update('jax_compilation_cache_dir', saved[0])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', saved[1])


def test_default_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compile_cache.default_dir() == os.path.join(str(tmp_path), 'aisci', 'jax')
  monkeypatch.delenv('XDG_CACHE_HOME')
  assert compile_cache.default_dir() == os.path.join(
      os.path.expanduser('~'), '.cache', 'aisci', 'jax')


def test_enable_sets_jax_config_and_creates_the_dir(tmp_path,
                                                    restore_jax_config):
  directory = tmp_path / 'cache'
  assert compile_cache.enable(str(directory)) == str(directory)
  assert directory.is_dir()
  assert jax.config.jax_compilation_cache_dir == str(directory)
  assert (jax.config.jax_persistent_cache_min_compile_time_secs
          == compile_cache.MIN_COMPILE_TIME_SECS)


def test_empty_string_turns_it_off(restore_jax_config):
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.enable('') is None
  assert jax.config.jax_compilation_cache_dir == before


def test_unusable_dir_names_the_flag(tmp_path, restore_jax_config):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(ValueError, match='--compilation_cache_dir'):
    compile_cache.enable(str(blocker / 'cache'))
