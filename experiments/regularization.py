"""Regularization on a small training set: what each method does to the gap.

Every arm (see configs/regularization.py) trains the same network from the
same initializations on the same data. The training subset, the validation
split and the batch order are drawn once by ``data.seed``; a seed draws the
initialization and the dropout masks. For each run: training, validation
and test error curves; at the end the training and test error, and on the
test set the NLL and the expected calibration error (ECE) of the
deterministic prediction. For the dropout arms also MC dropout (Gal &
Ghahramani, 2016): the softmax averaged over T networks with dropout kept
on, against the deterministic network whose weights are scaled (inverted
dropout): error, NLL, ECE.

Runs: each arm's seeds are one grid trained as one vmapped program (their
states stacked on a replica axis), in ``runs/<arm>``; the early-stopping arm
is one run per seed (``runs/early_stopping-seed<S>``), since its hook
decides for one run. The penalties ``l1`` and ``l2`` are compiled into the
loss, so each penalty arm is a program of its own; ``none`` and ``augment``
share one (the same model object, an equal optimizer, an equal loss), and
the early-stopping runs of all seeds share another (the same step without
the replica axis). Every run checkpoints in its folder and resumes after a
kill; a rerun skips the finished ones.

Comparisons between arms are paired by seed (the same data and init): a
difference is claimed only when its mean exceeds the standard deviation of
the per-seed differences.

Outputs: ``results.md``, ``results.json``, ``curves.png``, ``errors.png``,
``mc_dropout.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from configs.regularization import DROPOUT_PREFIX, FIXED_ARMS, OPTIMIZERS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.analysis import ensemble
from research.train import hooks as hooks_lib
from research.train import state as state_lib
from research.train import trainer as trainer_lib


# --- arms ----------------------------------------------------------------------

MONITORS = {'validation/loss': 'min', 'validation/accuracy': 'max'}


class Settings(NamedTuple):
  """What an arm changes."""
  l1: float = 0.0
  l2: float = 0.0
  dropout: float = 0.0
  max_norm: float = 0.0
  early_stopping: bool = False
  augment: bool = False


def _dropout_rate(arm: str):
  """``'dropout_0.5'`` -> 0.5; None when ``arm`` is not a dropout arm or
  its rate is not a number in (0, 1)."""
  if not arm.startswith(DROPOUT_PREFIX):
    return None
  try:
    rate = float(arm[len(DROPOUT_PREFIX):])
  except ValueError:
    return None
  return rate if 0.0 < rate < 1.0 else None


def arm_settings(config, arm: str) -> Settings:
  rate = _dropout_rate(arm)
  if rate is not None:
    return Settings(dropout=rate)
  return {
      'none': Settings(),
      'l2': Settings(l2=config.l2),
      'l1': Settings(l1=config.l1),
      'max_norm': Settings(max_norm=config.max_norm),
      'early_stopping': Settings(early_stopping=True),
      'augment': Settings(augment=True),
  }[arm]


def arms_of(config) -> list[str]:
  return common.split_names(config.arms)


def model_config(config, s: Settings):
  m = config.model.copy_and_resolve_references()
  m.dropout_rate = s.dropout
  m.dropout_rates = ()
  m.max_norm = s.max_norm
  return m


def train_config(config, s: Settings) -> ml_collections.ConfigDict:
  """The arm's Trainer config: ``config.train`` (left untouched) plus the
  arm's penalties, which the loss compiles in."""
  return ml_collections.ConfigDict(dict(config.train.to_dict(), l1=s.l1, l2=s.l2))


def optimizer(o) -> optim.GradientTransformation:
  """``config.optimizer`` by name; its numbers live in the optimizer state."""
  if o.name == 'momentum':
    return optim.make('sgd', o.learning_rate, momentum=o.momentum)
  return optim.make(o.name, o.learning_rate)


def arm_tx(config, s: Settings, params) -> optim.GradientTransformation:
  """The optimizer, then (max_norm arm) the projection: one per kernel rank."""
  tx = optimizer(config.optimizer)
  constraints = [optim.max_norm(s.max_norm, axis, mask) for mask, axis in
                 models.max_norm_groups(model_config(config, s), params)]
  return optim.chain(tx, *constraints) if constraints else tx


# --- checks ----------------------------------------------------------------------


def _has_validation(d) -> bool:
  return d.validation_fraction > 0 or d.validation_count is not None


