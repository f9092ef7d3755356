"""Learning-rate schedules: the curves of the source notes, and a race on MNIST-1D.

Part 1 draws every schedule of ``research.optim`` over a common horizon with
the parameters of the source notes (``schedules_grid.png``): power,
exponential and piecewise constant scheduling, performance scheduling (fed a
scripted validation curve), 1cycle, cyclic cosine annealing (snapshot
ensembles), SGDR with restarts and Optax's warmup-cosine, warmup-exponential,
cosine and polynomial decay.

Part 2 trains the MNIST-1D MLP (40-100-100-10, ``research.models``) with SGD
and momentum under several schedules, over seeds, with the Trainer, and
reports the final training and validation loss (``results.md``), the loss
curves and the learning rate applied (``training_curves.png``).

Each arm's optimizer is ``optim.make('sgd', ..., schedule=<name>,
schedule_kwargs=...)``: the rate and the float parameters of the schedule
live in the optimizer state, and the seeds of an arm train as ONE vmapped
grid (``state.create_replicas``). Seeds differ in initialisation only: the
data split and the batch order are fixed by ``data.seed``. Every run has
its own folder under ``runs/`` (``race_<arm>``, ``race_performance_seed<s>``,
and ``grid`` for part 1) and resumes after a kill.

Performance scheduling runs as a Trainer hook, one run per seed (a hook
decides for one run, so it cannot drive a grid): after each evaluation
(once per epoch) the hook feeds the validation loss to ``reduce_on_plateau``
and writes ``eta0 * scale`` into the optimizer state, so nothing is
recompiled, and every seed reuses the first seed's compilation (the same
model object, equal ``optim.make`` optimizers). (The alternative,
``reduce_on_plateau`` inside the optimizer with ``accumulation_size`` =
steps per epoch, would need the validation loss at every step.)

The rate recorded for each logged step is the rate of the update just made:
for performance scheduling the learning rate in the optimizer state
(reported by the step), for the other arms the arm's schedule at that
update's count, the same function the optimizer evaluates inside the step.
"""

from __future__ import annotations

import json
import os
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common
from research import data
from research import models
from research import optim
from research.train import hooks as train_hooks
from research.train import state as state_lib
from research.train import trainer as trainer_lib


class Horizon(NamedTuple):
  eta0: float
  epochs: int
  steps_per_epoch: int

  @property
  def steps(self) -> int:
    return self.epochs * self.steps_per_epoch


class Schedule(NamedTuple):
  """An arm's schedule as ``optim.make`` takes it: ``make('sgd',
  learning_rate, schedule=name, schedule_kwargs=kwargs)``.

  ``in_state=False`` marks the schedules ``optim.make`` cannot hold: the
  1cycle schedules (their first argument is the number of steps, not the
  rate, and ``make`` passes the rate first) and SGDR with a fractional
  ``t_mult`` (it lays the cycles out when built, and ``make`` would put the
  float in the state). Their ``kwargs`` are all the schedule's arguments.
  """
  learning_rate: float
  name: Optional[str] = None  # a schedule of research.optim; None: constant
  kwargs: dict = {}
  in_state: bool = True

  def fn(self) -> Callable:
    if self.name is None:
      return optim.constant_schedule(self.learning_rate)
    schedule = getattr(optim, self.name)
    if not self.in_state:
      return schedule(**self.kwargs)
    return schedule(self.learning_rate, **self.kwargs)


def _steps(epochs, h):
  return max(1, round(epochs * h.steps_per_epoch))


def _power(p, h):
  return Schedule(h.eta0, 'power_decay_schedule',
                  dict(k=float(p.power_k_epochs * h.steps_per_epoch), c=float(p.power_c)))


def _exponential(p, h):
  return Schedule(h.eta0, 'exponential_decay',
                  dict(transition_steps=_steps(p.exponential_s_epochs, h), decay_rate=0.1))


def _piecewise(p, h):
  """eta0 * piecewise_scales[i] from epoch piecewise_epochs[i - 1] on, as
  factors of the previous value (``validate``: no non-zero after a zero)."""
  s = [float(v) for v in p.piecewise_scales]
  bounds = {int(e * h.steps_per_epoch): s[i + 1] / s[i] if s[i] else 0.0
            for i, e in enumerate(p.piecewise_epochs)}
  return Schedule(h.eta0 * s[0], 'piecewise_constant_schedule',
                  dict(boundaries_and_scales=bounds))


