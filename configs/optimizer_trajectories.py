"""Optimizer trajectories on the textbook quadratic and on Rosenbrock.

Scales: ``smoke`` (seconds, a few optimizers), default (every optimizer).
"""

import ml_collections


SCALES = ('smoke',)  # besides the default (no scale)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  # f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2), 20 steps (Dive into Deep Learning,
  # chapter on optimization algorithms).
  config.textbook = ml_collections.ConfigDict(dict(steps=20, start=(-5.0, -2.0)))
  # Rosenbrock (1 - x)^2 + 100 (y - x^2)^2 from (-1.5, 2): every optimizer,
  # or a comma-separated subset of names.
  config.rosenbrock = ml_collections.ConfigDict(dict(
      steps=2000, start=(-1.5, 2.0), optimizers='all',
      learning_rates=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
  ))
  if arg == 'smoke':
    config.rosenbrock.steps = 100
    config.rosenbrock.optimizers = 'sgd,adam,rmsprop,lbfgs'
    config.rosenbrock.learning_rates = (1e-3, 1e-2)
  elif arg not in (None, ''):
    raise ValueError(f'optimizer_trajectories: unknown scale {arg!r}; allowed: smoke or none.')
  return config
