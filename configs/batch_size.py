"""Minibatch size: SGD with batches of 1, 10, 100 and the full set on linear regression.

Scales: ``smoke`` (seconds: three epochs, one seed), default (a minute or two on
a CPU: three seeds). The textbook's comparison (Dive into Deep Learning,
section 11.5, on the 1500-example airfoil set with 5 features), here on
synthetic linear regression of the same size.
"""

import ml_collections


SCALES = ('smoke',)  # besides the default (no scale)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seeds = 3  # data, batch order
  # y = 0.05 + 0.01 sum_i x_i + noise * eps, x ~ N(0, I_5) (synthetic:linear_highdim),
  # then input column j scaled by s_j from 1 to 1/sqrt(condition_number): with
  # isotropic inputs gradient descent at rate 1 would be Newton's method and
  # finish in one update.
  config.data = ml_collections.ConfigDict(dict(
      num_train=1500, input_dim=5, noise=0.01, condition_number=10.0))
  # One arm per batch size ('full': the whole training set, i.e. gradient
  # descent), each with the textbook's learning rate for it.
  config.batch_sizes = '1,10,100,full'
  config.learning_rates = (0.005, 0.05, 0.4, 1.0)
  config.epochs = 10
  config.points_per_epoch = 10  # training-loss measurements per epoch
  # How updates are dispatched: 'scan' runs the updates between two
  # measurements in one compiled call (the cost of the arithmetic); 'step'
  # calls a compiled step per update from Python (adds the per-call overhead,
  # as the textbook's loop does).
  config.dispatch = 'scan,step'
  config.timing_repeats = 5  # each run repeated; the median time of each stretch
  if arg == 'smoke':
    config.seeds = 1
    config.epochs = 3
    config.timing_repeats = 3  # a shared CPU stalls now and then
  elif arg not in (None, ''):
    raise ValueError(f'batch_size: unknown scale {arg!r}; allowed: smoke or none.')
  return config
