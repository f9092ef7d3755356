"""Transfer on MNIST-1D: pretrain on digits 0-4, reuse the lower layers for 5-9.

Scales:
  smoke      seconds; used by the tests (the MLP, two seeds, a few epochs).
  (default)  minutes on a CPU: the MNIST-1D CNN, 50 examples per target
             class, every arm, 3 seeds, 7 alternating timing rounds.
  paper      more seeds (10) and timing rounds (15); the same protocol.

Arms: ``scratch`` (random init, train everything), ``finetune`` (pretrained
lower layers, new head, train everything), ``frozen`` (pretrained lower
layers kept fixed, only the new head trains), ``cached`` (as ``frozen``, but
the lower layers' outputs are computed once and the head trains on them).

``train`` holds the Trainer fields a user may set; the run lengths come from
``pretrain.num_steps`` and ``target.epochs``, the log interval from
``log_every``, the batch sizes from ``pretrain`` and ``target``, and the
evaluations from ``target.eval_every_epochs`` (pretraining is evaluated at
its end), so ``train`` has no ``eval_every``.
"""

import ml_collections

from configs import common


ARMS = ('scratch', 'finetune', 'frozen', 'cached')
MODELS = ('mnist1d_mlp', 'mnist1d_cnn')


SCALES = ('smoke', 'paper')  # besides the default (no scale)


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 3
  c.arms = ','.join(ARMS)
  c.model = 'mnist1d_cnn'
  c.source_classes = (0, 1, 2, 3, 4)
  c.target_classes = (5, 6, 7, 8, 9)
  # The lower layers: every parameter but the linear head's.
  c.lower_layers = r'(?!head/).*'

  # Pretraining on the source classes: the MNIST-1D paper's optimizer
  # (Adam, learning rate 1e-2, batch 100) on all their training examples.
  c.pretrain = ml_collections.ConfigDict(dict(
      num_steps=1000, batch_size=100, learning_rate=1e-2))
  # Training on the target classes with few examples (the same for every arm).
  # 200 epochs (1000 steps): the head on frozen features is still learning
  # at 60 epochs, which would blame the features for an optimization budget.
  c.target = ml_collections.ConfigDict(dict(
      examples_per_class=50, epochs=200, batch_size=50, learning_rate=3e-3,
      eval_every_epochs=20))
  # Wall clock: every arm trains again (target.epochs, without evaluation),
  # in alternating order (rotated each round) after a warm-up round; medians.
  c.timing = ml_collections.ConfigDict(dict(rounds=7))
  c.feature_batch_size = 1000           # examples per batch when caching features

  c.data_name = 'mnist1d'
  c.log_every = 100                     # steps between logged training losses
  c.train = common.study_train_config(eval_batch_size=500, checkpoint_every=1000)
  del c.train['eval_every']             # target.eval_every_epochs; see above

  if arg == 'smoke':
    c.num_seeds = 2
    c.model = 'mnist1d_mlp'
    c.pretrain.num_steps = 100
    c.target.examples_per_class = 10
    c.target.batch_size = 10
    c.target.epochs = 4
    c.target.eval_every_epochs = 2
    c.timing.rounds = 2
    c.log_every = 10
    c.train.steps_per_dispatch = 10
    c.train.checkpoint_every = 50
    c.train.tensorboard = False
  elif arg == 'paper':
    c.num_seeds = 10
    c.timing.rounds = 15
  elif arg not in (None, ''):
    raise ValueError(f'transfer: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
                     'or none for the default.')
  return c
