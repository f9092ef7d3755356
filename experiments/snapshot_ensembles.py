"""Snapshot ensembles: cyclic cosine annealing against the usual baselines.

Arms (budget B training steps each unless said; Huang et al., 2017, Table 1):
  single         SGD + Nesterov 0.9, lr 0.1 divided by 10 at 50% and 75% of B,
                 weight decay; the last model is the result.
  nocycle        the single run's M equally spaced snapshots, ensembled
                 (the same run: no extra cost).
  singlecycle    M independently initialised models, each one cosine cycle of
                 B / M steps, ensembled.
  snapshot       one run of M cosine cycles (alpha_0 in ``snapshot_lrs``), a
                 snapshot at the end of each cycle, ensembled.
  true_ensemble  M independently trained single models (M x B steps; the
                 single run is its first member).

The study is three training runs, each a grid trained as one vmapped
program (``research.train.state.create_replicas``): ``single`` (seeds x
members with the step schedule: the single model, the NoCycle snapshots and
the true ensemble), ``snapshot`` (alpha_0 x seeds: the learning rate lives
in the optimizer state, so both peaks share one compilation) and
``singlecycle`` (seeds x members, B / M steps). Each run has its own folder
under ``runs/`` with checkpoints, snapshots, metrics.jsonl and TensorBoard,
and resumes after a kill. Seeds differ in initialisation and dropout; the
data and their order are fixed by ``config.seed``.

For each arm and seed: the test error, NLL and ECE of the last model and of
the ensembles of the last m = 1..M members (averaged softmax), and the
wall-clock cost of training (compilation excluded; a grid's time shared
equally among its replicas). Over seeds: mean and standard deviation.
Outputs: ``results.md`` (a table shaped like the paper's Table 1),
``results.json``, ``error_vs_snapshots.png``, ``lr_and_loss.png``,
``disagreement.png``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from configs.snapshot_ensembles import ARMS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.analysis import ensemble
from research.analysis import propagation
from research.train import state as state_lib
from research.train import trainer as trainer_lib


def validate(config) -> None:
  arms = common.split_names(config.arms)
  common.require(bool(arms), 'arms', config.arms, 'a comma-separated subset of ' + ', '.join(ARMS))
  common.require_choices('arms', arms, ARMS)
  common.require(config.num_seeds >= 1, 'num_seeds', config.num_seeds, '>= 1')
  common.require(config.budget_steps >= 1, 'budget_steps', config.budget_steps, '>= 1')
  common.require(config.num_snapshots >= 1, 'num_snapshots', config.num_snapshots, '>= 1')
  common.require(config.num_snapshots <= config.budget_steps, 'num_snapshots',
                 config.num_snapshots, f'at most budget_steps={config.budget_steps}')
  common.require(config.log_every >= 1, 'log_every', config.log_every, '>= 1')
  common.require(len(config.snapshot_lrs) >= 1 and all(a > 0 for a in config.snapshot_lrs),
                 'snapshot_lrs', config.snapshot_lrs, 'one or more values > 0')
  common.require(len(set(config.snapshot_lrs)) == len(config.snapshot_lrs), 'snapshot_lrs',
                 config.snapshot_lrs, 'distinct values')
  for field in ('single_lr', 'singlecycle_lr'):
    common.require(config[field] > 0, field, config[field], '> 0')
  common.require(0 <= config.momentum < 1, 'momentum', config.momentum, '[0, 1)')
  common.require(config.weight_decay >= 0, 'weight_decay', config.weight_decay, '>= 0')
  trainer_lib.validate_config(config.train)
  models.build_model(config.model)  # unknown names and bad fields fail here


# --- schedules and optimizers ---------------------------------------------------

def single_schedule(config) -> Callable:
  b = config.budget_steps
  return optim.piecewise_constant_schedule(
      config.single_lr, {int(0.5 * b): 0.1, int(0.75 * b): 0.1})


def _sgd(config, learning_rate: float, schedule: str, **schedule_kwargs):
  """SGD + Nesterov with coupled weight decay; the rate (the schedule's
  peak) lives in the state, so runs differing in it share a program."""
  return optim.make('sgd', learning_rate, momentum=config.momentum, nesterov=True,
                    weight_decay=config.weight_decay, schedule=schedule,
                    schedule_kwargs=schedule_kwargs)


def single_tx(config):
  b = config.budget_steps
  return _sgd(config, config.single_lr, 'piecewise_constant_schedule',
              boundaries_and_scales={int(0.5 * b): 0.1, int(0.75 * b): 0.1})


def snapshot_tx(config, total_steps: int, num_cycles: int, learning_rate: float):
  return _sgd(config, learning_rate, 'cyclic_cosine_schedule',
              total_steps=total_steps, num_cycles=num_cycles)


def nocycle_snapshot_steps(config) -> list[int]:
  b, m = config.budget_steps, config.num_snapshots
  return [round(b * (i + 1) / m) for i in range(m)]


# --- the grids ------------------------------------------------------------------

@dataclasses.dataclass
class Grid:
  """One training run of replicas: ``keys[i]`` = (seed, member), ``lrs[i]``."""
  name: str
  tx: object
  num_steps: int
  snapshot_steps: list
  replicas: list          # [(seed, member, learning_rate)]


def grids(config) -> list[Grid]:
  c, b, m = config, config.budget_steps, config.num_snapshots
  arms = set(common.split_names(c.arms))
  seeds = [c.seed + i for i in range(c.num_seeds)]
  out = []
  if arms & {'single', 'nocycle', 'true_ensemble'}:
    members = m if 'true_ensemble' in arms else 1
    out.append(Grid('single', single_tx(c), b,
                    nocycle_snapshot_steps(c) if 'nocycle' in arms else [b],
                    [(s, i, c.single_lr) for s in seeds for i in range(members)]))
  if 'snapshot' in arms:
    out.append(Grid('snapshot', snapshot_tx(c, b, m, c.snapshot_lrs[0]), b,
                    optim.snapshot_steps(b, m),
                    [(s, 0, float(a)) for a in c.snapshot_lrs for s in seeds]))
  if 'singlecycle' in arms:
    steps = max(b // m, 1)
    out.append(Grid('singlecycle', snapshot_tx(c, steps, 1, c.singlecycle_lr), steps,
                    [steps], [(s, 100 + i, c.singlecycle_lr) for s in seeds
                              for i in range(m)]))
  return out


def _grid_state(grid: Grid, model, example):
  def init(key):
    variables = model.init(key, example, train=False)
    return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
  keys = jnp.stack([jax.random.key(seed * 1000 + member)
                    for seed, member, _ in grid.replicas])
  return state_lib.create_replicas(
      apply_fn=model.apply, init_fn=init, tx=grid.tx, keys=keys,
      hyperparams=dict(learning_rate=[lr for _, _, lr in grid.replicas]))


def _replica(tree, i: int):
  return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def _history(rows, i: int) -> list:
  return [dict(step=r['step'], loss=float(np.asarray(r['loss'])[i])) for r in rows]


def train_grid(config, grid: Grid, ds, model, folder: str) -> dict:
  """Trains one grid in ``folder`` (resuming there) and evaluates its arms."""
  x, _ = ds.arrays('train')
  x_test, y_test = ds.arrays('test')
  state = _grid_state(grid, model, x[:1])
  trainer = trainer_lib.Trainer(config.train, folder,
                                run_config=dict(run=grid.name, study=config.to_dict()))
  label = f'{grid.name} ({len(grid.replicas)} replicas)'
  fit = trainer.fit(state, ds.train, num_steps=grid.num_steps,
                    log_every=min(config.log_every, grid.num_steps),
                    snapshot_steps=grid.snapshot_steps, name=label)
  seconds = (fit.wall_time - fit.compile_time) / len(grid.replicas)
  snaps = [snap for _, snap in fit.snapshots]

  def evaluate(members):
    return dict(eval=evaluate_members(model, members, x_test, y_test,
                                      config.train.eval_batch_size),
                dead_units=dead_units(model, members, x_test))

  index = {(seed, member, lr): i for i, (seed, member, lr) in enumerate(grid.replicas)}
  arms = set(common.split_names(config.arms))
  out = {}
  for (seed, member, lr), i in index.items():
    history = _history(fit.history, i)
    members = [_replica(s, i) for s in snaps]
    if grid.name == 'single' and member == 0:
      if 'single' in arms:
        out[f'single/{seed}'] = dict(evaluate(members[-1:]), seconds=seconds, history=history)
      if 'nocycle' in arms:
        out[f'nocycle/{seed}'] = dict(evaluate(members), seconds=seconds, history=history)
      if 'true_ensemble' in arms:
        finals = [_replica(snaps[-1], index[(seed, j, lr)])
                  for j in range(config.num_snapshots)]
        out[f'true_ensemble/{seed}'] = dict(evaluate(finals), history=history,
                                            seconds=seconds * config.num_snapshots)
    elif grid.name == 'snapshot':
      out[f'snapshot_{lr:g}/{seed}'] = dict(evaluate(members), seconds=seconds,
                                           history=history)
    elif grid.name == 'singlecycle' and member == 100:
      finals = [_replica(snaps[-1], index[(seed, 100 + j, lr)])
                for j in range(config.num_snapshots)]
      out[f'singlecycle/{seed}'] = dict(evaluate(finals), history=history,
                                        seconds=seconds * config.num_snapshots)
  return out


ARM_ORDER = ('single', 'nocycle', 'singlecycle', 'snapshot', 'true_ensemble')


def _arm_rank(label: str) -> int:
  return ARM_ORDER.index(label.split('_')[0] if label.startswith('snapshot_')
                         else label)


def evaluate_members(model, members: list, x, y, batch_size: int) -> dict:
  stacked = ensemble.stack_trees(members)
  probs = ensemble.ensemble_predict(model.apply, stacked, x, batch_size=batch_size)
  curve = jax.device_get(ensemble.ensemble_curve(probs, y))
  return dict(
      ensemble={k: np.asarray(v).tolist() for k, v in curve['ensemble'].items()},
      members={k: np.asarray(v).tolist() for k, v in curve['members'].items()},
      disagreement=np.asarray(ensemble.pairwise_disagreement(probs)).tolist())


LABELS = {
    'single': 'Single model',
    'nocycle': 'NoCycle snapshot ensemble',
    'singlecycle': 'SingleCycle ensembles',
    'true_ensemble': 'True ensemble (M x B budget)',
}


def _label(arm: str) -> str:
  if arm.startswith('snapshot_'):
    return f'Snapshot ensemble (alpha_0 = {arm.split("_", 1)[1]})'
  return LABELS[arm]


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(per_seed: list[dict]) -> dict:
  """Mean and std over seeds of each arm's metrics."""
  arms = list(per_seed[0])
  out = {}
  for arm in arms:
    rows = [s[arm] for s in per_seed]
    ens = {k: np.array([r['eval']['ensemble'][k] for r in rows]) for k in ('error', 'nll', 'ece')}
    last = {k: np.array([r['eval']['members'][k][-1] for r in rows]) for k in ('error', 'nll', 'ece')}
    out[arm] = dict(
        ensemble_error=_mean_std(ens['error'][:, -1]),
        ensemble_nll=_mean_std(ens['nll'][:, -1]),
        ensemble_ece=_mean_std(ens['ece'][:, -1]),
        last_error=_mean_std(last['error']),
        last_nll=_mean_std(last['nll']),
        last_ece=_mean_std(last['ece']),
        error_vs_m=[_mean_std(ens['error'][:, i]) for i in range(ens['error'].shape[1])],
        seconds=_mean_std([r['seconds'] for r in rows]),
    )
  return out


