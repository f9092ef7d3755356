"""Nine optimizers on MNIST-1D: at their usual defaults and over a rate sweep.

For each model in ``models`` and each optimizer (SGD, SGD with momentum, SGD
with Nesterov momentum, AdaGrad, RMSProp, AdaDelta, Adam, Nadam, AdamW) the
study trains one run per learning rate ``default_lr[opt] * factor`` and seed,
from the same initialization and data order for every optimizer and rate of
a seed (paired comparisons). The learning rate lives in the optimizer state
(``inject_hyperparams``), so the rates of a sweep share one compiled step.

The best rate of each optimizer is the one with the highest validation
accuracy (mean over seeds; a validation set is carved from the training
split), and its test accuracy is what the tables report: choosing on the
test set would flatter every optimizer.

The MNIST-1D paper's reference setting (Adam, learning rate 1e-2, batch 100,
8000 steps, the whole training split) runs separately for the models in
``reference.models``; its test accuracy is set beside the paper's.

Outputs: ``results.md``, ``results.json``, ``loss_curves_<model>.png`` (the
training loss of every rate of every optimizer), ``best_curves_<model>.png``
(each optimizer at its best rate), ``lr_sweep_<model>.png`` (accuracy
against the learning rate) and ``reference.png``.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from configs.optimizers_compared import MODELS, OPTIMIZERS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.data import mnist1d_data
from research.data import pipeline
from research.train import state as state_lib
from research.train import trainer as trainer_lib

# Test accuracy reported by the MNIST-1D paper on the default data set
# (Greydanus, Scaling down deep learning, 2020, Table of baselines).
PAPER_ACCURACY = {'mnist1d_mlp': 0.68, 'mnist1d_cnn': 0.94}
LABELS = dict(sgd='SGD', momentum='SGD + momentum', nesterov='SGD + Nesterov',
              adagrad='AdaGrad', rmsprop='RMSProp', adadelta='AdaDelta', adam='Adam',
              nadam='Nadam', adamw='AdamW')
_DATA_SETS = ('mnist1d', 'mnist1d_shuffled')


def _num_train() -> int:
  a = mnist1d_data.MNIST1D_ARGS
  return int(a['num_samples'] * a['train_split'])


# --- config checks ---------------------------------------------------------------

def validate(config) -> None:
  c = config
  sweep_models = common.split_names(c.models)
  ref_models = common.split_names(c.reference.models)
  common.require_choices('models', sweep_models, MODELS)
  common.require_choices('reference.models', ref_models, MODELS)
  common.require(bool(sweep_models or ref_models), 'models', c.models,
                 'at least one model here or in reference.models')
  opts = common.split_names(c.optimizers)
  common.require_choices('optimizers', opts, OPTIMIZERS)
  common.require(bool(opts) or not sweep_models, 'optimizers', c.optimizers,
                 'a comma-separated subset of ' + ', '.join(OPTIMIZERS))
  common.require(len(set(opts)) == len(opts), 'optimizers', c.optimizers, 'no repeats')
  for name in OPTIMIZERS:
    common.require(c.default_lr[name] > 0, f'default_lr.{name}', c.default_lr[name], '> 0')
  factors = tuple(c.lr_factors)
  common.require(len(factors) >= 1 and all(f > 0 for f in factors), 'lr_factors',
                 factors, 'one or more values > 0')
  common.require(len(set(factors)) == len(factors), 'lr_factors', factors, 'no repeats')
  common.require(0 <= c.momentum < 1, 'momentum', c.momentum, '[0, 1)')
  common.require(c.adamw_weight_decay >= 0, 'adamw_weight_decay', c.adamw_weight_decay, '>= 0')
  common.require(c.seed >= 0, 'seed', c.seed, '>= 0')
  common.require(c.num_seeds >= 1, 'num_seeds', c.num_seeds, '>= 1')
  common.require(c.num_steps >= 1, 'num_steps', c.num_steps, '>= 1')
  n = _num_train()
  common.require(1 <= c.validation_count <= n - 1, 'validation_count', c.validation_count,
                 f'[1, {n - 1}] (MNIST-1D has {n} training examples)')
  common.require(1 <= c.batch_size <= n - c.validation_count, 'batch_size', c.batch_size,
                 f'[1, {n - c.validation_count}] (the training examples left after '
                 'the validation set)')
  common.require(c.log_every >= 1, 'log_every', c.log_every, '>= 1')
  common.require(c.eval_every >= 0, 'eval_every', c.eval_every, '>= 0')
  r = c.reference
  common.require(r.learning_rate > 0, 'reference.learning_rate', r.learning_rate, '> 0')
  common.require(1 <= r.batch_size <= n, 'reference.batch_size', r.batch_size, f'[1, {n}]')
  common.require(r.num_steps >= 1, 'reference.num_steps', r.num_steps, '>= 1')
  common.require(r.num_seeds >= 1, 'reference.num_seeds', r.num_seeds, '>= 1')
  common.require(c.data.name in _DATA_SETS, 'data.name', c.data.name, ', '.join(_DATA_SETS))
  trainer_lib.validate_config(c.train)


# --- optimizers --------------------------------------------------------------------

def _optimizer_args(config) -> dict[str, tuple[Callable, dict]]:
  """name -> (alias, its arguments besides the learning rate)."""
  return dict(
      sgd=(optim.sgd, {}),
      momentum=(optim.sgd, dict(momentum=float(config.momentum))),
      nesterov=(optim.sgd, dict(momentum=float(config.momentum), nesterov=True)),
      adagrad=(optim.adagrad, {}),
      rmsprop=(optim.rmsprop, {}),
      adadelta=(optim.adadelta, {}),
      adam=(optim.adam, {}),
      nadam=(optim.nadam, {}),
      adamw=(optim.adamw, dict(weight_decay=float(config.adamw_weight_decay))),
  )


def make_optimizer(name: str, config, learning_rate: float) -> optim.GradientTransformation:
  """The optimizer ``name`` with its learning rate held in its state."""
  alias, kwargs = _optimizer_args(config)[name]
  return optim.inject_hyperparams(alias)(learning_rate=float(learning_rate), **kwargs)


def learning_rates(config, name: str) -> list[float]:
  return [float(config.default_lr[name] * f) for f in config.lr_factors]


# --- training ------------------------------------------------------------------------

class Runner:
  """One Trainer per (model, protocol) and one optimizer object per
  (model, optimizer): rates and seeds reuse the compiled steps."""

  def __init__(self, config):
    self.config = config
    self._trainers, self._optimizers, self._models = {}, {}, {}

  def model(self, name: str):
    """``(module, init)``: ``init(key)`` is compiled once per model (eager
    initialization compiles every op anew for each new shape)."""
    if name not in self._models:
      mc = models.default_config(name)
      module = models.build_model(mc)
      example = jnp.zeros((1,) + tuple(mc.input_shape), jnp.float32)
      init = jax.jit(lambda key: {
          k: v for k, v in module.init(key, example, train=False).items()
          if k in ('params', 'batch_stats')})
      self._models[name] = (module, init)
    return self._models[name]

  def trainer(self, key, num_steps: int, batch_size: int, eval_every: int):
    if key not in self._trainers:
      tc = self.config.train.copy_and_resolve_references()
      tc.num_steps = num_steps
      tc.batch_size = batch_size
      tc.log_every = min(self.config.log_every, num_steps)
      tc.eval_every = eval_every
      self._trainers[key] = trainer_lib.Trainer(tc)
    return self._trainers[key]

  def optimizer(self, key, make: Callable):
    if key not in self._optimizers:
      self._optimizers[key] = make()
    return self._optimizers[key]

  def fit(self, model_name, trainer, tx, seed, x, y, eval_sets, learning_rate=None) -> dict:
    """One run; a run that diverges (the Trainer stops it) is reported as such."""
    model, init = self.model(model_name)
    variables = init(jax.random.key(seed))
    state = state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                        rng=jax.random.key(seed + 10_000))
    if learning_rate is not None:
      state = state.replace(opt_state=optim.set_hyperparams(
          state.opt_state, learning_rate=learning_rate))
    loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), trainer.config.batch_size,
                                  seed=seed)
    try:
      result = trainer.fit(state, loader, eval_sets=eval_sets)
    except trainer_lib.NonFiniteError:
      return dict(diverged=True)
    final = result.evals[-1]
    return dict(
        diverged=False,
        nonfinite_steps=result.nonfinite_steps,
        seconds=result.wall_time - result.compile_time,
        steps=[h['step'] for h in result.history],
        minibatch_loss=[float(h['loss']) for h in result.history],
        eval_steps=[e['step'] for e in result.evals],
        curves={name: dict(loss=[e[name]['loss'] for e in result.evals],
                           accuracy=[e[name]['accuracy'] for e in result.evals])
                for name in eval_sets},
        final={name: dict(loss=final[name]['loss'], accuracy=final[name]['accuracy'])
               for name in eval_sets},
    )


def _splits(config, validation: bool) -> dict:
  d = config.data.copy_and_resolve_references()
  # Only the arrays are used (each run builds its own loader), so the
  # loaders' batch sizes are irrelevant; 1 always fits.
  d.batch_size, d.eval_batch_size = 1, 1
  d.validation_count = config.validation_count if validation else None
  ds = data_lib.get_dataset(d)
  out = {'train': ds.arrays('train'), 'test': ds.arrays('test')}
  if validation:
    out['validation'] = ds.arrays('validation')
  return out


def _eval_sets(splits: dict) -> dict:
  return {k: dict(x=x, y=y) for k, (x, y) in splits.items()}


def run_sweep(config, runner: Runner, model_name: str, splits: dict) -> dict:
  """{optimizer: {factor_index: [run per seed]}}."""
  c = config
  x, y = splits['train']
  trainer = runner.trainer((model_name, 'sweep'), c.num_steps, c.batch_size, c.eval_every)
  eval_sets = _eval_sets(splits)
  out = {}
  for name in common.split_names(c.optimizers):
    rates = learning_rates(c, name)
    tx = runner.optimizer((model_name, name), lambda: make_optimizer(name, c, rates[0]))
    out[name] = []
    for lr in rates:
      out[name].append([runner.fit(model_name, trainer, tx, c.seed + i, x, y, eval_sets,
                                   learning_rate=lr)
                        for i in range(c.num_seeds)])
  return out


def run_reference(config, runner: Runner, model_name: str, splits: dict) -> list:
  r = config.reference
  x, y = splits['train']
  trainer = runner.trainer((model_name, 'reference'), r.num_steps, r.batch_size,
                           config.eval_every)
  tx = runner.optimizer((model_name, 'reference'), lambda: optim.adam(r.learning_rate))
  return [runner.fit(model_name, trainer, tx, config.seed + i, x, y,
                     _eval_sets({'test': splits['test']}))
          for i in range(r.num_seeds)]


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
  factors = list(config.lr_factors)
  for name, per_rate in sweep.items():
    rates = learning_rates(config, name)
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
  factors = [cell['factor'] for cell in next(iter(summary.values()))['cells']]
  for end, word in ((max(factors), 'largest'), (min(factors), 'smallest')):
    edge = [LABELS[n] for n, s in summary.items()
            if s['best'] is not None and s['cells'][s['best']]['factor'] == end]
    if edge and len(factors) > 1:
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
  factors = list(config.lr_factors)
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(factors)))
  for model_name, sweep in sweeps.items():
    names = list(sweep)
    rows, cols = common.grid_shape(len(names), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False,
                             sharex=True)
    for ax, name in zip(axes.flat, names):
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

def _markdown(config, sweep_summary, ref_summary, verdicts) -> str:
  c = config
  lines = ['# Optimizers compared on MNIST-1D', '']
  if sweep_summary:
    lines += [
        f'Sweep: {c.num_steps} steps, batch {c.batch_size}, {c.num_seeds} seed(s) (mean ± '
        f'std; the same initialization and data order for every optimizer and rate of a '
        f'seed). Learning rate = usual default x {", ".join(f"{f:g}" for f in c.lr_factors)}. '
        f'The best rate is chosen on a validation set of {c.validation_count} examples '
        'carved from the training split; accuracies in %.', '']
  for model_name, summary in sweep_summary.items():
    rows, grid = [], []
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
      grid.append((LABELS[name], *[
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
        '### Test accuracy at every rate (bold: the validation-chosen rate)', '',
        common.markdown_table(['optimizer'] + [f'lr x {f:g}' for f in c.lr_factors], grid), '',
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
  common.write_config(workdir, config)
  runner = Runner(config)
  sweeps, sweep_summary, reference = {}, {}, {}
  sweep_models = common.split_names(config.models)
  ref_models = common.split_names(config.reference.models)
  if sweep_models:
    splits = _splits(config, validation=True)
    for model_name in sweep_models:
      sweeps[model_name] = run_sweep(config, runner, model_name, splits)
      sweep_summary[model_name] = summarize_sweep(config, sweeps[model_name])
  if ref_models:
    splits = _splits(config, validation=False)
    for model_name in ref_models:
      reference[model_name] = run_reference(config, runner, model_name, splits)
  ref_summary = summarize_reference(config, reference)
  verdicts = dict(sweep={m: verdict_sweep(s, config.num_seeds) for m, s in sweep_summary.items()},
                  reference=verdict_reference(ref_summary))
  _figures(workdir, config, sweeps, sweep_summary, reference)
  common.atomic_write(os.path.join(workdir, 'results.md'),
                      _markdown(config, sweep_summary, ref_summary, verdicts))
  results = dict(sweep=sweep_summary, reference=ref_summary, verdict=verdicts,
                 runs=dict(sweep=sweeps, reference=reference))
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