def _cyclic(p, h):
  return Schedule(h.eta0, 'cyclic_cosine_schedule',
                  dict(total_steps=h.steps, num_cycles=p.cyclic_num_cycles))


def _sgdr(p, h):
  period = p.sgdr_t0_epochs * h.steps_per_epoch
  if float(p.sgdr_t_mult).is_integer():  # an int is a program constant for make
    return Schedule(h.eta0, 'sgdr_cosine_schedule',
                    dict(first_period=period, t_mult=int(p.sgdr_t_mult), total_steps=h.steps))
  return Schedule(h.eta0, 'sgdr_cosine_schedule',
                  dict(eta_max=h.eta0, first_period=period, t_mult=float(p.sgdr_t_mult),
                       total_steps=h.steps), in_state=False)


def _onecycle(name):
  def build(p, h):
    peak = h.eta0 * p.onecycle_peak
    return Schedule(peak, name, dict(transition_steps=h.steps, peak_value=peak,
                                     pct_start=p.onecycle_pct_start), in_state=False)
  return build


def _warmup_cosine(p, h):
  return Schedule(0.0, 'warmup_cosine_decay_schedule',
                  dict(peak_value=h.eta0, warmup_steps=p.warmup_epochs * h.steps_per_epoch,
                       decay_steps=h.steps))


def _warmup_exponential(p, h):
  return Schedule(0.0, 'warmup_exponential_decay_schedule',
                  dict(peak_value=h.eta0, warmup_steps=p.warmup_epochs * h.steps_per_epoch,
                       transition_steps=_steps(p.exponential_s_epochs, h), decay_rate=0.1))


class Arm(NamedTuple):
  label: str  # the rule, for figures and tables
  schedule: Callable  # (config.schedules, Horizon) -> Schedule


MNIST1D_MODELS = ('mnist1d_mlp', 'mnist1d_cnn')

# Performance scheduling has no closed form: its rate is eta0 until the hook
# (training) or the scripted curve (grid) lowers it.
ARMS = {
    'constant': Arm('constant eta0', lambda p, h: Schedule(h.eta0)),
    'power': Arm('power: eta0 / (1 + t/k)^c', _power),
    'exponential': Arm('exponential: eta0 * 0.1^(t/s)', _exponential),
    'piecewise': Arm('piecewise constant by epoch', _piecewise),
    'performance': Arm('performance (reduce on plateau)', lambda p, h: Schedule(h.eta0)),
    'onecycle': Arm('1cycle (cosine)', _onecycle('cosine_onecycle_schedule')),
    'linear_onecycle': Arm('1cycle (linear)', _onecycle('linear_onecycle_schedule')),
    'cyclic_cosine': Arm('cyclic cosine (snapshot ensembles)', _cyclic),
    'sgdr': Arm('SGDR: T_i = T_0 T_mult^i', _sgdr),
    'warmup_cosine': Arm('warmup + cosine decay', _warmup_cosine),
    'warmup_exponential': Arm('warmup + exponential decay', _warmup_exponential),
    'cosine_decay': Arm('cosine decay', lambda p, h: Schedule(
        h.eta0, 'cosine_decay_schedule', dict(decay_steps=h.steps))),
    'polynomial': Arm('polynomial decay, power 2', lambda p, h: Schedule(
        h.eta0, 'polynomial_schedule', dict(end_value=0.0, power=2.0,
                                            transition_steps=h.steps))),
}


def race_tx(race, schedule: Schedule):
  """SGD with momentum under ``schedule``; the rate, the momentum and the
  schedule's float parameters live in the optimizer state."""
  if schedule.in_state:
    return optim.make('sgd', schedule.learning_rate, momentum=race.momentum,
                      schedule=schedule.name, schedule_kwargs=schedule.kwargs or None)
  # Not expressible through optim.make (see Schedule): the schedule is part
  # of the program, still one per arm, shared by the arm's seeds.
  return optim.inject_hyperparams(optim.sgd)(learning_rate=schedule.fn(),
                                             momentum=race.momentum)