def validate(config) -> None:
  allowed = 'a comma-separated subset of ' + ', '.join(FIXED_ARMS) + f', {DROPOUT_PREFIX}P (0 < P < 1)'
  arms = arms_of(config)
  common.require(bool(arms), 'arms', config.arms, allowed)
  for arm in arms:
    common.require(arm in FIXED_ARMS or _dropout_rate(arm) is not None, 'arms', arm, allowed)
  common.require(len(set(arms)) == len(arms), 'arms', config.arms, 'each arm once')
  common.require(config.num_seeds >= 1, 'num_seeds', config.num_seeds, '>= 1')
  common.require(config.num_steps >= 1, 'num_steps', config.num_steps, '>= 1')
  common.require(config.log_every >= 1, 'log_every', config.log_every, '>= 1')
  common.require(1 <= config.train.eval_every <= config.num_steps, 'train.eval_every',
                 config.train.eval_every,
                 f'in [1, num_steps={config.num_steps}] (the curves need evaluations)')
  for field in ('l1', 'l2'):
    common.require(field not in config.train, f'train.{field}', config.train.get(field),
                   f'absent: the penalty is an arm setting (config.{field})')
  for field in ('l1', 'l2', 'max_norm'):
    common.require(config[field] > 0, field, config[field], '> 0')
  common.require(config.patience >= 1, 'patience', config.patience, '>= 1')
  common.require(config.early_stopping_monitor in MONITORS, 'early_stopping_monitor',
                 config.early_stopping_monitor, 'one of ' + ', '.join(MONITORS))
  common.require(config.mc_samples >= 1, 'mc_samples', config.mc_samples, '>= 1')
  o = config.optimizer
  common.require(o.name in OPTIMIZERS, 'optimizer.name', o.name, 'one of ' + ', '.join(OPTIMIZERS))
  common.require(o.learning_rate > 0, 'optimizer.learning_rate', o.learning_rate, '> 0')
  common.require(0 <= o.momentum < 1, 'optimizer.momentum', o.momentum, '[0, 1)')
  d = config.data
  if 'early_stopping' in arms:
    common.require(_has_validation(d), 'data.validation_fraction', d.validation_fraction,
                   '> 0 (or data.validation_count set): early_stopping needs a validation set')
  if 'augment' in arms:
    common.require(str(d.name).startswith('tfds:'), 'arms', 'augment',
                   f'only with an image data set (tfds:NAME); data.name={d.name!r}')
    common.require(not config.train.data_on_device, 'train.data_on_device',
                   config.train.data_on_device, 'False with the augment arm (host-side crops)')
  common.require(d.num_train is None or d.num_train >= 2, 'data.num_train', d.num_train,
                 '>= 2 or None (the whole set)')
  if d.num_train is not None:
    n_val = (round(d.num_train * d.validation_fraction) if d.validation_fraction > 0
             else (d.validation_count or 0))
    n_fit = d.num_train - n_val
    common.require(n_val < d.num_train, 'data.validation_fraction', d.validation_fraction,
                   f'leaving training examples out of data.num_train={d.num_train}')
    common.require(d.batch_size <= n_fit, 'data.batch_size', d.batch_size,
                   f'at most the {n_fit} training examples')
  trainer_lib.validate_config(train_config(config, Settings()))
  for arm in arms:  # unknown model names and bad fields fail here
    models.build_model(model_config(config, arm_settings(config, arm)))


# --- training ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: an arm's seeds as one grid, or one seed (``grid`` False)."""
  name: str
  arm: str
  seeds: tuple
  grid: bool


def runs_of(config) -> list[Run]:
  seeds = tuple(config.seed + i for i in range(config.num_seeds))
  out = []
  for arm in arms_of(config):
    if arm_settings(config, arm).early_stopping:  # its hook decides for one run
      out += [Run(f'{arm}-seed{s}', arm, (s,), False) for s in seeds]
    else:
      out.append(Run(arm, arm, seeds, True))
  return out


def eval_sets(ds) -> dict:
  sets = {}
  for name in ('train', 'validation', 'test'):
    if name != 'validation' or ds.validation is not None:
      x, y = ds.arrays(name)
      sets[name] = dict(x=x, y=y)
  return sets


def max_unit_norm(config, params) -> float:
  """The largest L2 norm of one unit's incoming weights over the kernels the
  max-norm constraint would cover (``model.max_norm_layers``)."""
  m = config.model.copy_and_resolve_references()
  m.max_norm = 1.0  # any bound: only the covered paths are wanted
  covered = set(models.max_norm_paths(m, params))
  norms = [float(np.sqrt(np.sum(np.square(np.asarray(leaf)),
                                axis=tuple(range(np.ndim(leaf) - 1)))).max())
           for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if '/'.join(str(getattr(k, 'key', k)) for k in path) in covered]
  return max(norms) if norms else float('nan')


