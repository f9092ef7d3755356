"""Training and generalization error: capacity, sample size, model selection, weight decay.

Scales: ``smoke`` (seconds: two seeds, short runs), default (minutes on a CPU:
five seeds). Sizes and rates follow Dive into Deep Learning (section 4.4 of
the 0.17 edition for the polynomial, 3.7 for weight decay), except where the
comments say why not.
"""

import ml_collections


SCALES = ('smoke',)  # besides the default (no scale)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seeds = 5  # data (training set, test set) and initialization
  config.noise = 0.1  # y = 5 + 1.2 x - 3.4 x^2/2! + 5.6 x^3/3! + noise * eps
  # Part 1: polynomial fits of each degree on few and on many samples.
  config.capacity = ml_collections.ConfigDict(dict(
      degrees=(1, 3, 20),
      few=10,
      many=1000,
      num_test=1000,
      # Minibatch SGD from zero. The textbook's 0.01 for 400 epochs leaves the
      # 10-sample fits far from converged; 0.2 is stable (the largest Hessian
      # eigenvalue of these features is below 5) and 20000 updates let
      # degree 20 fit the noise.
      steps=20000,
      batch_size=10,  # 0: the whole training set
      learning_rate=0.2,
      num_points=100,  # points on each loss curve
  ))
  # Part 2: on few samples, choose the weight decay of the degree-20 model,
  # and the degree without weight decay, by a holdout validation set and by
  # K-fold cross-validation.
  config.selection = ml_collections.ConfigDict(dict(
      degree=20,
      num_train=20,
      num_test=1000,
      weight_decays=(0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0),
      degrees=(1, 2, 3, 4, 6, 10, 20),
      validation_fraction=0.25,
      num_folds=5,
      steps=20000,
      batch_size=0,  # full batch: a fold holds only 16 examples
      learning_rate=0.2,
  ))
  # Part 3: weight decay on high-dimensional linear regression, d = 200,
  # n = 20 (the textbook: batch 5, rate 0.003, 100 epochs, w ~ N(0, 1)).
  config.weight_decay = ml_collections.ConfigDict(dict(
      input_dim=200,
      num_train=20,
      num_test=100,
      noise=0.01,
      weight_decays=(0.0, 0.1, 0.3, 1.0, 3.0, 10.0),
      steps=400,
      batch_size=5,
      learning_rate=0.003,
      init_std=1.0,
      num_points=100,
  ))
  if arg == 'smoke':
    config.seeds = 2
    config.capacity.many = 200
    config.selection.steps = 5000
    config.selection.weight_decays = (0.0, 1e-2, 1.0)
    config.selection.degrees = (1, 3, 20)
    config.weight_decay.weight_decays = (0.0, 3.0)
  elif arg not in (None, ''):
    raise ValueError(f'generalization: unknown scale {arg!r}; allowed: smoke or none.')
  return config