def _describe(name, p, h) -> str:
  """The parameters of one arm, in the units of the source notes."""
  spe = h.steps_per_epoch
  onecycle = f'peak={h.eta0 * p.onecycle_peak:g}, pct_start={p.onecycle_pct_start:g}'
  return {
      'constant': f'eta0={h.eta0:g}',
      'power': (f'k={p.power_k_epochs:g} epochs ({p.power_k_epochs * spe:g} steps), '
                f'c={p.power_c:g}'),
      'exponential': f's={p.exponential_s_epochs:g} epochs',
      'piecewise': (f'x{tuple(p.piecewise_scales)} of eta0, from epochs '
                    f'{tuple(p.piecewise_epochs)}'),
      'performance': (f'factor={p.plateau_factor:g}, patience={p.plateau_patience}, '
                      f'cooldown={p.plateau_cooldown} (evaluations, one per epoch)'),
      'onecycle': onecycle,
      'linear_onecycle': onecycle,
      'cyclic_cosine': (f'M={p.cyclic_num_cycles} cycles of '
                        f'{-(-h.steps // p.cyclic_num_cycles)} steps'),
      'sgdr': f'T_0={p.sgdr_t0_epochs} epochs, T_mult={p.sgdr_t_mult:g}, eta_min=0',
      'warmup_cosine': f'warmup {p.warmup_epochs} epochs from 0, to 0 at the end',
      'warmup_exponential': (f'warmup {p.warmup_epochs} epochs, then '
                             f's={p.exponential_s_epochs:g} epochs'),
      'cosine_decay': 'to 0 at the end',
      'polynomial': 'to 0 at the end',
  }[name]


def _names(text: str) -> list[str]:
  return list(ARMS) if text == 'all' else common.split_names(text)


def validate(config):
  p, g, r, d = config.schedules, config.grid, config.race, config.data
  require = common.require
  require(p.power_k_epochs > 0, 'schedules.power_k_epochs', p.power_k_epochs, '> 0')
  require(p.power_c >= 0, 'schedules.power_c', p.power_c, '>= 0')
  require(p.exponential_s_epochs > 0, 'schedules.exponential_s_epochs',
          p.exponential_s_epochs, '> 0')
  epochs = list(p.piecewise_epochs)
  require(all(e >= 0 for e in epochs) and epochs == sorted(set(epochs)),
          'schedules.piecewise_epochs', p.piecewise_epochs,
          'strictly increasing epochs >= 0')
  require(len(p.piecewise_scales) == len(epochs) + 1, 'schedules.piecewise_scales',
          p.piecewise_scales, f'{len(epochs) + 1} factors (one more than piecewise_epochs)')
  scales = list(p.piecewise_scales)
  require(all(s >= 0 for s in scales), 'schedules.piecewise_scales',
          p.piecewise_scales, 'factors >= 0')
  require(all(b == 0 for a, b in zip(scales, scales[1:]) if a == 0),
          'schedules.piecewise_scales', p.piecewise_scales,
          'factors >= 0 with only zeros after a zero (each is a multiple of the previous)')
  require(0 < p.plateau_factor < 1, 'schedules.plateau_factor', p.plateau_factor, '(0, 1)')
  require(p.plateau_patience >= 0, 'schedules.plateau_patience', p.plateau_patience, '>= 0')
  require(p.plateau_cooldown >= 0, 'schedules.plateau_cooldown', p.plateau_cooldown, '>= 0')
  require(p.cyclic_num_cycles >= 1, 'schedules.cyclic_num_cycles', p.cyclic_num_cycles, '>= 1')
  require(p.sgdr_t0_epochs >= 1, 'schedules.sgdr_t0_epochs', p.sgdr_t0_epochs, '>= 1')
  require(p.sgdr_t_mult >= 1, 'schedules.sgdr_t_mult', p.sgdr_t_mult, '>= 1')
  require(p.warmup_epochs >= 0, 'schedules.warmup_epochs', p.warmup_epochs, '>= 0')
  require(p.onecycle_peak > 0, 'schedules.onecycle_peak', p.onecycle_peak, '> 0')
  require(0 <= p.onecycle_pct_start <= 1, 'schedules.onecycle_pct_start',
          p.onecycle_pct_start, '[0, 1]')

  require(g.eta0 > 0, 'grid.eta0', g.eta0, '> 0')
  require(g.steps_per_epoch >= 1, 'grid.steps_per_epoch', g.steps_per_epoch, '>= 1')
  _check_horizon('grid.epochs', g.epochs, p)
  if g.names != 'all':
    common.require_choices('grid.names', common.split_names(g.names), ARMS)

  arms = common.split_names(r.arms)
  require(len(arms) >= 1, 'race.arms', r.arms, 'at least one arm')
  common.require_choices('race.arms', arms, ARMS)
  require(len(set(arms)) == len(arms), 'race.arms', r.arms, 'no repeats')
  common.require_choices('race.model', [r.model], MNIST1D_MODELS)
  require(r.eta0 > 0, 'race.eta0', r.eta0, '> 0')
  require(0 <= r.momentum < 1, 'race.momentum', r.momentum, '[0, 1)')
  _check_horizon('race.epochs', r.epochs, p)
  require(r.seeds >= 1, 'race.seeds', r.seeds, '>= 1')
  require(config.log_every >= 1, 'log_every', config.log_every, '>= 1')
  # MNIST-1D has 4000 training examples; both parts need at least a batch.
  require(1 <= d.validation_count <= 3999, 'data.validation_count',
          d.validation_count, '[1, 3999] (MNIST-1D has 4000 training examples)')
  require(1 <= d.batch_size <= 4000 - d.validation_count, 'data.batch_size', d.batch_size,
          f'[1, {4000 - d.validation_count}] (the training part after the validation set)')
  require(d.seed >= 0, 'data.seed', d.seed, '>= 0')
  trainer_lib.validate_config(trainer_config(config, 1))


