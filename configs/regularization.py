"""Regularization on a small training set, where overfitting shows.

Arms (comma-separated in ``arms``):
  none            no regularization
  l2              + l2 * sum ||W||^2 / 2 over kernels (the trainer's penalty)
  l1              + l1 * sum |W| over kernels
  dropout_P       dropout with rate P after every hidden layer (e.g. dropout_0.5)
  max_norm        each hidden unit's incoming weights projected onto the ball
                  of radius max_norm after every step
  early_stopping  stop after ``patience`` evaluations without a better
                  ``early_stopping_monitor``; the best weights are kept
  augment         random crop and flip of the training images (image sets only)

Scales:
  smoke      seconds; used by the tests.
  (default)  MNIST-1D, 500 training examples (+ 100 for validation), an MLP
             of two hidden layers of 256, 3 seeds; minutes on a CPU.
  paper      the same with 10 seeds and longer training.
  cifar10    TFDS cifar10, 5000 training examples, the 2-D CNN, augmentation
             as an arm; for an accelerator (not run in the tests, but valid).

Each arm's seeds train as one vmapped grid (the early-stopping arm: one run
per seed, since its hook decides for one run); seeds differ in initialization
and dropout, while the training subset, the validation split and the batch
order are drawn once by ``data.seed``. ``config.train`` has no ``l1``/``l2``:
the penalties are the arms' settings (``l1``, ``l2`` below), which the study
gives to each arm's Trainer in a train config of its own.
"""

import ml_collections

from configs import common
from research import data as data_lib
from research import models

FIXED_ARMS = ('none', 'l2', 'l1', 'max_norm', 'early_stopping', 'augment')
DROPOUT_PREFIX = 'dropout_'
OPTIMIZERS = ('sgd', 'momentum', 'adam')


SCALES = ('smoke', 'paper', 'cifar10')  # besides the default (no scale)


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 3
  c.arms = 'none,l2,l1,dropout_0.2,dropout_0.5,max_norm,early_stopping'
  c.l2 = 1e-3
  c.l1 = 1e-4
  c.max_norm = 1.0            # He-initialized columns start at about 1.4
  c.patience = 10             # evaluations without improvement
  c.early_stopping_monitor = 'validation/loss'  # or 'validation/accuracy'
  c.mc_samples = 50           # T: MC-dropout networks averaged
  c.num_steps = 3000
  c.log_every = 50            # training metrics every this many steps
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adam', learning_rate=1e-3, momentum=0.9))

  c.data = data_lib.default_config()
  c.data.name = 'mnist1d'
  c.data.num_train = 600            # of which validation_fraction for validation
  c.data.validation_fraction = 1 / 6
  c.data.batch_size = 50

  c.model = models.default_config('mlp')
  c.model.input_shape = (40,)
  c.model.depth = 2
  c.model.width = 256

  c.train = common.study_train_config(eval_every=50, checkpoint_every=1000)
  del c.train['l1'], c.train['l2']  # per arm: see the docstring

  if arg == 'smoke':
    c.num_seeds = 1
    c.arms = 'none,l2,dropout_0.5,max_norm,early_stopping'
    c.num_steps = 60
    c.log_every = 20
    c.patience = 1
    c.mc_samples = 8
    c.model.width = 32
    c.data.num_train = 240
    c.data.validation_fraction = 0.25
    c.data.batch_size = 30
    c.train.eval_every = 20
    c.train.steps_per_dispatch = 20
    c.train.checkpoint_every = 20
    c.train.tensorboard = False
  elif arg == 'paper':
    c.num_seeds = 10
    c.num_steps = 6000
  elif arg == 'cifar10':
    c.arms = 'none,l2,dropout_0.2,dropout_0.5,max_norm,early_stopping,augment'
    c.l2 = 5e-4
    c.max_norm = 3.0
    c.num_steps = 8000
    c.log_every = 100
    c.optimizer.name = 'momentum'
    c.optimizer.learning_rate = 0.01
    c.data.name = 'tfds:cifar10'
    c.data.num_train = 5500
    c.data.validation_fraction = 500 / 5500
    c.data.batch_size = 128
    c.data.augment = False    # the 'augment' arm turns it on
    c.model = models.default_config('cnn')
    c.model.input_shape = (32, 32, 3)
    c.train.eval_every = 400
    c.train.data_on_device = False  # augmentation runs on the host
    c.train.steps_per_dispatch = 1
  elif arg not in (None, ''):
    raise ValueError(
        f'regularization: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
        'or none for the default.')
  return c