def _metrics(probs, y) -> dict:
  return {k: float(v) for k, v in jax.device_get(
      ensemble.classification_metrics(probs, y)).items()}


def _pick(value, i: int) -> float:
  """Replica ``i`` of a grid's value (a list), or a single run's value."""
  return float(np.asarray(value, np.float64).reshape(-1)[i])


def run_config(name: str, config) -> dict:
  """The run's ``config.json`` content, as JSON gives it back (lists, not
  tuples), so that the Trainer's resume check compares like with like."""
  return json.loads(json.dumps(dict(run=name, study=config.to_dict()), default=str))


def train_run(config, run: Run, ds, model, folder: str) -> dict:
  """Trains ``run`` in ``folder`` (resuming there); per seed, what the
  summary needs."""
  s = arm_settings(config, run.arm)
  x, _ = ds.arrays('train')
  mcfg = model_config(config, s)
  # Seed s: init key s, dropout key s + 10000, in every arm (paired by seed).
  inits = [models.init_model(mcfg, jax.random.key(seed), input_shape=x.shape[1:])[1]
           for seed in run.seeds]
  tx = arm_tx(config, s, inits[0]['params'])
  states = [state_lib.TrainState.create(apply_fn=model.apply, variables=v, tx=tx,
                                        rng=jax.random.key(seed + 10_000))
            for seed, v in zip(run.seeds, inits)]
  grid = run.grid
  state = jax.tree.map(lambda *xs: jnp.stack(xs), *states) if grid else states[0]
  stopper = None
  if s.early_stopping:
    monitor = config.early_stopping_monitor
    stopper = hooks_lib.EarlyStopping(monitor=monitor, patience=config.patience,
                                      mode=MONITORS[monitor])
  trainer = trainer_lib.Trainer(train_config(config, s), folder,
                                hooks=[stopper] if stopper else [],
                                run_config=run_config(run.name, config))
  sets = eval_sets(ds)
  label = run.name + (f' ({len(run.seeds)} seeds)' if grid else '')
  fit = trainer.fit(state, ds.train, sets, num_steps=config.num_steps,
                    log_every=min(config.log_every, config.num_steps), name=label)
  final = {name: trainer.evaluate(fit.state, arrays) for name, arrays in sets.items()}
  n = len(run.seeds)
  members = [jax.tree.map(lambda a, i=i: np.asarray(a)[i], fit.state.variables)
             for i in range(n)] if grid else [fit.state.variables]
  xt, yt = ds.arrays('test')
  bs = config.train.eval_batch_size
  probs = ensemble.ensemble_predict(model.apply, ensemble.stack_trees(members), xt,
                                    batch_size=bs)
  out = []
  for i, seed in enumerate(run.seeds):
    r = dict(
        seed=seed,
        train_error=1 - _pick(final['train']['accuracy'], i),
        test_error=1 - _pick(final['test']['accuracy'], i),
        train_loss=_pick(final['train']['loss'], i),
        test_loss=_pick(final['test']['loss'], i),
        deterministic=_metrics(probs[i], yt),
        steps=int(_pick(fit.state.step, i)),
        best_step=stopper.best_step if stopper else None,
        max_unit_norm=max_unit_norm(config, members[i]['params']),
        curves={name: dict(step=[e['step'] for e in fit.evals],
                           error=[1 - _pick(e[name]['accuracy'], i) for e in fit.evals])
                for name in final},
        # A grid's time is shared equally among its seeds.
        seconds=(fit.wall_time - fit.compile_time) / n)
    if s.dropout > 0:
      samples = ensemble.mc_dropout_predict(model.apply, members[i], xt,
                                            jax.random.key(seed + 20_000), config.mc_samples,
                                            batch_size=bs)
      r['mc_dropout'] = _metrics(samples.mean(axis=0), yt)
    out.append(r)
  return dict(seeds=out)


# --- summaries ----------------------------------------------------------------------


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(per_arm: dict) -> dict:
  out = {}
  for arm, runs in per_arm.items():
    row = dict(
        train_error=_mean_std([r['train_error'] for r in runs]),
        test_error=_mean_std([r['test_error'] for r in runs]),
        gap=_mean_std([r['test_error'] - r['train_error'] for r in runs]),
        steps=_mean_std([r['steps'] for r in runs]),
        max_unit_norm=_mean_std([r['max_unit_norm'] for r in runs]),
        seconds=_mean_std([r['seconds'] for r in runs]))
    for kind in ('deterministic', 'mc_dropout'):
      if kind in runs[0]:
        row[kind] = {m: _mean_std([r[kind][m] for r in runs]) for m in ('error', 'nll', 'ece')}
    if 'mc_dropout' in runs[0]:
      row['mc_minus_deterministic'] = {
          m: _mean_std([r['mc_dropout'][m] - r['deterministic'][m] for r in runs])
          for m in ('error', 'nll', 'ece')}
    out[arm] = row
  return out


