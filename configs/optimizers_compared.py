"""Optimizers compared on MNIST-1D: nine optimizers, defaults and a rate sweep.

Scales:
  smoke      seconds; used by the tests (two optimizers, one seed).
  (default)  minutes on a CPU: the MLP, every optimizer at its usual default
             learning rate and at 1/10, 1/3, 3, 10 and 30 times it, 3000 steps,
             3 seeds; the MNIST-1D paper's reference setting for the MLP.
  modern     the modern optimizers (Muon for the matrices with Adam for the
             rest, schedule-free AdamW, Prodigy, SOAP, SAM) on the MLP and the
             CNN at their usual defaults and 1/3 and 3 times them, beside Adam
             and SGD + momentum swept over the same factors; 3000 steps, 3 seeds.
  reference  the paper's reference setting alone (Adam, learning rate 1e-2,
             batch 100, 8000 steps) for the MLP and the CNN, 3 seeds.
  paper      the full grid on the MLP and the CNN with 8000 steps per run,
             plus the reference setting for both (hours on a CPU; minutes on
             an accelerator).

The learning rate of each run is ``default_lr[optimizer] * factor`` for the
factors in ``lr_factors`` (``modern_lr_factors`` for the modern optimizers);
the best one is chosen on a validation set of ``data.validation_count``
examples carved from the training split (mean over seeds), and reported on
the test set. The batch size is ``data.batch_size``; the reference setting
has its own (``reference.batch_size``) and trains on the whole split.
"""

import ml_collections

from configs import common
from research import data as data_lib

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adadelta',
              'adam', 'nadam', 'adamw')
MODERN_OPTIMIZERS = ('muon', 'schedule_free_adamw', 'prodigy', 'soap', 'sam')
MODELS = ('mnist1d_mlp', 'mnist1d_cnn')

# The usual default learning rates (Keras and PyTorch; Adadelta's 1.0 is
# Zeiler's form without a rate, which is also PyTorch's default; Nadam's 2e-3
# is Keras' and PyTorch's). The modern ones: Muon's 0.02 (Jordan's, with Adam
# at the same rate for the rest as in Optax), schedule-free AdamW's 0.0025
# (Defazio et al.'s and Optax's), Prodigy's 1.0 (a multiplier of its own
# estimate), SOAP's 3e-3 (Vyas et al.'s) and SAM's base SGD + momentum at
# SGD + momentum's 1e-2.
DEFAULT_LR = dict(sgd=1e-2, momentum=1e-2, nesterov=1e-2, adagrad=1e-2,
                  rmsprop=1e-3, adadelta=1.0, adam=1e-3, nadam=2e-3, adamw=1e-3,
                  muon=2e-2, schedule_free_adamw=2.5e-3, prodigy=1.0, soap=3e-3,
                  sam=1e-2)


SCALES = ('smoke', 'modern', 'reference', 'paper')  # besides the default (no scale)


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 3
  c.models = 'mnist1d_mlp'              # the sweep's models (comma-separated; '' for none)
  c.optimizers = ','.join(OPTIMIZERS)
  c.modern_optimizers = ''              # a subset of MODERN_OPTIMIZERS (see the modern scale)
  c.default_lr = ml_collections.ConfigDict(DEFAULT_LR)
  c.lr_factors = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)   # 1.0: the usual default
  c.modern_lr_factors = (1 / 3, 1.0, 3.0)
  c.momentum = 0.9                      # for 'momentum', 'nesterov' and SAM's base
  c.adamw_weight_decay = 1e-2           # PyTorch's default (optax's is 1e-4)
  c.sam_rho = 0.05                      # SAM's radius (Foret et al.'s default)
  # Arms whose replicas run one after another in their grid's program
  # (config.train.replica_loop='map' for them) rather than vmapped: SOAP
  # refreshes its bases in a lax.switch on its step count, which vmap turns
  # into every branch (eigh and QR of every side) at every step; on the CPU
  # the vmapped SOAP grid also hung inside XLA (jax 0.10.2).
  c.map_replicas = 'soap'
  c.num_steps = 3000
  c.log_every = 50                      # steps between logged minibatch losses

  # The MNIST-1D paper's setting (Greydanus, 2020, train.py get_model_args):
  # Adam, learning rate 1e-2, no weight decay, batch 100, 8000 steps, on the
  # whole training split (no validation carved out).
  c.reference = ml_collections.ConfigDict(dict(
      models='mnist1d_mlp', learning_rate=1e-2, batch_size=100, num_steps=8000,
      num_seeds=3))

  c.data = data_lib.default_config()
  c.data.name = 'mnist1d'
  c.data.seed = 0                       # the validation split and the data order
  c.data.batch_size = 100
  c.data.validation_count = 500         # carved from the 4000 training examples

  # eval_batch_size 500 divides every split: one compiled eval shape. A grid
  # counts a step as non-finite when any of its replicas is, so the default
  # lets a grid run on past a diverging rate (that replica is reported as
  # diverged); a smaller value stops the whole grid, all reported diverged.
  c.train = common.study_train_config(eval_batch_size=500, eval_every=250,
                                      steps_per_dispatch=50, checkpoint_every=1000,
                                      max_nonfinite_in_row=1_000_000)

  if arg == 'smoke':
    c.num_seeds = 1
    c.optimizers = 'sgd,adam'
    c.lr_factors = (1.0, 10.0)
    c.num_steps = 100
    c.log_every = 10
    c.train.eval_every = 50
    c.train.steps_per_dispatch = 10
    c.train.checkpoint_every = 50
    c.train.tensorboard = False
    c.reference.num_steps = 100
    c.reference.num_seeds = 1
  elif arg == 'modern':
    c.models = ','.join(MODELS)
    c.optimizers = 'momentum,adam'
    c.lr_factors = c.modern_lr_factors
    c.modern_optimizers = ','.join(MODERN_OPTIMIZERS)
    c.reference.models = ''
  elif arg == 'reference':
    c.models = ''
    c.reference.models = ','.join(MODELS)
  elif arg == 'paper':
    c.models = ','.join(MODELS)
    c.num_steps = 8000
    c.train.eval_every = 500
    c.reference.models = ','.join(MODELS)
  elif arg not in (None, ''):
    raise ValueError(
        f'optimizers_compared: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
        'or none for the default.')
  return c