def _check_horizon(field, epochs, p):
  """Every schedule must be definable over ``epochs``."""
  common.require(epochs >= 1, field, epochs, '>= 1')
  common.require(epochs > p.warmup_epochs, field, epochs,
                 f'> schedules.warmup_epochs={p.warmup_epochs}')
  common.require(epochs >= 2 * p.cyclic_num_cycles, field, epochs,
                 f'>= 2 * schedules.cyclic_num_cycles={p.cyclic_num_cycles} '
                 '(every cycle at least two epochs)')


# --- Part 1: the grid ----------------------------------------------------------


def scripted_validation_curve(epochs: int) -> np.ndarray:
  """A validation loss that falls, flattens and rises again (overfitting)."""
  e = np.arange(epochs, dtype=np.float64)
  return 0.3 + 0.7 * np.exp(-e / 8.0) + 0.004 * np.maximum(e - 25.0, 0.0)


def _plateau(p):
  return optim.reduce_on_plateau(factor=p.plateau_factor, patience=p.plateau_patience,
                                 cooldown=p.plateau_cooldown)


def plateau_rates(p, h: Horizon, validation) -> jax.Array:
  """Per-step rate of performance scheduling fed one value per epoch.

  The rate of epoch ``e + 1`` is ``eta0 * scale`` after the value of epoch
  ``e`` was seen, as with the Trainer hook below.
  """
  plateau = _plateau(p)

  def observe(pstate, value):
    _, pstate = plateau.update(jnp.zeros(()), pstate, value=value)
    return pstate, pstate.scale

  _, scales = jax.lax.scan(observe, plateau.init(jnp.zeros(())), validation[:-1])
  per_epoch = h.eta0 * jnp.concatenate([jnp.ones(1), scales])
  return jnp.repeat(per_epoch, h.steps_per_epoch)


def grid_curves(config) -> dict:
  p, g = config.schedules, config.grid
  h = Horizon(g.eta0, g.epochs, g.steps_per_epoch)
  names = _names(g.names)
  validation = jnp.asarray(scripted_validation_curve(h.epochs), jnp.float32)

  @jax.jit  # one compilation for every curve
  def evaluate(counts, validation):
    out = {}
    for name in names:
      if name == 'performance':
        out[name] = plateau_rates(p, h, validation)
      else:  # schedules take a scalar count
        f = ARMS[name].schedule(p, h).fn()
        out[name] = jax.vmap(lambda c, f=f: jnp.asarray(f(c), jnp.float32))(counts)
    return out

  rates = jax.device_get(evaluate(jnp.arange(h.steps), validation))
  return {name: dict(label=ARMS[name].label, params=_describe(name, p, h),
                     rates=np.asarray(rates[name], np.float64).tolist())
          for name in names}


