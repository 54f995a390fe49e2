"""Orbax checkpoints of the whole train state under WORKDIR/checkpoints.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a run killed while saving leaves the previous checkpoints
readable and the partial one is never restored (its temporary folder is
deleted when the next run starts). A save that fails (disk full, quota) is
a `CheckpointSaveError` naming the last complete checkpoint.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves when the loop asks (`is_due`: every `every_steps`), keeps the last `keep`."""

  def __init__(self, workdir: str, *, every_steps: int, keep: int,
               subdir: str = 'checkpoints'):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    self.every_steps = every_steps
    # The due-step decision is ours (`is_due`): orbax's own interval logic
    # also saves the first step it sees, which is not a useful checkpoint.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True))
    self._saving = None  # the step of the save in flight, if any

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def restore(self, step: int, abstract_state: Any) -> Any:
    """The state saved at `step`, laid out as `abstract_state` says.

    abstract_state: pytree of jax.ShapeDtypeStruct with shardings.
    """
    try:
      return self._manager.restore(
          step, args=ocp.args.StandardRestore(abstract_state))
    except ValueError as e:
      raise ValueError(
          f'Checkpoint {step} in {self.directory} does not fit the model and '
          'optimizer of this config (it was written by a different one, or '
          'by an aisci version that laid out the optimizer state otherwise). '
          'Run with the config the workdir was started with (its config.json), '
          'or start a new --workdir (--config.init.path=THIS_WORKDIR keeps '
          f'its parameters). Orbax says: {e}') from e

  def delete_after(self, step: int) -> None:
    """Deletes checkpoints of steps after `step` (a replay will redo them)."""
    for later in [s for s in self._manager.all_steps() if s > step]:
      self._manager.delete(later)

  def is_due(self, step: int) -> bool:
    return step % self.every_steps == 0

  def save(self, step: int, state: Any) -> None:
    """Starts saving `state` as checkpoint `step` (asynchronously)."""
    try:  # A failure of the previous (asynchronous) save surfaces here.
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._saving or step, e) from e
    self._saving = step

  def close(self) -> None:
    """Waits for pending saves to finish."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._saving, e) from e
    finally:
      self._manager.close()
    self._saving = None

  def complete_steps(self) -> list[int]:
    """Steps whose checkpoint is complete, read from the disk (orbax names
    a checkpoint folder by its step only once everything in it is written)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())

  def _save_error(self, step: Optional[int], error: Exception) -> 'CheckpointSaveError':
    complete = [s for s in self.complete_steps() if s != step]
    cause = str(error).strip().splitlines()[0][:500] if str(error) else ''
    return CheckpointSaveError(
        f'Could not write checkpoint {step} to {self.directory} '
        f'({type(error).__name__}: {cause}). The disk may be full, or a '
        'quota or file-size limit reached: free space (or lower '
        'config.keep_checkpoints) and rerun the same command. '
        + (f'It resumes from checkpoint {complete[-1]}, which is complete '
           'and unharmed.' if complete else 'No checkpoint was complete yet.'))


class CheckpointSaveError(OSError):
  """A checkpoint could not be written; the earlier ones are intact."""


def abstract_with_sharding(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that also carry where each leaf goes on restore."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


def read_on_one_device(directory: str, step: Optional[int] = None
                       ) -> tuple[Any, int]:
  """(raw pytree of the checkpoint's arrays, its step) from `directory`
  (WORKDIR/checkpoints or WORKDIR/best_checkpoint); step None: the latest.

  Every leaf lands on this process's first device, whatever devices wrote
  it (a run on 8 CPU devices or a GPU node, read on a laptop): orbax would
  otherwise ask for the writer's device layout. Neither the model nor the
  optimizer has to be rebuilt to read it.
  """
  directory = os.path.abspath(directory)  # orbax takes absolute paths only
  steps = []
  if os.path.isdir(directory):
    manager = ocp.CheckpointManager(
        directory, item_handlers=ocp.StandardCheckpointHandler())
    steps = list(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f'No checkpoint in {directory}.')
  if step is None:
    step = max(steps)
  elif step not in steps:
    manager.close()
    raise ValueError(f'No checkpoint of step {step} in {directory}; '
                     f'available steps: {sorted(steps)}.')
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      manager.item_metadata(step))
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  manager.close()
  return state, int(step)
