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
curves and the learning rate actually applied (``training_curves.png``). The
rate is read from the ``inject_hyperparams`` state, which the train step
reports as the metric ``learning_rate``.

Performance scheduling runs as a Trainer hook: after each evaluation (once per
epoch) the hook feeds the validation loss to ``reduce_on_plateau`` and writes
``eta0 * scale`` into the optimizer state with ``set_hyperparams``, so nothing
is recompiled. (The alternative, ``reduce_on_plateau`` inside the optimizer
with ``accumulation_size`` = steps per epoch, would need the validation loss
at every step.)
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

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


def _power(p, h):
  return optim.power_decay_schedule(h.eta0, p.power_k_epochs * h.steps_per_epoch, p.power_c)


def _exponential(p, h):
  return optim.exponential_decay(h.eta0, _steps(p.exponential_s_epochs, h), 0.1)


def _steps(epochs, h):
  return max(1, round(epochs * h.steps_per_epoch))


def _piecewise(p, h):
  values = [h.eta0 * s for s in p.piecewise_scales]
  return optim.piecewise_constant_by_epoch(values, list(p.piecewise_epochs), h.steps_per_epoch)


def _cyclic(p, h):
  return optim.cyclic_cosine_schedule(h.eta0, h.steps, p.cyclic_num_cycles)


def _sgdr(p, h):
  return optim.sgdr_cosine_schedule(h.eta0, p.sgdr_t0_epochs * h.steps_per_epoch,
                                    p.sgdr_t_mult, total_steps=h.steps)


def _onecycle(p, h):
  return optim.cosine_onecycle_schedule(h.steps, h.eta0 * p.onecycle_peak,
                                        pct_start=p.onecycle_pct_start)


def _linear_onecycle(p, h):
  return optim.linear_onecycle_schedule(h.steps, h.eta0 * p.onecycle_peak,
                                        pct_start=p.onecycle_pct_start)


def _warmup_cosine(p, h):
  return optim.warmup_cosine_decay_schedule(
      0.0, h.eta0, p.warmup_epochs * h.steps_per_epoch, h.steps)


def _warmup_exponential(p, h):
  return optim.warmup_exponential_decay_schedule(
      0.0, h.eta0, p.warmup_epochs * h.steps_per_epoch, _steps(p.exponential_s_epochs, h), 0.1)


class Arm(NamedTuple):
  label: str  # the rule, for figures and tables
  build: Callable  # (config.schedules, Horizon) -> schedule


MNIST1D_MODELS = ('mnist1d_mlp', 'mnist1d_cnn')

# Performance scheduling has no closed form: its rate is eta0 until the hook
# (training) or the scripted curve (grid) lowers it.
ARMS = {
    'constant': Arm('constant eta0', lambda p, h: optim.constant_schedule(h.eta0)),
    'power': Arm('power: eta0 / (1 + t/k)^c', _power),
    'exponential': Arm('exponential: eta0 * 0.1^(t/s)', _exponential),
    'piecewise': Arm('piecewise constant by epoch', _piecewise),
    'performance': Arm('performance (reduce on plateau)',
                       lambda p, h: optim.constant_schedule(h.eta0)),
    'onecycle': Arm('1cycle (cosine)', _onecycle),
    'linear_onecycle': Arm('1cycle (linear)', _linear_onecycle),
    'cyclic_cosine': Arm('cyclic cosine (snapshot ensembles)', _cyclic),
    'sgdr': Arm('SGDR: T_i = T_0 T_mult^i', _sgdr),
    'warmup_cosine': Arm('warmup + cosine decay', _warmup_cosine),
    'warmup_exponential': Arm('warmup + exponential decay', _warmup_exponential),
    'cosine_decay': Arm('cosine decay',
                        lambda p, h: optim.cosine_decay_schedule(h.eta0, h.steps)),
    'polynomial': Arm('polynomial decay, power 2',
                      lambda p, h: optim.polynomial_schedule(h.eta0, 0.0, 2.0, h.steps)),
}


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
  p, g, t = config.schedules, config.grid, config.train
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
  require(all(s >= 0 for s in p.piecewise_scales), 'schedules.piecewise_scales',
          p.piecewise_scales, 'factors >= 0')
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

  arms = common.split_names(t.arms)
  require(len(arms) >= 1, 'train.arms', t.arms, 'at least one arm')
  common.require_choices('train.arms', arms, ARMS)
  common.require_choices('train.model', [t.model], MNIST1D_MODELS)
  require(t.eta0 > 0, 'train.eta0', t.eta0, '> 0')
  require(0 <= t.momentum < 1, 'train.momentum', t.momentum, '[0, 1)')
  _check_horizon('train.epochs', t.epochs, p)
  require(t.seeds >= 1, 'train.seeds', t.seeds, '>= 1')
  require(t.log_every >= 1, 'train.log_every', t.log_every, '>= 1')
  # MNIST-1D has 4000 training examples; both parts need at least a batch.
  require(1 <= t.validation_count <= 3999, 'train.validation_count',
          t.validation_count, '[1, 3999] (MNIST-1D has 4000 training examples)')
  require(1 <= t.batch_size <= 4000 - t.validation_count, 'train.batch_size', t.batch_size,
          f'[1, {4000 - t.validation_count}] (the training part after the validation set)')


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
        f = ARMS[name].build(p, h)
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