def _pm(ms, scale=100.0, digits=2) -> str:
  return f'{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}'


def verdict(summary: dict, config) -> list[str]:
  """What the numbers support, claiming nothing smaller than the seed spread."""
  lines = []
  best_snap = [a for a in summary if a.startswith('snapshot_')]
  if 'single' not in summary or not best_snap:
    return lines
  single = summary['single']['last_error']
  for arm in best_snap:
    # diff = this arm's error - the single model's (negative: the arm is better)
    claim, diff, spread = common.seed_claim(summary[arm]['ensemble_error'], single,
                                             config.num_seeds)
    if claim == 'one_seed':
      lines.append(f'- {_label(arm)}: {diff * 100:+.2f} points against the single model '
                   '(one seed: no spread, no claim).')
    elif claim == 'beyond':
      word = 'lower' if diff < 0 else 'higher'
      lines.append(f'- {_label(arm)}: test error {word} than the single model by '
                   f'{abs(diff) * 100:.2f} points, beyond the seed spread ({spread * 100:.2f}).')
    else:
      lines.append(f'- {_label(arm)}: differs from the single model by {diff * 100:+.2f} points, '
                   f'within the seed spread ({spread * 100:.2f}): no claim.')
  if 'true_ensemble' in summary:
    te = summary['true_ensemble']['ensemble_error']
    for arm in best_snap:
      gap = summary[arm]['ensemble_error'][0] - te[0]
      lines.append(f'- {_label(arm)} is {gap * 100:+.2f} points from the true ensemble '
                   f'({_pm(te)} %) at 1/{config.num_snapshots} of its cost.')
  return lines