def _plot_grid(curves, h: Horizon):
  rows, cols = common.grid_shape(len(curves), max_cols=4)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
  for ax in axes.flat[len(curves):]:
    ax.axis('off')
  epochs = np.arange(h.steps) / h.steps_per_epoch
  for ax, (name, c) in zip(axes.flat, curves.items()):
    ax.plot(epochs, c['rates'], color='#1f77b4', linewidth=1.2)
    ax.set_title(f'{c["label"]}\n{c["params"]}', fontsize=7)
    ax.set_xlabel('epoch', fontsize=7)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=6)
  fig.suptitle(f'Learning-rate schedules, eta0 = {h.eta0:g}, {h.epochs} epochs of '
               f'{h.steps_per_epoch} steps (performance: fed a scripted validation curve)',
               fontsize=9)
  fig.tight_layout()
  return fig


# --- Part 2: the race on MNIST-1D --------------------------------------------------


def performance_hook(p) -> train_hooks.PerformanceScheduling:
  """After each epoch's evaluation: reduce_on_plateau on the validation loss,
  then ``learning_rate = eta0 * scale`` in the ``inject_hyperparams`` state."""
  return train_hooks.PerformanceScheduling(
      'validation/loss', factor=p.plateau_factor, patience=p.plateau_patience,
      cooldown=p.plateau_cooldown)


class Race(NamedTuple):
  """What every run of the race shares; built once, so that the runs reuse
  one model object (and hence the compiled steps)."""
  loader: data.TrainLoader
  eval_sets: dict
  model: object
  steps_per_epoch: int
  num_examples: dict


def race_setup(config) -> Race:
  d = config.data
  dcfg = data.default_config()
  dcfg.update(dict(name='mnist1d', batch_size=d.batch_size,
                   validation_count=d.validation_count, seed=d.seed))
  ds = data.get_dataset(dcfg)
  eval_sets = {}
  for split in ('train', 'validation', 'test'):
    x, y = ds.arrays(split)
    eval_sets[split] = dict(x=x, y=y)
  model = models.build_model(models.default_config(config.race.model))
  return Race(ds.train, eval_sets, model, ds.train.steps_per_epoch, dict(ds.info.num_examples))


def _horizon(config, race: Race) -> Horizon:
  return Horizon(config.race.eta0, config.race.epochs, race.steps_per_epoch)


def _states(race: Race, tx, seeds):
  """One replica per seed; the seed draws the initialisation."""
  example = race.eval_sets['train']['x'][:1]

  def init(key):
    return {'params': race.model.init(key, example, train=False)['params']}

  return state_lib.create_replicas(apply_fn=race.model.apply, init_fn=init, tx=tx,
                                   keys=jnp.stack([jax.random.key(s) for s in seeds]))


def trainer_config(config, steps_per_epoch: int):
  """``config.train`` with one evaluation per epoch (not a user field)."""
  tc = config.train.copy_and_resolve_references()
  tc.eval_every = steps_per_epoch
  return tc


def run_config(config, name: str) -> dict:
  """What a run's config.json holds, as JSON reads it back (tuples as
  lists), so that the Trainer's check on resume compares like with like."""
  return json.loads(json.dumps(dict(run=name, study=config.to_dict()), default=str))


def _fit(config, race: Race, state, folder, name, label, hooks=()):
  trainer = trainer_lib.Trainer(trainer_config(config, race.steps_per_epoch), folder,
                                hooks=hooks, run_config=run_config(config, name))
  steps = _horizon(config, race).steps
  return trainer.fit(state, race.loader, race.eval_sets, num_steps=steps,
                     log_every=min(config.log_every, steps), name=label)


def _at(value, i: int) -> float:
  """Replica ``i`` of a metric (a list for a grid, a number for one run)."""
  v = np.asarray(value)
  return float(v if v.ndim == 0 else v[i])


