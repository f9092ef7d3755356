"""Sharpness, flat minima and the edge of stability (MNIST-1D).

Three parts (``parts``), each a set of resumable runs:
  eos        full-batch GD (and Adam) on the first ``eos.num_train`` training
             examples, tanh MLP 2 x 200, squared loss; the top Hessian
             eigenvalue every ``eos.measure_every`` steps until
             ``eos.target_accuracy`` (Cohen et al., 2021; 2022).
  flat       small vs large batch and SAM vs SGD on the MNIST-1D MLP and CNN,
             ``flat.num_seeds`` seeds: top eigenvalue, Hutchinson trace, test
             error (Keskar et al., 2017; Foret et al., 2021).
  landscape  filter-normalized 1-D/2-D slices around a trained CNN and the
             loss barrier between consecutive snapshots of a snapshot run and
             between independently trained models (Li et al., 2018).

``config.data`` has no batch size: each part names its own.

Scales:
  smoke      seconds; used by the tests.
  (default)  a few minutes on a 2-core CPU.
  paper      the longer protocol (4000 examples, more step sizes, 5 seeds,
             finer grids) for an accelerator.
"""

import ml_collections

from configs import common
from research import data as data_lib
from research import models

SCALES = ('smoke', 'paper')  # besides the default


def _eos_model() -> ml_collections.ConfigDict:
  """Cohen et al.'s fully connected tanh network: 2 hidden layers of 200."""
  m = models.default_config('mlp')
  m.input_shape = (40,)
  m.depth = 2
  m.width = 200
  m.activation = 'tanh'
  return m


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.parts = 'eos,flat,landscape'
  c.log_every = 100                 # training metrics of the Trainer runs

  c.data = data_lib.default_config()
  c.data.name = 'mnist1d'
  del c.data['batch_size']

  c.eos = ml_collections.ConfigDict(dict(
      num_train=1000,               # the fixed training subset: the first examples
      model=_eos_model(),
      optimizers='gd,adam',
      etas=(2.0 / 30, 2.0 / 20),    # GD step sizes: 2 / eta = 30, 20
      adam_etas=(5e-3,),
      adam_steps=600,               # Adam's run length; 0: stop at target_accuracy as GD
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=1e-7,
      measure_every=20,             # k: steps between two Lanczos runs
      lanczos_order=20,
      target_accuracy=0.99,
      max_steps=4000,               # a run that has not reached the target stops here
  ))

  c.flat = ml_collections.ConfigDict(dict(
      models='mnist1d_mlp,mnist1d_cnn',
      arms='small_batch,large_batch,sam',
      small_batch=32,
      large_batch=400,              # 10 % of the training set, as Keskar et al.
      learning_rate=0.05,
      cosine_decay=True,            # the rate decays to 0 over num_steps (every arm converges)
      momentum=0.9,
      sam_rho=0.05,
      num_steps=2000,               # updates of every arm (SAM: two gradients each)
      num_seeds=3,
      hessian_examples=1000,        # training examples of the Hessian's loss
      lanczos_order=20,
      trace_probes=20,
      curve_points=21,              # 1-D filter-normalized slice, alpha in [-1, 1]
  ))

  c.landscape = ml_collections.ConfigDict(dict(
      model=models.default_config('mnist1d_cnn'),
      batch_size=64,
      budget_steps=3000,            # B of the cyclic schedule
      num_snapshots=3,              # M
      learning_rate=0.1,            # alpha_0
      momentum=0.9,
      weight_decay=1e-4,
      direction='filter',           # 'filter' | 'layer' | 'none'
      ignore='biasbn',              # biases and BatchNorm: 'biasbn' (zero) | 'none'
      span=1.0,                     # slices over alpha, beta in [-span, span]
      points_1d=41,
      points_2d=21,
      interpolation_points=21,
      loss_examples=1000,
  ))

  c.train = common.study_train_config(steps_per_dispatch=50, checkpoint_every=1000)

  if arg == 'smoke':
    c.log_every = 10
    c.eos.num_train = 200
    c.eos.model.width = 32
    c.eos.etas = (0.1,)
    c.eos.adam_etas = (1e-3,)
    c.eos.measure_every = 10
    c.eos.lanczos_order = 8
    c.eos.max_steps = 40
    c.eos.adam_steps = 30
    c.flat.models = 'mnist1d_mlp'
    c.flat.num_steps = 20
    c.flat.num_seeds = 2
    c.flat.large_batch = 256
    c.flat.hessian_examples = 200
    c.flat.lanczos_order = 6
    c.flat.trace_probes = 4
    c.flat.curve_points = 5
    c.landscape.model.channels = 8
    c.landscape.budget_steps = 30
    c.landscape.points_1d = 5
    c.landscape.points_2d = 3
    c.landscape.interpolation_points = 5
    c.landscape.loss_examples = 200
    c.train.steps_per_dispatch = 10
    c.train.checkpoint_every = 20
    c.train.tensorboard = False
  elif arg == 'paper':
    c.eos.num_train = 4000
    c.eos.etas = (2.0 / 60, 2.0 / 40, 2.0 / 30, 2.0 / 20)
    c.eos.adam_etas = (1e-3, 2e-3, 5e-3)
    c.eos.adam_steps = 3000
    c.eos.measure_every = 10
    c.eos.max_steps = 40000
    c.flat.num_steps = 10000
    c.flat.num_seeds = 5
    c.flat.hessian_examples = 4000
    c.flat.lanczos_order = 40
    c.flat.trace_probes = 100
    c.flat.curve_points = 41
    c.landscape.budget_steps = 15000
    c.landscape.num_snapshots = 5
    c.landscape.points_1d = 81
    c.landscape.points_2d = 51
    c.landscape.interpolation_points = 41
    c.landscape.loss_examples = 4000
  elif arg not in (None, ''):
    raise ValueError(f'sharpness: unknown scale {arg!r}; allowed: {", ".join(SCALES)}, '
                     'or none for the default.')
  return c
