"""Snapshot ensembles (Huang et al., ICLR 2017): train 1, get M for free.

Scales:
  smoke             seconds; used by the tests.
  (default)         MNIST-1D with the 1-D CNN with BatchNorm after each
                    convolution (the paper's networks all have BatchNorm),
                    batch 64 as in the paper, every arm, 5 seeds; under 5
                    minutes on a 2-core CPU.
  no_batchnorm      the default without BatchNorm (the MNIST-1D reference
                    CNN): the alpha_0 restarts kill its ReLUs (see results.md).
  cifar10           ResNet-110 on TFDS cifar10 with the standard augmentation,
                    B = 200 epochs, M = 5, batch 64, parallel='sharded' (GPU/TPU).
  cifar10_resnet20  the same protocol with ResNet-20 (a shorter run).
"""

import ml_collections

from configs import common
from research import data as data_lib
from research import models

ARMS = ('single', 'nocycle', 'singlecycle', 'snapshot', 'true_ensemble')


SCALES = ('smoke', 'no_batchnorm', 'cifar10', 'cifar10_resnet20')  # besides the default


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 5
  c.arms = ','.join(ARMS)
  c.budget_steps = 1500           # B: training steps of every arm but the true ensemble (24 epochs)
  c.num_snapshots = 5             # M
  c.snapshot_lrs = (0.1, 0.2)     # alpha_0 of the cyclic cosine schedule
  c.singlecycle_lr = 0.2          # alpha_0 of each SingleCycle model's one cycle
  # The single model (the paper's baseline): SGD, Nesterov 0.9, lr 0.1 divided
  # by 10 at 50% and at 75% of B, weight decay 1e-4 as in the paper.
  c.single_lr = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.log_every = 50                # training metrics every this many steps

  c.data = data_lib.default_config()
  c.data.name = 'mnist1d'
  c.data.batch_size = 64
  c.data.eval_batch_size = 1000

  c.model = models.default_config('mnist1d_cnn')
  c.model.batch_norm = True

  c.train = common.study_train_config(steps_per_dispatch=50, checkpoint_every=500)

  if arg == 'smoke':
    c.num_seeds = 2
    c.budget_steps = 60
    c.num_snapshots = 3
    c.log_every = 10
    c.train.steps_per_dispatch = 10
    c.train.checkpoint_every = 20
    c.train.tensorboard = False
    c.model.channels = 8
  elif arg == 'no_batchnorm':
    c.model.batch_norm = False
  elif arg in ('cifar10', 'cifar10_resnet20'):
    steps_per_epoch = 50000 // 64
    c.budget_steps = 200 * steps_per_epoch
    c.num_snapshots = 5
    c.log_every = 100
    c.num_seeds = 1
    c.data.name = 'tfds:cifar10'
    c.data.batch_size = 64
    c.data.eval_batch_size = 1000
    c.data.augment = True
    c.model = models.default_config('resnet')
    c.model.depth = 110 if arg == 'cifar10' else 20
    c.train.parallel = 'sharded'
    c.train.data_on_device = False
    c.train.steps_per_dispatch = 1
    c.train.checkpoint_every = 5 * steps_per_epoch
  elif arg not in (None, ''):
    raise ValueError(
        f'snapshot_ensembles: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
        'or none for the default.')
  return c
