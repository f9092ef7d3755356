"""Minibatch size: loss against examples seen and against wall clock.

Minibatch SGD (``research.optim.sgd``) on linear regression with batch sizes
1, 10, 100 and the full training set (gradient descent), each at the
textbook's learning rate for it. Per epoch, small batches make many cheap,
noisy updates; the full batch makes one exact, vectorized one. Measured: the
training loss (the textbook's (y_hat - y)^2 / 2 over the whole training set)
after every ``1 / points_per_epoch`` of an epoch, against the examples seen
and against the wall clock spent in the updates (compilation and the loss
measurements excluded), for two ways of dispatching the updates:

- ``scan``: the updates between two measurements run in one compiled
  ``lax.scan``; the clock measures the arithmetic and its sequential
  dependence;
- ``step``: one compiled step per update, called from Python; the clock also
  counts the per-call overhead, as the textbook's training loop does.

Each (seed, batch size, dispatch) is a run of the study, in
``runs/seed=S-batch=B-MODE/``: a rerun into the same workdir skips the
finished runs (and keeps their timings) and measures the others. Outputs
``curves.png``, ``results.md`` and ``results.json``.

References: Zhang, Lipton, Li and Smola, Dive into Deep Learning, section 11.5
(minibatch stochastic gradient descent), 2023.
"""

from __future__ import annotations

import functools
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common
from research import data
from research import optim
from research.train import metric_writers

DISPATCH = ('scan', 'step')


def squared_loss(params, x, y):
  return 0.5 * jnp.mean(jnp.square(x @ params['w'] + params['b'] - y))


def parse_batch_sizes(text: str, n: int) -> list[int]:
  """``'1,10,full'`` -> ``[1, 10, n]``."""
  return [n if b == 'full' else int(b) for b in common.split_names(text)]


def validate(config):
  require = common.require
  require(config.seeds >= 1, 'seeds', config.seeds, '>= 1')
  d = config.data
  require(d.num_train >= 1, 'data.num_train', d.num_train, '>= 1')
  require(d.input_dim >= 1, 'data.input_dim', d.input_dim, '>= 1')
  require(d.noise >= 0, 'data.noise', d.noise, '>= 0')
  require(d.condition_number >= 1, 'data.condition_number', d.condition_number, '>= 1')
  names = common.split_names(config.batch_sizes)
  allowed = f"integers in [1, data.num_train={d.num_train}] or 'full'"
  require(len(names) >= 1, 'batch_sizes', config.batch_sizes, allowed)
  for b in names:
    ok = b == 'full' or (b.isdigit() and 1 <= int(b) <= d.num_train)
    require(ok, 'batch_sizes', b, allowed)
  require(len(set(names)) == len(names), 'batch_sizes', config.batch_sizes, 'distinct sizes')
  require(len(config.learning_rates) == len(names), 'learning_rates',
          config.learning_rates, f'one rate per batch size ({len(names)})')
  require(all(r > 0 for r in config.learning_rates), 'learning_rates',
          config.learning_rates, 'rates > 0')
  require(config.epochs >= 1, 'epochs', config.epochs, '>= 1')
  require(config.points_per_epoch >= 1, 'points_per_epoch', config.points_per_epoch, '>= 1')
  require(config.timing_repeats >= 1, 'timing_repeats', config.timing_repeats, '>= 1')
  modes = common.split_names(config.dispatch)
  require(len(modes) >= 1, 'dispatch', config.dispatch, 'one or more of scan, step')
  common.require_choices('dispatch', modes, DISPATCH)


def feature_scales(input_dim: int, condition_number: float) -> np.ndarray:
  """Column scales from 1 down to ``1 / sqrt(condition_number)``, log-spaced."""
  return np.logspace(0.0, -0.5 * np.log10(condition_number), input_dim)


def _dataset(config, seed):
  """The training split with column ``j`` scaled by ``s_j``.

  The targets are those of the unscaled inputs, so the true weights become
  ``0.01 / s_j``, every column still explains the same share of ``y``, and
  the Hessian of the loss has eigenvalues ``s_j^2`` from 1 down to
  ``1 / condition_number``: plain gradient descent needs many updates, as on
  the textbook's airfoil data with its correlated features.
  """
  d = config.data
  dcfg = data.default_config()
  dcfg.update(dict(name='synthetic:linear_highdim', num_train=d.num_train, seed=seed,
                   batch_size=1))
  dcfg.synthetic.update(dict(input_dim=d.input_dim, noise=d.noise))
  x, y = data.get_dataset(dcfg).arrays('train')
  scales = feature_scales(d.input_dim, d.condition_number)
  return (x * scales).astype(np.float32), y


