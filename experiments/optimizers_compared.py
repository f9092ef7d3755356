"""Optimizers on MNIST-1D: at their usual defaults and over a rate sweep.

For each model in ``models`` and each optimizer (SGD, SGD with momentum, SGD
with Nesterov momentum, AdaGrad, RMSProp, AdaDelta, Adam, Nadam, AdamW; and
the modern ones of ``modern_optimizers``: Muon, schedule-free AdamW,
Prodigy, SOAP, SAM) the study trains one run per learning rate
``default_lr[opt] * factor`` and seed, from the same initialization for every
optimizer and rate of a seed (paired comparisons).

Each optimizer's sweep (rates x seeds) is ONE training run: a grid of
replicas trained as one vmapped program (``state.create_replicas``), with
the learning rate in the optimizer state (``optim.make`` /
``inject_hyperparams``), in its own folder ``runs/sweep_<model>_<optimizer>``
with checkpoints, metrics.jsonl and TensorBoard; a killed study resumes it
and skips the finished ones. Every replica of every grid sees the same
batches in the same order (fixed by ``data.seed``): seeds differ in the
initialization only.

The best rate of each optimizer is the one with the highest validation
accuracy (mean over seeds; a validation set is carved from the training
split), and its test accuracy is what the tables report: choosing on the
test set would flatter every optimizer. A replica counts as diverged when
its step was still skipped as non-finite at the last logged step, or its
final evaluation is not finite.

The modern optimizers, where they need more than an update:
  muon                 ``optim.contrib.muon``: Muon for every kernel (a
                       convolution's (width, in, out) kernel as the matrix
                       (width * in) x out), Adam at the same rate for the
                       biases.
  schedule_free_adamw  trains the sequence y but is evaluated at the
                       average x = ``schedule_free_eval_params(state, y)``;
                       its run is fit in chunks ending at the evaluation
                       steps, each evaluated at x (recorded in the run's
                       folder, so a resumed run keeps them).
  sam                  ``optim.contrib.sam`` around SGD + momentum with the
                       ascent ``chain(normalize(), sgd(sam_rho))``, in its
                       transparent mode: one call ascends to w + rho g/|g|,
                       the next takes the gradient there and steps from w.
                       SAM takes both gradients on the SAME minibatch, so its
                       loader gives every batch twice; its Trainer runs two
                       steps per SAM step (``num_steps``, ``log_every`` and
                       ``train.eval_every`` doubled: the same number of
                       updates and batches as the others, twice the
                       gradients); its curves are in SAM steps and its
                       logged minibatch loss is the loss at the adversarial
                       point (SAM's objective).

The MNIST-1D paper's reference setting (Adam, learning rate 1e-2, batch 100,
8000 steps, the whole training split) runs separately (one grid of seeds per
model in ``reference.models``); its test accuracy is set beside the paper's.

Outputs: ``results.md``, ``results.json``, ``loss_curves_<model>.png`` (the
training loss of every rate of every optimizer), ``best_curves_<model>.png``
(each optimizer at its best rate), ``lr_sweep_<model>.png`` (accuracy
against the learning rate) and ``reference.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from configs.optimizers_compared import MODELS, MODERN_OPTIMIZERS, OPTIMIZERS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.data import mnist1d_data
from research.train import state as state_lib
from research.train import trainer as trainer_lib

# Test accuracy reported by the MNIST-1D paper on the default data set
# (Greydanus, Scaling down deep learning, 2020, Table of baselines).
PAPER_ACCURACY = {'mnist1d_mlp': 0.68, 'mnist1d_cnn': 0.94}
LABELS = dict(sgd='SGD', momentum='SGD + momentum', nesterov='SGD + Nesterov',
              adagrad='AdaGrad', rmsprop='RMSProp', adadelta='AdaDelta', adam='Adam',
              nadam='Nadam', adamw='AdamW', muon='Muon (+ Adam)',
              schedule_free_adamw='Schedule-free AdamW', prodigy='Prodigy', soap='SOAP',
              sam='SAM (SGD + momentum)')
_DATA_SETS = ('mnist1d', 'mnist1d_shuffled')
EVAL_PARAMS_FILE = 'evals_at_eval_params.json'


def _num_train() -> int:
  a = mnist1d_data.MNIST1D_ARGS
  return int(a['num_samples'] * a['train_split'])


# --- config checks ---------------------------------------------------------------

def _check_factors(field: str, factors) -> None:
  factors = tuple(factors)
  common.require(len(factors) >= 1 and all(f > 0 for f in factors), field, factors,
                 'one or more values > 0')
  common.require(len(set(factors)) == len(factors), field, factors, 'no repeats')


def validate(config) -> None:
  c = config
  sweep_models = common.split_names(c.models)
  ref_models = common.split_names(c.reference.models)
  common.require_choices('models', sweep_models, MODELS)
  common.require_choices('reference.models', ref_models, MODELS)
  common.require(bool(sweep_models or ref_models), 'models', c.models,
                 'at least one model here or in reference.models')
  opts = common.split_names(c.optimizers)
  modern = common.split_names(c.modern_optimizers)
  common.require_choices('optimizers', opts, OPTIMIZERS)
  common.require_choices('modern_optimizers', modern, MODERN_OPTIMIZERS)
  common.require_choices('map_replicas', common.split_names(c.map_replicas),
                         OPTIMIZERS + MODERN_OPTIMIZERS)
  common.require(bool(opts or modern) or not sweep_models, 'optimizers', c.optimizers,
                 'a comma-separated subset of ' + ', '.join(OPTIMIZERS)
                 + ' (or modern_optimizers)')
  common.require(len(set(opts)) == len(opts), 'optimizers', c.optimizers, 'no repeats')
  common.require(len(set(modern)) == len(modern), 'modern_optimizers', c.modern_optimizers,
                 'no repeats')
  for name in OPTIMIZERS + MODERN_OPTIMIZERS:
    common.require(c.default_lr[name] > 0, f'default_lr.{name}', c.default_lr[name], '> 0')
  _check_factors('lr_factors', c.lr_factors)
  _check_factors('modern_lr_factors', c.modern_lr_factors)
  common.require(0 <= c.momentum < 1, 'momentum', c.momentum, '[0, 1)')
  common.require(c.adamw_weight_decay >= 0, 'adamw_weight_decay', c.adamw_weight_decay, '>= 0')
  common.require(c.sam_rho > 0, 'sam_rho', c.sam_rho, '> 0')
  common.require(c.seed >= 0, 'seed', c.seed, '>= 0')
  common.require(c.num_seeds >= 1, 'num_seeds', c.num_seeds, '>= 1')
  common.require(c.num_steps >= 1, 'num_steps', c.num_steps, '>= 1')
  common.require(c.log_every >= 1, 'log_every', c.log_every, '>= 1')
  n = _num_train()
  d = c.data
  count = d.validation_count
  common.require(count is not None and 1 <= count <= n - 1, 'data.validation_count', count,
                 f'[1, {n - 1}] (MNIST-1D has {n} training examples)')
  common.require(not d.validation_fraction and d.num_folds is None, 'data.validation_fraction',
                 d.validation_fraction, '0 with no num_folds (the holdout is '
                 'data.validation_count)')
  common.require(1 <= d.batch_size <= n - count, 'data.batch_size', d.batch_size,
                 f'[1, {n - count}] (the training examples left after the validation set)')
  common.require(d.num_train is None, 'data.num_train', d.num_train, 'None (the whole split)')
  r = c.reference
  common.require(r.learning_rate > 0, 'reference.learning_rate', r.learning_rate, '> 0')
  common.require(1 <= r.batch_size <= n, 'reference.batch_size', r.batch_size, f'[1, {n}]')
  common.require(r.num_steps >= 1, 'reference.num_steps', r.num_steps, '>= 1')
  common.require(r.num_seeds >= 1, 'reference.num_seeds', r.num_seeds, '>= 1')
  common.require(d.name in _DATA_SETS, 'data.name', d.name, ', '.join(_DATA_SETS))
  trainer_lib.validate_config(c.train)


# --- optimizers --------------------------------------------------------------------

# name -> optim.make's name and arguments besides the learning rate.
_MAKE = dict(
    sgd=lambda c: ('sgd', {}),
    momentum=lambda c: ('sgd', dict(momentum=float(c.momentum))),
    nesterov=lambda c: ('sgd', dict(momentum=float(c.momentum), nesterov=True)),
    adagrad=lambda c: ('adagrad', {}),
    rmsprop=lambda c: ('rmsprop', {}),
    adadelta=lambda c: ('adadelta', {}),
    adam=lambda c: ('adam', {}),
    nadam=lambda c: ('nadam', {}),
    adamw=lambda c: ('adamw', dict(weight_decay=float(c.adamw_weight_decay))),
)


def _muon_dims(params):
  """Every kernel is a Muon matrix (a convolution's (width, in, out) as
  (width * in) x out); biases go to Adam."""
  def dims(x):
    if x.ndim < 2:
      return None
    return optim.contrib.MuonDimensionNumbers(tuple(range(x.ndim - 1)), x.ndim - 1)
  return jax.tree.map(dims, params)


def _sam(learning_rate, momentum, rho):
  """SAM around SGD + momentum (Foret et al.): the ascent is rho g / |g|."""
  return optim.contrib.sam(optim.sgd(learning_rate, momentum=momentum),
                           optim.chain(optim.contrib.normalize(), optim.sgd(rho)),
                           sync_period=2)


# The modern optimizers (not aliases of optim.make): name -> (factory, its
# float arguments besides the learning rate), with the defaults of the
# factory for everything else. inject_hyperparams puts the floats in the
# state, so that rates differ per replica in one program.
_MODERN = dict(
    muon=lambda c: (functools.partial(optim.contrib.muon,
                                      muon_weight_dimension_numbers=_muon_dims), {}),
    schedule_free_adamw=lambda c: (optim.contrib.schedule_free_adamw, {}),
    prodigy=lambda c: (optim.contrib.prodigy, {}),
    soap=lambda c: (optim.soap, {}),
    sam=lambda c: (_sam, dict(momentum=float(c.momentum), rho=float(c.sam_rho))),
)
# Trainer steps per update: SAM's two calls (ascent, then the step).
STEPS_PER_UPDATE = dict(sam=2)


def make_optimizer(config, name: str, learning_rate: float) -> optim.GradientTransformation:
  """The optimizer ``name`` with its learning rate held in its state (so a
  grid sets one rate per replica)."""
  if name in _MAKE:
    alias, kwargs = _MAKE[name](config)
    return optim.make(alias, float(learning_rate), **kwargs)
  factory, kwargs = _MODERN[name](config)
  return optim.inject_hyperparams(factory)(learning_rate=float(learning_rate), **kwargs)


def arms(config) -> list[str]:
  return common.split_names(config.optimizers) + common.split_names(config.modern_optimizers)


def factors_of(config, name: str) -> list[float]:
  return [float(f) for f in (config.modern_lr_factors if name in MODERN_OPTIMIZERS
                             else config.lr_factors)]


def learning_rates(config, name: str) -> list[float]:
  return [float(config.default_lr[name] * f) for f in factors_of(config, name)]


def _schedule_free_state(opt_state):
  found = [n for n in jax.tree.leaves(
      opt_state, is_leaf=lambda n: isinstance(n, optim.contrib.ScheduleFreeState))
           if isinstance(n, optim.contrib.ScheduleFreeState)]
  return found[0]


def schedule_free_eval_params(state):
  """The replicas' params to evaluate at: x from y and z, per replica."""
  return jax.vmap(optim.contrib.schedule_free_eval_params)(
      _schedule_free_state(state.opt_state), state.params)


