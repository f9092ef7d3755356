"""Pieces the study configs share."""

import ml_collections

from research.train import trainer as trainer_lib


def in_memory_train_config(**overrides) -> ml_collections.ConfigDict:
  """The Trainer as the CPU studies use it: the training split on the device,
  several steps per dispatch, no checkpoints or TensorBoard files (a study
  runs many short runs and keeps its own results), then ``overrides``."""
  c = trainer_lib.default_config()
  c.update(dict(eval_batch_size=1000, steps_per_dispatch=50, data_on_device=True,
                checkpoints=False, tensorboard=False, progress=False))
  c.update(overrides)
  return c
