"""Checkpoints with orbax: every N steps and at the end, the last k kept.

Saving is atomic: orbax writes into a temporary directory and renames it only
when complete, so a crash while saving leaves the previous checkpoints as they
were, and an unfinished one is never restored. The state is saved with the
data position and counters (a JSON item), so a resumed run continues with the
batch that the interrupted run would have seen next.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


def state_tree(state) -> dict:
  """The savable part of a TrainState (no apply_fn, no tx)."""
  return dict(step=state.step, params=state.params, batch_stats=state.batch_stats,
              opt_state=state.opt_state, rng=state.rng)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
  """Numbered checkpoints of ``{state, meta}`` under ``directory``."""

  def __init__(self, directory: str, keep: int = 3):
    if keep < 1:
      raise ValueError(f'keep_checkpoints={keep} must be >= 1.')
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True),
        item_names=('state', 'meta'),
    )

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: dict, meta: dict) -> None:
    self.manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    self.manager.wait_until_finished()

  def restore(self, step: int, target: dict) -> tuple[dict, dict]:
    """Restores into the structure, shapes and dtypes of ``target``."""
    out = self.manager.restore(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(target)),
            meta=ocp.args.JsonRestore()),
    )
    return out['state'], dict(out['meta'])

  def close(self):
    self.manager.close()


def save_params(directory: str, tree: Any) -> None:
  """A single pytree (snapshot, best params), written atomically."""
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.abspath(directory), jax.device_get(tree), force=True)


def load_params(directory: str, target: Any = None) -> Any:
  """Loads a pytree saved by :func:`save_params` (or a ``state`` item)."""
  with ocp.StandardCheckpointer() as ckpt:
    if target is None:
      return ckpt.restore(os.path.abspath(directory))
    return ckpt.restore(os.path.abspath(directory), _abstract(target))


def to_numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))
