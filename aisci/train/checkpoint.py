"""Orbax checkpoints of the whole train state under WORKDIR/checkpoints.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a run killed while saving leaves the previous checkpoints
readable and the partial one is never restored.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves when the loop asks (`is_due`: every `every_steps`), keeps the last `keep`."""

  def __init__(self, workdir: str, *, every_steps: int, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.every_steps = every_steps
    # The due-step decision is ours (`is_due`): orbax's own interval logic
    # also saves the first step it sees, which is not a useful checkpoint.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

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
          'optimizer of this config (it was written by a different one). '
          'Run with the config the workdir was started with (its config.json), '
          f'or start a new --workdir. Orbax says: {e}') from e

  def is_due(self, step: int) -> bool:
    return step % self.every_steps == 0

  def save(self, step: int, state: Any) -> None:
    """Starts saving `state` as checkpoint `step` (asynchronously)."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_sharding(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that also carry where each leaf goes on restore."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)