def _paired(per_arm, arm, base, key) -> tuple[float, float]:
  return _mean_std([a[key] - b[key] for a, b in zip(per_arm[arm], per_arm[base])])


def _claim(diff: tuple[float, float], n: int) -> str:
  mean, spread = diff
  if n < 2:
    return 'one seed: no claim'
  if abs(mean) > spread:
    return 'beyond the seed spread'
  return 'within the seed spread: no claim'


def verdict(config, per_arm: dict, summary: dict) -> list[str]:
  n = config.num_seeds
  lines = []
  if 'none' in summary:
    s = summary['none']
    gap = _mean_std([r['test_error'] - r['train_error'] for r in per_arm['none']])
    lines.append(f'- `none`: training error {s["train_error"][0] * 100:.1f} %, test error '
                 f'{s["test_error"][0] * 100:.1f} %; the gap of {gap[0] * 100:.1f} ± '
                 f'{gap[1] * 100:.1f} points is the overfitting the other arms act on '
                 f'({_claim(gap, n)}).')
    for arm in per_arm:
      if arm == 'none':
        continue
      err = _paired(per_arm, arm, 'none', 'test_error')
      gap = _mean_std([(a['test_error'] - a['train_error']) - (b['test_error'] - b['train_error'])
                       for a, b in zip(per_arm[arm], per_arm['none'])])
      lines.append(f'- `{arm}` vs `none`: test error {err[0] * 100:+.1f} ± {err[1] * 100:.1f} '
                   f'points ({_claim(err, n)}); train-test gap {gap[0] * 100:+.1f} ± '
                   f'{gap[1] * 100:.1f} points ({_claim(gap, n)}).')
  for arm, s in summary.items():
    if 'mc_minus_deterministic' not in s:
      continue
    d = s['mc_minus_deterministic']
    parts = [f'{m} {d[m][0] * (100 if m != "nll" else 1):+.3g} ± '
             f'{d[m][1] * (100 if m != "nll" else 1):.2g} ({_claim(d[m], n)})'
             for m in ('error', 'nll', 'ece')]
    lines.append(f'- `{arm}`, MC dropout (T = {config.mc_samples}) minus deterministic: '
                 + '; '.join(parts) + ' (error and ECE in points).')
  return lines


# --- figures and tables ---------------------------------------------------------------


def _figures(workdir, config, per_arm, summary):
  rows, cols = common.grid_shape(len(per_arm), 4)
  fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False,
                           sharey=True)
  axes = axes.ravel()
  for ax, (arm, runs) in zip(axes, per_arm.items()):
    for name, style in (('train', '-'), ('validation', ':'), ('test', '--')):
      if name not in runs[0]['curves']:
        continue
      n = min(len(r['curves'][name]['step']) for r in runs)  # early stops differ
      steps = runs[0]['curves'][name]['step'][:n]
      vals = np.array([r['curves'][name]['error'][:n] for r in runs]) * 100
      line, = ax.plot(steps, vals.mean(0), style, label=name)
      if len(runs) > 1:
        ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2, color=line.get_color())
    for r in runs:
      if r['best_step']:
        ax.axvline(r['best_step'], color='k', linewidth=0.6)
    ax.set_title(arm)
    ax.set_xlabel('step')
    ax.set_ylabel('error (%)')
    ax.legend(fontsize=7)
  for ax in axes[len(per_arm):]:
    ax.axis('off')
  fig.suptitle('Error curves: mean over seeds, band min-max (vertical: early-stopping best)')
  fig.tight_layout()
  common.save_figure(fig, os.path.join(workdir, 'curves.png'))

  fig, ax = plt.subplots(figsize=(1.2 * len(summary) + 2, 4))
  xs = np.arange(len(summary))
  for i, (key, label) in enumerate((('train_error', 'train'), ('test_error', 'test'))):
    m = [s[key][0] * 100 for s in summary.values()]
    e = [s[key][1] * 100 for s in summary.values()]
    ax.bar(xs + (i - 0.5) * 0.38, m, 0.38, yerr=e, capsize=3, label=label)
  ax.set_xticks(xs)
  ax.set_xticklabels(list(summary), rotation=30, ha='right')
  ax.set_ylabel('error (%)')
  ax.set_title(f'Final error, mean ± std over {config.num_seeds} seed(s)')
  ax.legend()
  common.save_figure(fig, os.path.join(workdir, 'errors.png'))

  mc = {arm: s for arm, s in summary.items() if 'mc_dropout' in s}
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  xs = np.arange(len(mc))
  for ax, metric in zip(axes, ('error', 'nll', 'ece')):
    for i, kind in enumerate(('deterministic', 'mc_dropout')):
      m = [s[kind][metric][0] for s in mc.values()]
      e = [s[kind][metric][1] for s in mc.values()]
      ax.bar(xs + (i - 0.5) * 0.38, m, 0.38, yerr=e, capsize=3,
             label=kind if kind == 'deterministic' else f'MC dropout (T = {config.mc_samples})')
    ax.set_xticks(xs)
    ax.set_xticklabels(list(mc))
    ax.set_title(f'test {metric}')
  axes[0].legend(fontsize=7)
  common.save_figure(fig, os.path.join(workdir, 'mc_dropout.png'))


