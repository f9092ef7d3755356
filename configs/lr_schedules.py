"""Learning-rate schedules: every curve on one grid, and a short MNIST-1D race.

Scales: ``smoke`` (seconds: two arms, two seeds, a few epochs), default
(minutes on a CPU: six arms, three seeds, 60 epochs).

``schedules`` holds the parameters of the source notes, in epochs and as
multiples of the initial rate, so the grid (``grid.eta0 = 0.01``, as in the
notes' Keras examples) and the race (``race.eta0``) use the same shapes.

The race evaluates once per epoch (performance scheduling observes the
validation loss then), so ``train`` has no ``eval_every``; its run lengths
come from ``race.epochs`` and ``log_every``, its batch size from ``data``.
"""

import ml_collections

from configs import common


SCALES = ('smoke',)  # besides the default (no scale)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.schedules = ml_collections.ConfigDict(dict(
      # Power: eta0 / (1 + t/k)^c. Keras' SGD(lr=0.01, decay=1e-4) has
      # k = 1e4 steps, about 6 epochs of Fashion-MNIST at batch 32.
      power_k_epochs=6.0,
      power_c=1.0,
      # Exponential: eta0 * 0.1^(t/s), the notes' 0.01 * 0.1**(epoch / 20).
      exponential_s_epochs=20.0,
      # Piecewise constant: 0.01, then 0.005 from epoch 5, 0.001 from epoch 15.
      piecewise_epochs=(5, 15),
      piecewise_scales=(1.0, 0.5, 0.1),
      # Performance scheduling: Keras ReduceLROnPlateau(factor=0.5, patience=5)
      # on the validation loss, one observation per epoch.
      plateau_factor=0.5,
      plateau_patience=5,
      plateau_cooldown=0,
      # Cyclic cosine annealing (snapshot ensembles, Huang et al. 2017): M cycles.
      cyclic_num_cycles=3,
      # SGDR (Loshchilov & Hutter 2017): T_0 = 10 epochs, T_mult = 2.
      sgdr_t0_epochs=10,
      sgdr_t_mult=2.0,
      # Warmup for the warmup-cosine and warmup-exponential schedules.
      warmup_epochs=5,
      # 1cycle (Smith & Topin): peak = eta0 * onecycle_peak, optax's defaults.
      onecycle_peak=1.0,
      onecycle_pct_start=0.3,
  ))
  # The grid: every schedule over a common horizon.
  config.grid = ml_collections.ConfigDict(dict(
      eta0=0.01, epochs=100, steps_per_epoch=100, names='all',
  ))
  # The race on MNIST-1D: the MLP 40-100-100-10 (research.models'
  # 'mnist1d_mlp'), SGD with momentum; the seeds of an arm train as one
  # vmapped grid (performance scheduling: one run per seed).
  config.race = ml_collections.ConfigDict(dict(
      arms='constant,power,exponential,piecewise,performance,cyclic_cosine',
      model='mnist1d_mlp',
      eta0=0.05,
      momentum=0.9,
      epochs=60,
      seeds=3,  # initialisations; every seed sees the same batches
  ))
  # MNIST-1D: the validation set is carved from its 4000 training examples;
  # ``seed`` draws that split and the order of the batches.
  config.data = ml_collections.ConfigDict(dict(
      batch_size=100, validation_count=1000, seed=0))
  config.log_every = 10  # steps between logged losses and learning rates
  config.train = common.study_train_config(steps_per_dispatch=10, checkpoint_every=600)
  del config.train['eval_every']  # once per epoch: set by the study
  if arg == 'smoke':
    config.grid.epochs = 30
    config.grid.steps_per_epoch = 10
    config.schedules.plateau_patience = 1
    config.race.arms = 'exponential,performance'
    config.race.epochs = 6
    config.race.seeds = 2
    config.train.checkpoint_every = 60  # 2 epochs
    config.train.tensorboard = False
  elif arg not in (None, ''):
    raise ValueError(f'lr_schedules: unknown scale {arg!r}; allowed: '
                     f'{", ".join(SCALES)}, or none for the default.')
  return config
