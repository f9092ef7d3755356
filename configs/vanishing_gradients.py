"""Vanishing and exploding gradients in deep MLPs on MNIST-1D, and their cures.

An arm is ``activation/init`` or ``activation/init/arch``: the activation is
one of research.models' names (``*``: the six of the study, ACTIVATIONS), the
init one of INITS (``*``: all five) or a research.models initializer name, the
arch ``plain`` (the default), ``bn`` (BatchNorm after each hidden Dense) or
``residual`` (identity skips). Arms are comma-separated.

Scales:
  smoke      seconds; used by the tests.
  (default)  minutes on a CPU: every init x activation probed at depth 30 (the
             probe is cheap), a depth sweep 10..50 for four arms, eight
             representative arms trained at depth 20 over 2 seeds, and the
             clipping comparison.
  paper      the full grid: every init x activation x arch probed at depths
             10..50 and trained at depth 20, 5 seeds, longer runs.

Training runs are grids trained as one vmapped program: the arms that share
a network (activation and arch; their inits differ) times the seeds, and for
clipping each rule's seeds. Seeds differ in initialization; the data and
their order are drawn by ``data.seed`` and shared by every run.
"""

import ml_collections

from configs import common
from research import data as data_lib
from research import models

# name -> (research.models initializer, scale: std for 'normal', else gain).
INITS = {
    'normal_1': ('normal', 1.0),
    'normal_0.01': ('normal', 0.01),
    'glorot': ('glorot_uniform', None),
    'he': ('he_normal', None),
    'lecun': ('lecun_normal', None),
}
ACTIVATIONS = ('sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'selu')
ARCHS = {
    'plain': {},
    'bn': dict(batch_norm=True),
    'residual': dict(residual=True),
}
OPTIMIZERS = ('sgd', 'momentum', 'adam')
CLIP_ARMS = ('none', 'value', 'norm', 'global_norm')


SCALES = ('smoke', 'paper')  # besides the default (no scale)


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = data_lib.default_config()
  c.data.name = 'mnist1d'
  c.data.batch_size = 100
  c.data.eval_batch_size = 1000

  # The deep MLP; depth, activation, init and arch come from each arm.
  c.model = models.default_config('mlp')
  c.model.input_shape = (40,)
  c.model.width = 64

  # Part 1: the propagation probe at initialization (one batch, no training).
  c.probe = ml_collections.ConfigDict(dict(
      depth=30,
      arms='*/*,sigmoid/normal_1/bn,sigmoid/glorot/bn,sigmoid/glorot/residual,'
           'relu/normal_1/bn,relu/he/residual',
      depth_sweep=(10, 20, 30, 40, 50),
      sweep_arms='sigmoid/glorot,tanh/glorot,relu/he,selu/lecun',
      batch_size=512,
  ))

  # Part 2: training curves of representative arms, and the probe again
  # after training.
  c.train_arms = ('sigmoid/normal_0.01,sigmoid/glorot,tanh/glorot,relu/normal_0.01,'
                  'relu/he,selu/lecun,sigmoid/glorot/bn,sigmoid/glorot/residual')
  c.train_depth = 20
  c.num_seeds = 2
  c.num_steps = 2000
  c.log_every = 50            # training metrics every this many steps
  c.optimizer = ml_collections.ConfigDict(dict(
      name='momentum', learning_rate=0.01, momentum=0.9))

  # Part 3: clipping by value against by norm where the gradients explode
  # (deep ReLU, He init with gain 1.5, a high learning rate).
  c.clip = ml_collections.ConfigDict(dict(
      arms=','.join(CLIP_ARMS),
      arm='relu/he',
      init_scale=1.5,
      depth=20,
      learning_rate=0.05,
      value=1.0,          # clip: each gradient entry to [-value, value]
      norm=1.0,           # norm / global_norm: the largest norm
      num_steps=600,
      num_points=6,       # training steps at which the cosine is measured
      num_seeds=2,
  ))

  # A run whose gradients overflow keeps going (the non-finite steps are
  # skipped and counted: the count is a result of this study), so the limit
  # on non-finite steps in a row is above any run's length.
  c.train = common.study_train_config(log_grad_norms=True, eval_every=200,
                                      checkpoint_every=1000,
                                      max_nonfinite_in_row=1_000_000)

  if arg == 'smoke':
    c.model.width = 16
    c.probe.depth = 10
    c.probe.arms = 'sigmoid/normal_1,relu/he,relu/normal_1/bn'
    c.probe.depth_sweep = (6, 10)
    c.probe.sweep_arms = 'sigmoid/normal_1'
    c.probe.batch_size = 128
    c.train_arms = 'relu/he'
    c.train_depth = 6
    c.num_seeds = 1
    c.num_steps = 40
    c.log_every = 20
    c.train.eval_every = 20
    c.train.steps_per_dispatch = 20
    c.train.checkpoint_every = 20
    c.train.tensorboard = False
    c.clip.arms = 'none,value'
    c.clip.depth = 10
    c.clip.num_steps = 40
    c.clip.num_points = 1
    c.clip.num_seeds = 1
  elif arg == 'paper':
    c.probe.arms = '*/*,*/*/bn,*/*/residual'
    c.train_arms = '*/*,*/*/bn,*/*/residual'
    c.num_seeds = 5
    c.num_steps = 8000
    c.train.eval_every = 500
    c.clip.num_steps = 2000
    c.clip.num_points = 10
    c.clip.num_seeds = 5
  elif arg not in (None, ''):
    raise ValueError(
        f'vanishing_gradients: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
        'or none for the default.')
  return c