def _epoch_chunks(n, batch, points, seed, epoch):
  """The epoch's batches as index arrays ``(steps, batch)``, split into at
  most ``points`` runs of nearly equal length."""
  per_epoch = n // batch
  order = np.random.default_rng((seed, epoch)).permutation(n)[:per_epoch * batch]
  steps = order.reshape(per_epoch, batch).astype(np.int32)
  return [c for c in np.array_split(steps, min(points, per_epoch)) if len(c)]


def _sgd_step(tx, x, y, carry, idx):
  params, opt_state = carry
  grads = jax.grad(squared_loss)(params, x[idx], y[idx])
  updates, opt_state = tx.update(grads, opt_state, params)
  return optim.apply_updates(params, updates), opt_state


# Module-level programs: every seed (same shapes) and every rate (held in the
# optimizer state by optim.make) shares one compilation per batch size.
@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _scan_updates(tx, carry, idxs, x, y):
  return jax.lax.scan(lambda c, idx: (_sgd_step(tx, x, y, c, idx), None), carry, idxs)[0]


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _one_update(tx, carry, idx, x, y):
  return _sgd_step(tx, x, y, carry, idx)


@jax.jit
def _full_loss(params, x, y):
  return squared_loss(params, x, y)


def train_arm(x, y, batch, lr, config, seed, mode, label=''):
  """One run; returns the measurements (examples, seconds, loss)."""
  n, d = x.shape
  tx = optim.make('sgd', lr)
  x, y = jnp.asarray(x), jnp.asarray(y)

  def fresh():
    params = {'w': jnp.zeros(d, x.dtype), 'b': jnp.zeros((), x.dtype)}
    return params, tx.init(params)

  def run_chunk(carry, idxs):
    if mode == 'scan':
      return _scan_updates(tx, carry, jnp.asarray(idxs), x, y)
    for idx in idxs:
      carry = _one_update(tx, carry, idx, x, y)
    return carry

  # Compile every shape before the clock starts.
  shapes = {len(c) for c in _epoch_chunks(n, batch, config.points_per_epoch, seed, 0)}
  for length in shapes:
    jax.block_until_ready(run_chunk(fresh(), np.zeros((length, batch), np.int32)))
  plan = [_epoch_chunks(n, batch, config.points_per_epoch, seed, epoch)
          for epoch in range(config.epochs)]
  progress = metric_writers.Progress(config.timing_repeats * sum(map(len, plan)), 0, True,
                                     label, 30.0)
  # The same run `timing_repeats` times (bit-identical losses); each chunk's
  # time is its median over the repeats, robust to other processes.
  durations = []
  for _ in range(config.timing_repeats):
    carry, times, losses = fresh(), [], [float(_full_loss(fresh()[0], x, y))]
    for chunks in plan:
      for idxs in chunks:
        start = time.perf_counter()
        carry = jax.block_until_ready(run_chunk(carry, idxs))
        times.append(time.perf_counter() - start)
        losses.append(float(_full_loss(carry[0], x, y)))
        progress.update(progress.n + 1, dict(loss=losses[-1]))
    durations.append(times)
  progress.close()
  chunk_seconds = np.median(np.asarray(durations), axis=0)
  sizes = [idxs.size for chunks in plan for idxs in chunks]
  per_chunk = iter(chunk_seconds)
  epoch_seconds = [float(sum(next(per_chunk) for _ in chunks)) for chunks in plan]
  return dict(examples=np.concatenate([[0], np.cumsum(sizes)]).tolist(),
              seconds=np.concatenate([[0.0], np.cumsum(chunk_seconds)]).tolist(),
              loss=losses, seconds_per_epoch=float(np.median(epoch_seconds)),
              epoch_seconds=epoch_seconds)


def arms(config) -> list[tuple[str, float]]:
  """``(batch-size name, learning rate)`` of each arm, in the config's order."""
  return list(zip(common.split_names(config.batch_sizes), config.learning_rates))


def run_name(seed: int, name: str, mode: str) -> str:
  return f'seed={seed}-batch={name}-{mode}'


def train_part(config, seed, name, lr, mode) -> dict:
  """One run of :class:`experiments.common.Study`: an arm, a seed, a dispatch mode."""
  x, y = _dataset(config, seed)
  batch = parse_batch_sizes(name, len(y))[0]
  return dict(seed=seed, **train_arm(x, y, batch, lr, config, seed, mode,
                                     label=run_name(seed, name, mode)))


def run_all(config, study):
  """Every (seed, arm, mode) as a run of ``study``; the results by arm."""
  modes = common.split_names(config.dispatch)
  n = config.data.num_train
  results = {name: dict(batch_size=parse_batch_sizes(name, n)[0], learning_rate=lr,
                        runs={m: [] for m in modes}) for name, lr in arms(config)}
  for seed in range(config.seeds):
    for name, lr in arms(config):
      for mode in modes:
        label = run_name(seed, name, mode)
        t0 = time.time()
        out = study.run(label, lambda folder, s=seed, b=name, r=lr, m=mode:
                        train_part(config, s, b, r, m))
        logging.info('run %s: done in %.1fs', label, time.time() - t0)
        results[name]['runs'][mode].append(out)
  return results