def dead_units(model, members: list, x, num_examples: int = 500) -> list[float]:
  """Per member: the fraction of hidden units that output 0 on every example
  of a test batch (dead ReLUs), averaged over the hidden layers."""
  dead = propagation.dead_unit_fractions(model.apply, ensemble.stack_trees(members),
                                         x[:num_examples])
  hidden = dead[:, :-1] if dead.shape[1] > 1 else dead
  return [float(np.nanmean(row)) for row in hidden]


def diagnose(per_seed: list[dict], config) -> list[str]:
  """Why a cyclic arm may lose: members at chance level after a restart.

  A member is at chance when its test error is within 2 points of
  ``1 - 1/C`` (it predicts one class). For such arms the training loss right
  after the first restart and at the end are reported: a jump followed by a
  loss stuck at ``ln C`` means the restart killed the network (dead ReLUs).
  """
  num_classes = config.model.num_classes
  chance = 1.0 - 1.0 / num_classes
  period = -(-config.budget_steps // config.num_snapshots)
  lines = []
  for arm in per_seed[0]:
    if not arm.startswith('snapshot_'):
      continue
    dead = [(i, sum(e >= chance - 0.02 for e in s[arm]['eval']['members']['error']))
            for i, s in enumerate(per_seed)]
    if not any(n for _, n in dead):
      continue
    jumps = []
    for i, s in enumerate(per_seed):
      after = [h['loss'] for h in s[arm]['history'] if period < h['step'] <= 2 * period]
      if after:
        jumps.append(f'seed {i}: {max(after):.2f} after the restart, '
                     f'{s[arm]["history"][-1]["loss"]:.2f} at the end')
    total = sum(n for _, n in dead)
    dead_at_chance = [
        d for s in per_seed
        for d, e in zip(s[arm]['dead_units'], s[arm]['eval']['members']['error'])
        if e >= chance - 0.02]
    single_dead = [d for s in per_seed if 'single' in s for d in s['single']['dead_units']]
    lines.append(
        f'- {_label(arm)}: {total} of {config.num_snapshots * len(per_seed)} snapshots '
        f'predict at chance level (error >= {(chance - 0.02) * 100:.0f} %). Training '
        f'loss: {"; ".join(jumps)} (ln {num_classes} = {np.log(num_classes):.2f}). '
        f'In those snapshots {np.mean(dead_at_chance) * 100:.0f} % of the hidden units '
        'are dead (zero on every test example)'
        + (f', against {np.mean(single_dead) * 100:.0f} % in the single model'
           if single_dead else '')
        + '. So the jump back to alpha_0 after the first cycle throws the network out '
        'of its minimum and kills its ReLUs; a dead network gets no gradient, so more '
        'steps or more cycles cannot bring it back.'
        + ('' if config.model.get('batch_norm') else
           f' The model here (`{config.model.name}`) has no normalization layer, '
           "whereas the paper's ResNets have BatchNorm; the `batchnorm` scale "
           '(`./launch.sh snapshot_ensembles:batchnorm`) runs the same protocol '
           'with BatchNorm after each convolution to test whether it lets the '
           'network survive the restarts.')
        + ' The protocol (alpha_0) is kept as the paper has it rather than tuned '
        'until it wins.')
  return lines


def _figures(workdir, summary, per_seed, config):
  m = config.num_snapshots
  fig, ax = plt.subplots(figsize=(6, 4))
  for arm, s in summary.items():
    means = np.array([v[0] for v in s['error_vs_m']]) * 100
    stds = np.array([v[1] for v in s['error_vs_m']]) * 100
    xs = np.arange(1, len(means) + 1)
    ax.errorbar(xs, means, yerr=stds, marker='o', capsize=3, label=_label(arm))
  ax.set_xlabel('number of members ensembled (the last m)')
  ax.set_ylabel('test error (%)')
  ax.set_xticks(range(1, m + 1))
  ax.legend(fontsize=7)
  ax.set_title('Test error against ensemble size (mean ± std over seeds)')
  common.save_figure(fig, os.path.join(workdir, 'error_vs_snapshots.png'))

  fig, (ax_lr, ax_loss) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
  steps = np.arange(config.budget_steps)
  schedules = {'single': single_schedule(config)}
  for alpha in config.snapshot_lrs:
    schedules[f'snapshot_{alpha:g}'] = optim.cyclic_cosine_schedule(
        alpha, config.budget_steps, m)
  for arm, fn in schedules.items():
    if arm not in per_seed[0]:
      continue
    ax_lr.plot(steps + 1, np.asarray(jax.vmap(fn)(steps)), label=_label(arm))
    hist = per_seed[0][arm]['history']
    ax_loss.plot([h['step'] for h in hist], [h['loss'] for h in hist], label=_label(arm))
  for s in optim.snapshot_steps(config.budget_steps, m):
    ax_lr.axvline(s, color='k', linestyle=':', linewidth=0.8)
    ax_loss.axvline(s, color='k', linestyle=':', linewidth=0.8)
  ax_lr.set_ylabel('learning rate')
  ax_loss.set_ylabel('training loss')
  ax_loss.set_yscale('log')
  ax_loss.set_xlabel('step (dotted: snapshots of the cyclic schedule)')
  ax_lr.legend(fontsize=7)
  common.save_figure(fig, os.path.join(workdir, 'lr_and_loss.png'))

  shown = [a for a in per_seed[0] if a.startswith('snapshot_') or a == 'nocycle']
  fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.6 * max(len(shown), 1), 3.2),
                           squeeze=False)
  for ax, arm in zip(axes[0], shown):
    d = np.array(per_seed[0][arm]['eval']['disagreement']) * 100
    im = ax.imshow(d, cmap='viridis', vmin=0)
    for (i, j), v in np.ndenumerate(d):
      ax.text(j, i, f'{v:.0f}', ha='center', va='center', color='w', fontsize=7)
    ax.set_title(_label(arm), fontsize=8)
    ax.set_xlabel('snapshot')
    ax.set_ylabel('snapshot')
    fig.colorbar(im, ax=ax, label='% of test examples predicted differently')
  common.save_figure(fig, os.path.join(workdir, 'disagreement.png'))