def _pm(ms, scale=100.0, digits=1) -> str:
  return f'{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}'


def _markdown(config, summary, lines) -> str:
  d, o = config.data, config.optimizer
  rows = [(arm, _pm(s['train_error']), _pm(s['test_error']), _pm(s['gap']),
           _pm(s['deterministic']['nll'], 1, 3), _pm(s['deterministic']['ece']),
           f'{s["steps"][0]:.0f}', f'{s["max_unit_norm"][0]:.2f}') for arm, s in summary.items()]
  mc_rows = []
  for arm, s in summary.items():
    if 'mc_dropout' in s:
      for kind, label in (('deterministic', 'deterministic'),
                          ('mc_dropout', f'MC dropout, T = {config.mc_samples}')):
        m = s[kind]
        mc_rows.append((arm, label, _pm(m['error']), _pm(m['nll'], 1, 3), _pm(m['ece'])))
  settings = (f'l2 = {config.l2:g}, l1 = {config.l1:g}, max-norm radius {config.max_norm:g}, '
              f'early stopping on `{config.early_stopping_monitor}` with patience '
              f'{config.patience} evaluations')
  out = [
      '# Regularization on a small training set', '',
      f'Data `{d.name}`, {d.num_train} examples of which a fraction {d.validation_fraction:.3g} '
      f'for validation; model `{config.model.name}`; {o.name} (learning rate '
      f'{o.learning_rate:g}), {config.num_steps} steps of batch {d.batch_size}; {settings}. '
      f'{config.num_seeds} seed(s), mean ± std; errors, gap and ECE in %. Seeds differ in '
      'initialization and dropout; the training subset, the validation split and the '
      f'batch order are the same for every run (drawn by data.seed = {d.seed}). Each '
      "arm's seeds train as one vmapped grid, the early-stopping arm one run per seed.", '',
      common.markdown_table(['arm', 'train error', 'test error', 'gap (test - train)',
                             'test NLL', 'test ECE', 'steps trained',
                             'max unit norm'], rows), '',
  ]
  if mc_rows:
    out += ['## MC dropout against the deterministic network (test set)', '',
            common.markdown_table(['arm', 'prediction', 'error', 'NLL', 'ECE'], mc_rows), '']
  out += ['## What the numbers say', '',
          'Differences are paired by seed; one is claimed only when its mean exceeds the '
          'std of the per-seed differences.', '', *lines, '',
          'Figures: `curves.png`, `errors.png`, `mc_dropout.png`.', '']
  return '\n'.join(out)


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  datasets, networks = {}, {}
  per_arm = {arm: [] for arm in arms_of(config)}
  for r in runs_of(config):
    s = arm_settings(config, r.arm)
    if s.augment not in datasets:  # the augment arm turns augmentation on
      data_cfg = config.data.copy_and_resolve_references()
      data_cfg.augment = data_cfg.augment or s.augment
      datasets[s.augment] = data_lib.get_dataset(data_cfg)
    # Arms with the same network share one model object, hence one compilation.
    key = (s.dropout, s.max_norm)
    if key not in networks:
      networks[key] = models.build_model(model_config(config, s))
    out = study.run(r.name, lambda folder, r=r, s=s, key=key: train_run(
        config, r, datasets[s.augment], networks[key], folder))
    per_arm[r.arm] += out['seeds']
  summary = summarize(per_arm)
  lines = verdict(config, per_arm, summary)
  _figures(workdir, config, per_arm, summary)
  common.atomic_write(os.path.join(workdir, 'results.md'), _markdown(config, summary, lines))
  results = dict(summary=summary, per_arm=per_arm, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