# Arms whose params to evaluate are not the trained ones.
EVAL_PARAMS = dict(schedule_free_adamw=schedule_free_eval_params)


# --- training ------------------------------------------------------------------------

class EachBatchTwice:
  """A training loader whose batches come twice in a row (step ``t`` gets
  the loader's batch ``t // 2``): SAM's ascent and its step see the same
  minibatch."""

  def __init__(self, loader):
    self.loader = loader
    self.source, self.transform = loader.source, loader.transform
    self.batch_size, self.prefetch = loader.batch_size, loader.prefetch

  @staticmethod
  def _twice(items, start_step: int):
    for j, item in enumerate(items):
      if j or start_step % 2 == 0:
        yield item
      yield item

  def batches(self, start_step: int = 0):
    return self._twice(self.loader.batches(start_step // 2), start_step)

  def indices(self, start_step: int = 0):
    return self._twice(self.loader.indices(start_step // 2), start_step)


@dataclasses.dataclass
class Grid:
  """One training run: ``replicas[i] = (learning_rate, seed)`` trained at once."""
  name: str
  model: str
  optimizer: str
  tx: object
  num_steps: int
  replicas: list
  data: object            # a research.data.Dataset
  eval_sets: dict         # name -> {'x', 'y'}


def build_model(name: str):
  """``(module, init)``: ``init(key) -> variables`` (params, batch_stats)."""
  mc = models.default_config(name)
  module = models.build_model(mc)
  example = jnp.zeros((1,) + tuple(mc.input_shape), jnp.float32)

  def init(key):
    variables = module.init(key, example, train=False)
    return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
  return module, init


def grid_state(grid: Grid, model):
  """The grid's replicas: replica ``(lr, seed)`` starts from ``key(seed)``
  (the same initialization for every rate of a seed) with rate ``lr``."""
  module, init = model
  keys = jnp.stack([jax.random.key(seed) for _, seed in grid.replicas])
  return state_lib.create_replicas(
      apply_fn=module.apply, init_fn=init, tx=grid.tx, keys=keys,
      hyperparams=dict(learning_rate=[lr for lr, _ in grid.replicas]))


def eval_steps(num_steps: int, eval_every: int) -> list[int]:
  """The steps the Trainer evaluates at: every ``eval_every`` and the last."""
  steps = list(range(eval_every, num_steps, eval_every)) if eval_every else []
  return steps + [num_steps]


def _at(values, i: int) -> float:
  return float(np.asarray(values, np.float64).reshape(-1)[i])


def _fit_in_chunks(trainer, state, loader, grid, eval_params, folder, fit_kwargs):
  """Fits to each evaluation step in turn and evaluates there at
  ``eval_params(state)``; the evaluations are recorded in ``folder`` so a
  resumed run skips the chunks already evaluated (the Trainer resumes from
  the checkpoint written at each chunk's end)."""
  path = os.path.join(folder, EVAL_PARAMS_FILE)
  done = []
  if trainer.config.checkpoints and os.path.exists(path):
    with open(path) as f:
      done = json.load(f)
  ends = eval_steps(fit_kwargs.pop('num_steps'), trainer.config.eval_every)
  fit, seconds = None, 0.0
  for end in ends:
    recorded = any(e['step'] == end for e in done)
    if recorded and end != ends[-1]:
      continue
    fit = trainer.fit(state, loader, None, num_steps=end, **fit_kwargs)
    state = fit.state
    seconds += fit.wall_time - fit.compile_time
    if not recorded:
      at = state.replace(params=eval_params(state))
      done.append(dict(step=end, **{k: trainer.evaluate(at, v)
                                    for k, v in grid.eval_sets.items()}))
      common.write_json(path, done)
  return fit.history, done, seconds


def train_grid(config, grid: Grid, model, folder: str) -> dict:
  """Trains one grid in ``folder`` (resuming there) -> per rate, per seed,
  what the summaries need (see :func:`_replica_result`)."""
  k = STEPS_PER_UPDATE.get(grid.optimizer, 1)
  tc = config.train
  loader = grid.data.train
  if k != 1:  # SAM: two Trainer steps per update, each batch twice
    tc = tc.copy_and_resolve_references()
    tc.eval_every *= k
    loader = EachBatchTwice(loader)
  if grid.optimizer in common.split_names(config.map_replicas):
    tc = tc.copy_and_resolve_references()
    tc.replica_loop = 'map'
  # Through JSON (tuples as lists) as the Trainer saves it: its resume check
  # compares the two and would refuse a config holding tuples.
  run_config = json.loads(json.dumps(dict(run=grid.name, study=config.to_dict()),
                                     default=str))
  trainer = trainer_lib.Trainer(tc, folder, run_config=run_config)
  state = grid_state(grid, model)
  log_every = k * min(config.log_every, grid.num_steps)
  kwargs = dict(num_steps=k * grid.num_steps, log_every=log_every,
                name=f'{grid.name} ({len(grid.replicas)} replicas)')
  try:
    if grid.optimizer in EVAL_PARAMS:
      history, evals, seconds = _fit_in_chunks(trainer, state, loader, grid,
                                               EVAL_PARAMS[grid.optimizer], folder, kwargs)
    else:
      fit = trainer.fit(state, loader, grid.eval_sets, **kwargs)
      history, evals, seconds = fit.history, fit.evals, fit.wall_time - fit.compile_time
  except trainer_lib.NonFiniteError as e:  # the whole grid stopped
    return dict(stopped=str(e), runs=[dict(diverged=True) for _ in grid.replicas])
  # Rows written before a checkpoint between two logged steps are left out.
  total = k * grid.num_steps
  history = [h for h in history if h['step'] % log_every == 0 or h['step'] == total]
  seconds /= len(grid.replicas)
  return dict(runs=[_replica_result(history, evals, i, k, seconds)
                    for i in range(len(grid.replicas))])


def _replica_result(history, evals, i: int, k: int, seconds: float) -> dict:
  """One replica's run; a diverged one is reported as such only."""
  final = evals[-1]
  finals = {split: dict(loss=_at(final[split]['loss'], i),
                        accuracy=_at(final[split]['accuracy'], i))
            for split in final if split != 'step'}
  nonfinite = sum(_at(h['nonfinite'], i) > 0 for h in history)
  still = _at(history[-1]['nonfinite'], i) > 0
  if still or not all(np.isfinite(v) for f in finals.values() for v in f.values()):
    return dict(diverged=True, nonfinite_logged=nonfinite)
  splits = [s for s in final if s != 'step']
  return dict(
      diverged=False,
      nonfinite_logged=nonfinite,
      seconds=seconds,
      steps=[h['step'] // k for h in history],
      minibatch_loss=[_at(h['loss'], i) for h in history],
      eval_steps=[e['step'] // k for e in evals],
      curves={s: dict(loss=[_at(e[s]['loss'], i) for e in evals],
                      accuracy=[_at(e[s]['accuracy'], i) for e in evals])
              for s in splits},
      final=finals,
  )


def reference_data_config(config):
  """The reference protocol's data: the whole training split (no validation
  set) in batches of ``reference.batch_size``."""
  d = config.data.copy_and_resolve_references()
  d.validation_count = None
  d.batch_size = config.reference.batch_size
  return d


def _arrays(ds, splits) -> dict:
  return {s: dict(zip(('x', 'y'), ds.arrays(s))) for s in splits}


def sweep_grids(config, model_name: str, ds) -> list[Grid]:
  c = config
  seeds = [c.seed + i for i in range(c.num_seeds)]
  eval_sets = _arrays(ds, ('train', 'validation', 'test'))
  out = []
  for name in arms(c):
    rates = learning_rates(c, name)
    out.append(Grid(f'sweep_{model_name}_{name}', model_name, name,
                    make_optimizer(c, name, rates[0]), c.num_steps,
                    [(lr, s) for lr in rates for s in seeds], ds, eval_sets))
  return out


def reference_grid(config, model_name: str, ds) -> Grid:
  r = config.reference
  seeds = [config.seed + i for i in range(r.num_seeds)]
  return Grid(f'reference_{model_name}', model_name, 'adam',
              optim.make('adam', float(r.learning_rate)), r.num_steps,
              [(float(r.learning_rate), s) for s in seeds], ds, _arrays(ds, ('test',)))


def _per_rate(num_seeds: int, result: dict) -> list:
  """A sweep grid's runs as ``[rate][seed]``."""
  runs = result['runs']
  return [runs[j:j + num_seeds] for j in range(0, len(runs), num_seeds)]


# --- summaries ---------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _cell(runs: list, split: str, key: str = 'accuracy') -> dict:
  ok = [r for r in runs if not r['diverged']]
  return dict(mean_std=mean_std([r['final'][split][key] for r in ok]),
              diverged=len(runs) - len(ok))


def summarize_sweep(config, sweep: dict) -> dict:
  """Per optimizer: every rate's accuracies and the rate chosen on validation."""
  out = {}
  for name, per_rate in sweep.items():
    rates, factors = learning_rates(config, name), factors_of(config, name)
    cells = [dict(learning_rate=lr, factor=f, test=_cell(runs, 'test'),
                  validation=_cell(runs, 'validation'),
                  train_loss=_cell(runs, 'train', 'loss'))
             for lr, f, runs in zip(rates, factors, per_rate)]
    usable = [i for i, cell in enumerate(cells) if cell['validation']['diverged'] == 0]
    best = max(usable, key=lambda i: cells[i]['validation']['mean_std'][0]) if usable else None
    default = factors.index(1.0) if 1.0 in factors else None
    out[name] = dict(cells=cells, best=best, default=default)
  return out


def _pm(ms, scale=100.0, digits=1) -> str:
  if not np.isfinite(ms[0]):
    return 'diverged'
  return f'{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}'


def verdict_sweep(summary: dict, num_seeds: int) -> list[str]:
  """Which optimizers the seed spread separates, at their best rates."""
  ranked = [(name, s['cells'][s['best']]['test']['mean_std'])
            for name, s in summary.items() if s['best'] is not None]
  if not ranked:
    return ['- Every rate of every optimizer diverged: nothing to compare.']
  ranked.sort(key=lambda t: -t[1][0])
  top, (m0, s0) = ranked[0]
  lines = [f'- Best at its validation-chosen rate: {LABELS[top]}, test accuracy '
           f'{_pm((m0, s0))} %.']
  if num_seeds < 2:
    lines.append('- One seed: no spread, so no difference between optimizers is claimed.')
    return lines
  tied = [LABELS[n] for n, (m, s) in ranked[1:] if m0 - m <= np.hypot(s0, s)]
  behind = [f'{LABELS[n]} ({(m0 - m) * 100:.1f} points)' for n, (m, s) in ranked[1:]
            if m0 - m > np.hypot(s0, s)]
  if tied:
    lines.append('- Within the seed spread of the best (no claim of a difference): '
                 + ', '.join(tied) + '.')
  if behind:
    lines.append('- Behind the best by more than the seed spread: ' + ', '.join(behind) + '.')
  for word, pick in (('largest', max), ('smallest', min)):
    edge = [LABELS[n] for n, s in summary.items()
            if s['best'] is not None and len(s['cells']) > 1
            and s['cells'][s['best']]['factor'] == pick(c['factor'] for c in s['cells'])]
    if edge:
      lines.append(f'- The {word} rate of the grid was the best for ' + ', '.join(edge)
                   + ': their optimum may lie beyond it, so their best accuracy is a lower '
                   'bound.')
  for name, s in summary.items():
    if s['best'] is None or s['default'] is None:
      continue
    d = s['cells'][s['default']]['test']
    b = s['cells'][s['best']]['test']['mean_std']
    if d['diverged']:
      lines.append(f'- {LABELS[name]}: the default rate diverged; the sweep rescues it '
                   f'({_pm(b)} % at lr {s["cells"][s["best"]]["learning_rate"]:.3g}).')
      continue
    gain = b[0] - d['mean_std'][0]
    if gain > np.hypot(b[1], d['mean_std'][1]) and gain > 0:
      lines.append(f'- {LABELS[name]}: tuning the rate (to '
                   f'{s["cells"][s["best"]]["learning_rate"]:.3g}) gains {gain * 100:.1f} '
                   'points over its default, beyond the seed spread.')
  return lines


def summarize_reference(config, runs: dict) -> dict:
  out = {}
  for model_name, per_seed in runs.items():
    cell = _cell(per_seed, 'test')
    out[model_name] = dict(
        test=cell, per_seed=[None if r['diverged'] else r['final']['test']['accuracy']
                             for r in per_seed],
        paper=PAPER_ACCURACY[model_name])
  return out


def verdict_reference(summary: dict) -> list[str]:
  lines = []
  for model_name, s in summary.items():
    m, sd = s['test']['mean_std']
    diff = (m - s['paper']) * 100
    lines.append(
        f'- {model_name}: measured {_pm((m, sd))} % against the paper\'s ~{s["paper"] * 100:.0f} % '
        f'({diff:+.1f} points; the paper gives one number without a spread).')
  return lines


# --- figures -----------------------------------------------------------------------

def _mean_curve(runs, split, key):
  ok = [r for r in runs if not r['diverged']]
  if not ok:
    return None, None, None
  a = np.array([r['curves'][split][key] for r in ok], np.float64)
  return np.asarray(ok[0]['eval_steps']), a.mean(0), a.std(0)


def _figures(workdir, config, sweeps, sweep_summary, reference):
  for model_name, sweep in sweeps.items():
    names = list(sweep)
    rows, cols = common.grid_shape(len(names), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False,
                             sharex=True)
    for ax, name in zip(axes.flat, names):
      factors = factors_of(config, name)
      colors = plt.cm.viridis(np.linspace(0, 0.9, len(factors)))
      for j, (f, runs) in enumerate(zip(factors, sweep[name])):
        steps, mean, _ = _mean_curve(runs, 'train', 'loss')
        if mean is not None:
          ax.plot(steps, mean, color=colors[j],
                  label=f'lr {config.default_lr[name] * f:.3g}', lw=2 if f == 1.0 else 1)
      ax.set_yscale('log')
      ax.set_title(LABELS[name], fontsize=9)
      ax.legend(fontsize=6)
    for ax in axes.flat[len(names):]:
      ax.axis('off')
    for ax in axes[-1]:
      ax.set_xlabel('step')
    for ax in axes[:, 0]:
      ax.set_ylabel('training loss (whole split)')
    fig.suptitle(f'{model_name}: training loss, mean over {config.num_seeds} seed(s) '
                 '(thick: the usual default rate)', fontsize=10)
    common.save_figure(fig, os.path.join(workdir, f'loss_curves_{model_name}.png'))

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
      s = sweep_summary[model_name][name]
      if s['best'] is None:
        continue
      runs = sweep[name][s['best']]
      lr = s['cells'][s['best']]['learning_rate']
      steps, mean, _ = _mean_curve(runs, 'train', 'loss')
      line, = ax_loss.plot(steps, mean, label=f'{LABELS[name]} (lr {lr:.3g})')
      # The band spans the seeds' lowest and highest loss: a mean +- std band
      # crosses zero on a log axis.
      seeds = np.array([r['curves']['train']['loss'] for r in runs if not r['diverged']])
      ax_loss.fill_between(steps, seeds.min(0), seeds.max(0), color=line.get_color(),
                           alpha=0.15)
      steps, mean, std = _mean_curve(runs, 'test', 'accuracy')
      ax_acc.plot(steps, mean * 100, color=line.get_color())
      ax_acc.fill_between(steps, (mean - std) * 100, (mean + std) * 100,
                          color=line.get_color(), alpha=0.15)
    ax_loss.set_yscale('log')
    ax_loss.set_xlabel('step')
    ax_loss.set_ylabel('training loss (whole split)')
    ax_acc.set_xlabel('step')
    ax_acc.set_ylabel('test accuracy (%)')
    ax_loss.legend(fontsize=7)
    fig.suptitle(f'{model_name}: each optimizer at its validation-chosen rate (mean over '
                 'seeds; bands: min to max loss, ± std accuracy)', fontsize=10)
    common.save_figure(fig, os.path.join(workdir, f'best_curves_{model_name}.png'))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in names:
      cells = sweep_summary[model_name][name]['cells']
      lrs = [cell['learning_rate'] for cell in cells]
      ms = np.array([cell['validation']['mean_std'] for cell in cells]) * 100
      ax.errorbar(lrs, ms[:, 0], yerr=ms[:, 1], marker='o', capsize=2, label=LABELS[name])
    ax.set_xscale('log')
    ax.set_xlabel('learning rate')
    ax.set_ylabel('validation accuracy (%)')
    ax.set_title(f'{model_name}: accuracy against the learning rate '
                 '(missing points: diverged)', fontsize=9)
    ax.legend(fontsize=7)
    common.save_figure(fig, os.path.join(workdir, f'lr_sweep_{model_name}.png'))

  if reference:
    fig, ax = plt.subplots(figsize=(6, 4))
    for model_name, runs in reference.items():
      steps, mean, std = _mean_curve(runs, 'test', 'accuracy')
      if mean is None:
        continue
      line, = ax.plot(steps, mean * 100, label=f'{model_name} (ours)')
      ax.fill_between(steps, (mean - std) * 100, (mean + std) * 100,
                      color=line.get_color(), alpha=0.2)
      ax.axhline(PAPER_ACCURACY[model_name] * 100, color=line.get_color(), ls='--',
                 label=f'{model_name} (paper)')
    r = config.reference
    ax.set_xlabel('step')
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'Reference: Adam lr {r.learning_rate:g}, batch {r.batch_size}, '
                 f'{r.num_steps} steps', fontsize=9)
    ax.legend(fontsize=7)
    common.save_figure(fig, os.path.join(workdir, 'reference.png'))


# --- report ------------------------------------------------------------------------

def _factor_text(factors) -> str:
  return ', '.join(f'{f:.3g}' for f in factors)


def _markdown(config, sweep_summary, ref_summary, verdicts) -> str:
  c = config
  lines = ['# Optimizers compared on MNIST-1D', '']
  modern = common.split_names(c.modern_optimizers)
  if sweep_summary:
    lines += [
        f'Sweep: {c.num_steps} steps, batch {c.data.batch_size}, {c.num_seeds} seed(s) '
        '(mean ± std). Seeds differ in the initialization only: the same initialization '
        'for every optimizer and rate of a seed, and one data order (`data.seed`) for '
        'every run, since each optimizer\'s rates x seeds train as one vmapped grid on '
        f'the same batches. Learning rate = usual default x {_factor_text(c.lr_factors)}'
        + (f' (modern optimizers: x {_factor_text(c.modern_lr_factors)})' if modern else '')
        + f'. The best rate is chosen on a validation set of {c.data.validation_count} '
        'examples carved from the training split; accuracies in %.', '']
    if modern:
      lines += [
          'Modern optimizers at their usual defaults besides the rate: Muon on every '
          'kernel (a convolution\'s as (width x in) x out) with Adam for the biases; '
          'schedule-free AdamW evaluated at its averaged params x (its curves too); '
          f'SAM (rho = {c.sam_rho:g}) around SGD + momentum {c.momentum:g}, both of its '
          'gradients on the same minibatch (each batch given twice: the ascent, then the '
          'step from the original params): the same updates and batches as the others '
          'at twice the gradient evaluations; its minibatch loss is the loss at the '
          'adversarial point.', '']
  for model_name, summary in sweep_summary.items():
    rows, grids = [], {}
    for name, s in summary.items():
      cells = s['cells']
      d = cells[s['default']] if s['default'] is not None else None
      b = cells[s['best']] if s['best'] is not None else None
      rows.append((
          LABELS[name], f'{c.default_lr[name]:g}',
          _pm(d['test']['mean_std']) if d else '-',
          f'{b["learning_rate"]:.3g}' if b else 'all diverged',
          _pm(b['validation']['mean_std']) if b else '-',
          _pm(b['test']['mean_std']) if b else '-',
          f'{b["train_loss"]["mean_std"][0]:.3g}' if b else '-'))
      grids.setdefault(tuple(factors_of(c, name)), []).append((LABELS[name], *[
          ('**' if i == s['best'] else '') + _pm(cell['test']['mean_std'])
          + (f' ({cell["test"]["diverged"]} diverged)' if cell['test']['diverged'] and
             np.isfinite(cell['test']['mean_std'][0]) else '')
          + ('**' if i == s['best'] else '')
          for i, cell in enumerate(cells)]))
    lines += [
        f'## {model_name}', '',
        common.markdown_table(
            ['optimizer', 'default lr', 'test acc at default', 'best lr (validation)',
             'validation acc at best', 'test acc at best', 'train loss at best'], rows), '',
        '### Test accuracy at every rate (bold: the validation-chosen rate)', '']
    for factors, grid in grids.items():
      lines += [common.markdown_table(['optimizer'] + [f'lr x {f:.3g}' for f in factors],
                                      grid), '']
    lines += [
        *verdicts['sweep'][model_name], '',
        f'Figures: `loss_curves_{model_name}.png`, `best_curves_{model_name}.png`, '
        f'`lr_sweep_{model_name}.png`.', '']
  if ref_summary:
    r = c.reference
    rows = [(m, r.num_steps, r.batch_size, f'{r.learning_rate:g}',
             _pm(s['test']['mean_std']),
             ', '.join('diverged' if a is None else f'{a * 100:.1f}' for a in s['per_seed']),
             f'~{s["paper"] * 100:.0f}')
            for m, s in ref_summary.items()]
    lines += [
        '## The MNIST-1D paper\'s reference setting', '',
        'Adam, no weight decay, the whole training split (4000 examples), the final model '
        'evaluated on the 1000 test examples.', '',
        common.markdown_table(['model', 'steps', 'batch', 'lr', 'test acc (%)',
                               'per seed', 'paper (%)'], rows), '',
        *verdicts['reference'], '', 'Figure: `reference.png`.', '']
  return '\n'.join(lines)


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  sweep_models = common.split_names(config.models)
  ref_models = common.split_names(config.reference.models)
  # One model object per name: every grid of a model shares its programs.
  built = {name: build_model(name) for name in dict.fromkeys(sweep_models + ref_models)}
  sweeps, sweep_summary, reference, stopped = {}, {}, {}, {}

  def train(grid):
    result = study.run(grid.name, lambda folder: train_grid(config, grid, built[grid.model],
                                                             folder))
    if 'stopped' in result:
      stopped[grid.name] = result['stopped']
    return result

  if sweep_models:
    ds = data_lib.get_dataset(config.data)
    for model_name in sweep_models:
      sweeps[model_name] = {grid.optimizer: _per_rate(config.num_seeds, train(grid))
                            for grid in sweep_grids(config, model_name, ds)}
      sweep_summary[model_name] = summarize_sweep(config, sweeps[model_name])
  if ref_models:
    ds = data_lib.get_dataset(reference_data_config(config))
    for model_name in ref_models:
      reference[model_name] = train(reference_grid(config, model_name, ds))['runs']
  ref_summary = summarize_reference(config, reference)
  verdicts = dict(sweep={m: verdict_sweep(s, config.num_seeds) for m, s in sweep_summary.items()},
                  reference=verdict_reference(ref_summary))
  _figures(workdir, config, sweeps, sweep_summary, reference)
  md = _markdown(config, sweep_summary, ref_summary, verdicts)
  if stopped:
    md += '\n## Grids stopped as a whole (every replica reported diverged)\n\n' + ''.join(
        f'- `{name}`: {why}\n' for name, why in stopped.items())
  common.atomic_write(os.path.join(workdir, 'results.md'), md)
  results = dict(sweep=sweep_summary, reference=ref_summary, verdict=verdicts,
                 stopped=stopped, runs=dict(sweep=sweeps, reference=reference))
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