def _record(fit, i: int, seed: int, spe: int, rates: list) -> dict:
  ev = fit.evals
  return dict(
      seed=seed,
      epochs=[e['step'] / spe for e in ev],
      train_loss=[_at(e['train']['loss'], i) for e in ev],
      validation_loss=[_at(e['validation']['loss'], i) for e in ev],
      validation_accuracy=[_at(e['validation']['accuracy'], i) for e in ev],
      test_accuracy=_at(ev[-1]['test']['accuracy'], i),
      test_loss=_at(ev[-1]['test']['loss'], i),
      lr_steps=[r['step'] for r in fit.history],
      learning_rate=rates,
  )


def applied_rates(schedule: Schedule, steps) -> list[float]:
  """The rate of the update that ended at each step (count = step - 1)."""
  fn = schedule.fn()
  counts = jnp.asarray(steps, jnp.int32) - 1
  return np.asarray(jax.vmap(lambda c: jnp.asarray(fn(c), jnp.float32))(counts)).tolist()


def train_arm(config, race: Race, name: str, folder: str) -> dict:
  """Every seed of a scheduled arm as one vmapped grid."""
  seeds = list(range(config.race.seeds))
  schedule = ARMS[name].schedule(config.schedules, _horizon(config, race))
  state = _states(race, race_tx(config.race, schedule), seeds)
  fit = _fit(config, race, state, folder, f'race_{name}', f'{name} ({len(seeds)} seeds)')
  rates = applied_rates(schedule, [r['step'] for r in fit.history])
  return dict(seeds=[_record(fit, i, s, race.steps_per_epoch, rates)
                     for i, s in enumerate(seeds)])


def train_performance(config, race: Race, seed: int, folder: str) -> dict:
  """One seed of performance scheduling (the hook decides for one run)."""
  schedule = ARMS['performance'].schedule(config.schedules, _horizon(config, race))
  # Replica ``seed`` of the grid of every seed: the same initialisation as
  # the grid arms' seed, from initialisers of the shapes they compiled.
  seeds = list(range(config.race.seeds))
  grid = _states(race, race_tx(config.race, schedule), seeds)
  state = jax.tree.map(lambda x: x[seeds.index(seed)], grid)
  fit = _fit(config, race, state, folder, f'race_performance_seed{seed}',
             f'performance (seed {seed})', hooks=[performance_hook(config.schedules)])
  rates = [float(r['learning_rate']) for r in fit.history]  # what the hook set
  return _record(fit, 0, seed, race.steps_per_epoch, rates)


def run_race(config, study: common.Study, race: Race) -> dict:
  out = {}
  for name in common.split_names(config.race.arms):
    if name == 'performance':
      out[name] = [study.run(f'race_performance_seed{s}',
                             lambda folder, s=s: train_performance(config, race, s, folder))
                   for s in range(config.race.seeds)]
    else:
      out[name] = study.run(f'race_{name}',
                            lambda folder, name=name: train_arm(config, race, name,
                                                                folder))['seeds']
  return out


def _mean_std(values):
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std())


def _pm(values, digits=4) -> str:
  m, s = _mean_std(values)
  return f'{m:.{digits}f} ± {s:.{digits}f}'


def summarize(runs) -> dict:
  best = [int(np.argmin(r['validation_loss'])) for r in runs]
  return dict(
      final_train_loss=_mean_std([r['train_loss'][-1] for r in runs]),
      final_validation_loss=_mean_std([r['validation_loss'][-1] for r in runs]),
      best_validation_loss=_mean_std([min(r['validation_loss']) for r in runs]),
      best_epoch=_mean_std([r['epochs'][b] for r, b in zip(runs, best)]),
      final_validation_accuracy=_mean_std([r['validation_accuracy'][-1] for r in runs]),
      test_accuracy=_mean_std([r['test_accuracy'] for r in runs]),
      final_learning_rate=_mean_std([r['learning_rate'][-1] for r in runs]),
  )


