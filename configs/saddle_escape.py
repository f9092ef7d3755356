"""Escaping saddle points: test functions, a strict saddle in d dimensions, a
chain of saddles, and the Hessian spectrum of an MLP along training.

Scales: ``smoke`` (seconds: few optimizers, starts and steps), default (a few
minutes on a 2-core CPU).
"""

import ml_collections

ALL_OPTIMIZERS = ('gd,momentum,nesterov,adagrad,rmsprop,adam,noisy_sgd,'
                  'perturbed_gd,saddle_free_newton,newton')


SCALES = ('smoke',)  # besides the default (no scale)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Comma-separated names; see experiments/saddle_escape.py for the settings.
  config.optimizers = ALL_OPTIMIZERS
  # Learning rates (the other hyperparameters are the library defaults, except
  # where experiments/saddle_escape.py says otherwise). gd's 0.1 is stable up
  # to curvature 20 (5x^2 - y^2 has 10).
  config.lr = ml_collections.ConfigDict(dict(
      gd=0.1, momentum=0.1, nesterov=0.1, adagrad=0.1, rmsprop=0.01, adam=0.01,
      noisy_sgd=0.1, perturbed_gd=0.1, saddle_free_newton=0.5, newton=1.0,
  ))
  # Perturbed GD (Jin et al., 2017) and the curvature methods.
  config.perturbed = ml_collections.ConfigDict(
      dict(g_thres=1e-3, t_thres=50, radius=1e-2))
  config.curvature = ml_collections.ConfigDict(dict(
      sfn_damping=1e-3, newton_damping=0.0,
      exact_max_dim=10,  # full Hessian up to this d; Krylov (Lanczos) above
      krylov_order=5,
  ))
  # Escape: the first step at which ||x - x*|| >= radius and f(x) < f(x*).
  config.escape = ml_collections.ConfigDict(
      dict(num_starts=32, steps=3000, radius=0.5))
  # Starts at these distances from the saddle, in uniformly random directions
  # (0: exactly at the saddle).
  config.distances = (1e-1, 1e-3, 1e-5, 1e-7, 0.0)
  # 2-D test functions of the distance sweep.
  config.functions = 'saddle,saddle_5,monkey,double_well'
  # The strict saddle x^T diag(lambda) x / 2: k = num_negative eigenvalues
  # -negative, the others +positive; escape over every d and distance.
  config.strict = ml_collections.ConfigDict(dict(
      dims=(2, 10, 100, 1000), num_negative=1, negative=0.1, positive=1.0,
      reference_distance=1e-5,  # the column of the escape-against-d table
  ))
  # The chain of saddles (see saddle_chain in the study): dim saddles in turn.
  config.chain = ml_collections.ConfigDict(dict(
      dim=4, coupling=1.0, tau=0.1, distance=1e-3, steps=4000, num_starts=16))
  # The 2-D trajectories figure: one extra start per function.
  config.trajectory = ml_collections.ConfigDict(
      dict(steps=400, distance=0.1, angle=0.2))
  # MNIST-1D MLP (40-100-100-10, ReLU, skip around the second layer): train
  # with each optimizer; Hessian by Lanczos at checkpoints on a fixed batch.
  config.network = ml_collections.ConfigDict(dict(
      enabled=True, optimizers='sgd,adam', lr_sgd=0.1, lr_adam=1e-3,
      width=100, steps=2000, batch_size=100, checkpoints=8,
      hessian_batch=1000, lanczos_order=40, num_draws=3,
      # Index: the fraction of eigenvalues below -index_tol_rel * lambda_max.
      index_tol_rel=1e-3,
      density_sigma=0.02,  # Gaussian width, relative to the spectrum's width
      exact_max_params=2000,  # also the exact spectrum (eigh) up to this size
  ))
  if arg == 'smoke':
    config.optimizers = 'gd,perturbed_gd,saddle_free_newton,newton'
    config.escape.num_starts = 4
    config.escape.steps = 300
    config.distances = (1e-2, 1e-6, 0.0)
    config.functions = 'saddle_5'
    config.strict.dims = (2, 10)
    config.strict.negative = 1.0
    config.strict.reference_distance = 1e-2
    config.chain.dim = 2
    config.chain.steps = 300
    config.chain.num_starts = 2
    config.chain.distance = 1e-2
    config.trajectory.steps = 50
    config.network.width = 8  # 490 parameters: the exact spectrum (eigh) is cheap
    config.network.steps = 40
    config.network.checkpoints = 1
    config.network.hessian_batch = 100
    config.network.lanczos_order = 8
    config.network.num_draws = 1
  elif arg not in (None, ''):
    raise ValueError(f'saddle_escape: unknown scale {arg!r}; allowed: smoke or none.')
  return config