def _data(config):
  t = config.train
  dcfg = data.default_config()
  dcfg.update(dict(name='mnist1d', batch_size=t.batch_size,
                   validation_count=t.validation_count, seed=0))
  return data.get_dataset(dcfg)


def _trainer_config(t, steps, steps_per_epoch):
  c = trainer_lib.default_config()
  c.update(dict(
      num_steps=steps, batch_size=t.batch_size, log_every=t.log_every,
      steps_per_dispatch=t.log_every, eval_every=steps_per_epoch, seed=0,
      checkpoints=False, progress=False, tensorboard=False,
  ))
  return c


def train_arm(config, name, ds, eval_sets) -> list[dict]:
  """One arm over every seed; the seed sets the init and the batch order."""
  p, t = config.schedules, config.train
  spe = ds.train.steps_per_epoch
  h = Horizon(t.eta0, t.epochs, spe)
  # Performance scheduling needs a number in the state, which the hook changes.
  rate = t.eta0 if name == 'performance' else ARMS[name].build(p, h)
  tx = optim.inject_hyperparams(optim.sgd)(learning_rate=rate, momentum=t.momentum)
  mcfg = models.default_config(t.model)
  model = models.build_model(mcfg)
  runs = []
  for seed in range(t.seeds):
    hooks = [performance_hook(p)] if name == 'performance' else []
    # One Trainer per run (hooks are fixed at construction); the compiled
    # steps are shared through jax.jit's cache, as tx and apply_fn are reused.
    trainer = trainer_lib.Trainer(_trainer_config(t, h.steps, spe), None, hooks=hooks)
    _, variables = models.init_model(mcfg, jax.random.key(seed))
    state = state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                        rng=jax.random.key(10_000 + seed))
    loader = data.TrainLoader(ds.train.source, t.batch_size, indices=ds.train.examples,
                              seed=seed)
    fit = trainer.fit(state, loader, eval_sets=eval_sets)
    runs.append(dict(
        seed=seed,
        epochs=[e['step'] / spe for e in fit.evals],
        train_loss=[e['train']['loss'] for e in fit.evals],
        validation_loss=[e['validation']['loss'] for e in fit.evals],
        validation_accuracy=[e['validation']['accuracy'] for e in fit.evals],
        test_accuracy=fit.evals[-1]['test']['accuracy'],
        test_loss=fit.evals[-1]['test']['loss'],
        lr_steps=[r['step'] for r in fit.history],
        learning_rate=[float(r['learning_rate']) for r in fit.history],
    ))
  return runs


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
  axes[2].set_title('learning rate applied (from the optimizer state)')
  for ax in axes:
    ax.set_xlabel('epoch')
  axes[1].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def run_race(config):
  ds = _data(config)
  eval_sets = {}
  for split in ('train', 'validation', 'test'):
    x, y = ds.arrays(split)
    eval_sets[split] = dict(x=x, y=y)
  race = {name: train_arm(config, name, ds, eval_sets)
          for name in common.split_names(config.train.arms)}
  return race, ds.train.steps_per_epoch, ds.info.num_examples


def run(config, workdir):
  validate(config)
  common.write_config(workdir, config)
  p, g, t = config.schedules, config.grid, config.train

  grid = grid_curves(config)
  gh = Horizon(g.eta0, g.epochs, g.steps_per_epoch)
  common.save_figure(_plot_grid(grid, gh), os.path.join(workdir, 'schedules_grid.png'))

  race, spe, sizes = run_race(config)
  th = Horizon(t.eta0, t.epochs, spe)
  summary = {name: summarize(runs) for name, runs in race.items()}
  title = (f'MNIST-1D {t.model}, SGD momentum {t.momentum:g}, eta0={t.eta0:g}, '
           f'batch {t.batch_size}, {t.epochs} epochs, {t.seeds} seed(s) '
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
      f'Model `{t.model}` (research.models), SGD with momentum {t.momentum:g}, '
      f'eta0 = {t.eta0:g}, batch {t.batch_size}, {t.epochs} epochs of {spe} steps '
      f'({th.steps} steps), {t.seeds} seed(s) (init and batch order; the split is '
      'fixed). Losses are cross-entropy over the whole split after the last '
      'epoch; mean ± std over seeds. Performance scheduling: a Trainer hook feeds '
      'the validation loss to `reduce_on_plateau` after each epoch and sets the '
      'learning rate in the `inject_hyperparams` state with `set_hyperparams` '
      '(no recompilation). Figure: `training_curves.png`.', '',
      common.markdown_table(
          ['arm', 'parameters', 'final train loss', 'final validation loss',
           'best validation loss', 'best epoch', 'final validation acc',
           'test acc', 'final lr'],
          [(name, _describe(name, p, th),
            _pm([r['train_loss'][-1] for r in race[name]]),
            _pm([r['validation_loss'][-1] for r in race[name]]),
            _pm([min(r['validation_loss']) for r in race[name]]),
            f'{summary[name]["best_epoch"][0]:.1f}',
            _pm([r['validation_accuracy'][-1] for r in race[name]], 3),
            _pm([r['test_accuracy'] for r in race[name]], 3),
            f'{summary[name]["final_learning_rate"][0]:.3g}')
           for name in race]),
      '',
  ]
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))
  results = dict(grid=grid, race=race, summary=summary, steps_per_epoch=spe,
                 num_examples=sizes)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