def _markdown(summary, config, verdict_lines) -> str:
  m, b = config.num_snapshots, config.budget_steps
  rows = []
  for arm, s in summary.items():
    rows.append((_label(arm), _pm(s['ensemble_error']), _pm(s['last_error']),
                 f'{s["ensemble_nll"][0]:.3f} ± {s["ensemble_nll"][1]:.3f}',
                 _pm(s['ensemble_ece']), f'{s["seconds"][0]:.1f} ± {s["seconds"][1]:.1f}'))
  curve = [(_label(arm), *[_pm(v) for v in s['error_vs_m']]) for arm, s in summary.items()]
  return '\n'.join([
      '# Snapshot ensembles', '',
      f'Data `{config.data.name}`, model `{config.model.name}`, budget B = {b} steps, '
      f'M = {m}, batch {config.data.batch_size}, {config.num_seeds} seed(s) '
      '(mean ± std; seeds differ in initialisation and dropout, the data order is '
      'fixed). Errors, ECE in %. Train seconds: per model, compilation excluded.', '',
      common.markdown_table(
          ['method', 'test error (ensemble)', 'test error (last model)', 'NLL (ensemble)',
           'ECE (ensemble)', 'train seconds'], rows), '',
      '## Test error of the ensemble of the last m members', '',
      common.markdown_table(['method'] + [f'm = {i}' for i in range(1, m + 1)], curve), '',
      '## What the numbers say', '', *verdict_lines, '',
      'Figures: `error_vs_snapshots.png`, `lr_and_loss.png`, `disagreement.png`.', '',
  ])


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  ds = data_lib.get_dataset(config.data)
  model = models.build_model(config.model)
  by_arm = {}
  for grid in grids(config):
    out = study.run(grid.name, lambda folder, grid=grid: train_grid(config, grid, ds, model,
                                                                     folder))
    for key, value in out.items():
      arm, seed = key.rsplit('/', 1)
      by_arm.setdefault(arm, {})[int(seed)] = value
  seeds = [config.seed + i for i in range(config.num_seeds)]
  arms = sorted(by_arm, key=lambda a: (_arm_rank(a), a))
  per_seed = [{arm: by_arm[arm][seed] for arm in arms} for seed in seeds]
  summary = summarize(per_seed)
  lines = verdict(summary, config) + diagnose(per_seed, config)
  _figures(workdir, summary, per_seed, config)
  common.atomic_write(os.path.join(workdir, 'results.md'), _markdown(summary, config, lines))
  results = dict(summary=summary, per_seed=per_seed, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