def _pm(values, fmt='.3g') -> str:
  values = np.asarray(values, np.float64)
  return f'{values.mean():{fmt}} ± {values.std():{fmt}}'


def _first_reaching(run, target, key):
  for value, loss in zip(run[key], run['loss']):
    if loss <= target:
      return value
  return None


def _plot(results, config, n, target):
  modes = common.split_names(config.dispatch)
  fig, axes = plt.subplots(1, 1 + len(modes), figsize=(5 * (1 + len(modes)), 4), squeeze=False)
  axes = axes[0]
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, (name, entry) in enumerate(results.items()):
    color = colors[i % len(colors)]
    label = f'batch {entry["batch_size"]}, lr {entry["learning_rate"]:g}'
    first = entry['runs'][modes[0]][0]
    axes[0].plot(np.asarray(first['examples']) / n, first['loss'], color=color, label=label)
    for ax, mode in zip(axes[1:], modes):
      r = entry['runs'][mode][0]  # from the first measurement: log time axis
      ax.plot(r['seconds'][1:], r['loss'][1:], color=color, label=label)
  axes[0].set_xlabel('epochs (examples seen / n)')
  axes[0].set_title('loss against examples seen')
  for ax, mode in zip(axes[1:], modes):
    ax.set_xscale('log')
    ax.set_xlabel('seconds in the updates (log)')
    ax.set_title(f'loss against wall clock, dispatch={mode}')
  for ax in axes:
    ax.set_yscale('log')
    ax.axhline(target, color='#999999', linewidth=0.8, linestyle=':')
  axes[0].set_ylabel('training loss (seed 0)')
  axes[0].legend(fontsize=8)
  fig.suptitle(f'Minibatch SGD on linear regression, n = {n}, d = {config.data.input_dim} '
               f'(dotted: target loss {target:.3g})')
  fig.tight_layout()
  return fig


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  results = run_all(config, study)
  modes = common.split_names(config.dispatch)
  n = config.data.num_train
  floor = 0.5 * config.data.noise**2
  target = 2.0 * floor  # twice the noise floor: reached by every converged arm
  common.save_figure(_plot(results, config, n, target), os.path.join(workdir, 'curves.png'))

  rows = []
  for name, entry in results.items():
    first = entry['runs'][modes[0]]
    reach = [_first_reaching(r, target, 'examples') for r in first]
    row = [entry['batch_size'], f'{entry["learning_rate"]:g}', n // entry['batch_size'],
           _pm([r['loss'][-1] for r in first]),
           _pm([e / n for e in reach]) if None not in reach else 'not reached']
    for mode in modes:
      runs = entry['runs'][mode]
      row.append(_pm([1e3 * r['seconds_per_epoch'] for r in runs]))
      t = [_first_reaching(r, target, 'seconds') for r in runs]
      row.append(_pm([1e3 * s for s in t]) if None not in t else 'not reached')
    rows.append(row)
  headers = ['batch', 'lr', 'updates / epoch', 'final loss', 'epochs to target']
  for mode in modes:
    headers += [f'ms / epoch ({mode})', f'ms to target ({mode})']
  md = [
      '# Minibatch size: SGD with batches of ' + ', '.join(
          str(e['batch_size']) for e in results.values()), '',
      f'Linear regression y = 0.05 + 0.01 sum_i x_i + {config.data.noise:g} eps, '
      f'x ~ N(0, I_{config.data.input_dim}), n = {n} (synthetic:linear_highdim), '
      f'input column j scaled by s_j, log-spaced from 1 to 1/sqrt('
      f'{config.data.condition_number:g}) (Hessian condition number '
      f'{config.data.condition_number:g}); w = 0, b = 0 at the start; '
      f'{config.epochs} epochs; loss (y_hat - y)^2 / 2 over the training set, '
      f'noise floor {floor:.3g}, target {target:.3g}. {config.seeds} seed(s) '
      '(data and batch order), mean ± std. The clock counts the updates only '
      '(compilation and loss measurements excluded), each stretch between two '
      f'measurements timed {config.timing_repeats} times (median); ms / epoch is '
      f'the median epoch. `scan`: one compiled call per 1/{config.points_per_epoch} epoch, '
      f'`step`: one compiled call per update. Backend: {jax.default_backend()}. '
      'Figure: `curves.png`.', '',
      common.markdown_table(headers, rows), '',
  ]
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))
  out = dict(arms=results, target=target, noise_floor=floor)
  common.write_json(os.path.join(workdir, 'results.json'), out)
  return out
