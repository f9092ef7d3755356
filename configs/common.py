"""Pieces the study configs share."""

import ml_collections

from research.train import trainer as trainer_lib


def study_train_config(**overrides) -> ml_collections.ConfigDict:
  """The Trainer fields a study's user may set, as the CPU studies use them:
  the training split on the device, several steps per dispatch, a
  checkpoint every ``checkpoint_every`` steps (each run resumes after a
  kill), TensorBoard and progress; then ``overrides``.

  The run length, log interval and snapshot steps are not here: a study
  derives them from its own fields (budget, ``log_every``) and passes them
  to ``Trainer.fit``, so that no field a user can set is overwritten; the
  batch size is the data's (``config.data.batch_size``).
  """
  c = trainer_lib.default_config()
  for field in trainer_lib.RUN_FIELDS:
    del c[field]
  c.update(dict(eval_batch_size=1000, steps_per_dispatch=50, data_on_device=True,
                checkpoints=True, checkpoint_every=1000, tensorboard=True,
                progress=True))
  c.update(overrides)
  return c

