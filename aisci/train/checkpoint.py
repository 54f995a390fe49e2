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
  """Saves every `every_steps` steps (and on demand), keeps the last `keep`."""

  def __init__(self, workdir: str, *, every_steps: int, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.every_steps = every_steps
    # The due-step decision is ours (see `save`): orbax's own interval logic
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
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts saving (asynchronously) if `step` is due or `force`."""
    if not force and step % self.every_steps:
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(state),
                              force=True)

  def close(self) -> None:
    """Waits for pending saves to finish."""
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_sharding(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that also carry where each leaf goes on restore."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)