def _plot_training(race, spe, title):
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, (name, runs) in enumerate(race.items()):
    color = colors[i % len(colors)]
    epochs = runs[0]['epochs']
    for key, ax in (('train_loss', axes[0]), ('validation_loss', axes[1])):
      curves = np.array([r[key] for r in runs])
      mean = curves.mean(0)
      ax.plot(epochs, mean, color=color, label=name)
      if len(runs) > 1:
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=color, alpha=0.15)
    for j, r in enumerate(runs):
      axes[2].plot(np.asarray(r['lr_steps']) / spe, r['learning_rate'], color=color,
                   linewidth=1, alpha=1.0 if j == 0 else 0.4, label=name if j == 0 else None)
  axes[0].set_yscale('log')
  axes[0].set_title('training loss (whole training set)')
  axes[1].set_title('validation loss')
  axes[2].set_title('learning rate applied')
  for ax in axes:
    ax.set_xlabel('epoch')
  axes[1].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  p, g, r, d = config.schedules, config.grid, config.race, config.data

  grid = study.run('grid', lambda folder: grid_curves(config))
  gh = Horizon(g.eta0, g.epochs, g.steps_per_epoch)
  common.save_figure(_plot_grid(grid, gh), os.path.join(workdir, 'schedules_grid.png'))

  setup = race_setup(config)
  race = run_race(config, study, setup)
  spe, sizes = setup.steps_per_epoch, setup.num_examples
  th = _horizon(config, setup)
  summary = {name: summarize(runs) for name, runs in race.items()}
  title = (f'MNIST-1D {r.model}, SGD momentum {r.momentum:g}, eta0={r.eta0:g}, '
           f'batch {d.batch_size}, {r.epochs} epochs, {r.seeds} seed(s) '
           '(band: min-max over seeds)')
  common.save_figure(_plot_training(race, spe, title),
                     os.path.join(workdir, 'training_curves.png'))

  md = [
      '# Learning-rate schedules', '',
      f'## Every schedule over {g.epochs} epochs of {g.steps_per_epoch} steps, '
      f'eta0 = {g.eta0:g}', '',
      'Parameters from the source notes (Keras examples with eta0 = 0.01); '
      'performance scheduling is fed the scripted validation curve '
      '0.3 + 0.7 exp(-e/8) + 0.004 max(e - 25, 0), one value per epoch. '
      'Figure: `schedules_grid.png`.', '',
      common.markdown_table(
          ['schedule', 'rule', 'parameters', 'rate at epoch 0', 'at the middle', 'at the end'],
          [(name, c['label'], c['params'], c['rates'][0], c['rates'][gh.steps // 2],
            c['rates'][-1]) for name, c in grid.items()]),
      '',
      f'## Training on MNIST-1D ({sizes["train"]} training, {sizes["validation"]} '
      f'validation, {sizes["test"]} test examples)', '',
      f'Model `{r.model}` (research.models), SGD with momentum {r.momentum:g}, '
      f'eta0 = {r.eta0:g}, batch {d.batch_size}, {r.epochs} epochs of {spe} steps '
      f'({th.steps} steps), {r.seeds} seed(s). Seeds differ in initialisation only: '
      f'the split and the batch order are the same for every seed and arm '
      f'(data seed {d.seed}), and the seeds of an arm train as one vmapped grid. '
      'Losses are cross-entropy over the whole split after the last '
      'epoch; mean ± std over seeds. Performance scheduling: a Trainer hook feeds '
      'the validation loss to `reduce_on_plateau` after each epoch and sets the '
      'learning rate in the optimizer state (no recompilation), one run per seed. '
      'Figure: `training_curves.png`.', '',
      common.markdown_table(
          ['arm', 'parameters', 'final train loss', 'final validation loss',
           'best validation loss', 'best epoch', 'final validation acc',
           'test acc', 'final lr'],
          [(name, _describe(name, p, th),
            _pm([x['train_loss'][-1] for x in race[name]]),
            _pm([x['validation_loss'][-1] for x in race[name]]),
            _pm([min(x['validation_loss']) for x in race[name]]),
            f'{summary[name]["best_epoch"][0]:.1f}',
            _pm([x['validation_accuracy'][-1] for x in race[name]], 3),
            _pm([x['test_accuracy'] for x in race[name]], 3),
            f'{summary[name]["final_learning_rate"][0]:.3g}')
           for name in race]),
      '',
  ]
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))
  results = dict(grid=grid, race=race, summary=summary, steps_per_epoch=spe,
                 num_examples=sizes)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
