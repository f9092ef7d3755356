"""Training error, generalization error and how to choose a model.

Part 1 (``capacity.png``): polynomial regression of degree 1, 3 and 20 on few
and on many samples of the textbook's cubic: degree 1 underfits (high
training loss), degree 3 fits, degree 20 on few samples overfits (training
loss below the noise, test loss far above it); with many samples the gap
closes. Training and test loss curves over the updates.

Part 2 (``selection.png``): on few samples, the weight decay of the degree-20
model and, separately, the degree, chosen on a holdout validation set and by
K-fold cross-validation; the K-fold mean and spread of every candidate, and
the test loss of the chosen model refit on all the training data. A lower
degree is the same model with the higher features masked to zero, so every
candidate trains at once under ``jax.vmap``.

Part 3 (``weight_decay.png``): weight decay on linear regression with d = 200
inputs and n = 20 examples: training and test loss against the weight decay
(the textbook: lambda = 0 overfits, lambda = 3 generalizes).

Every model is linear in its features, y_hat = x w + b, trained by minibatch
SGD (``research.optim.sgd``) on the textbook's squared loss
(y_hat - y)^2 / 2 plus lambda ||w||^2 / 2 (the bias is not decayed). The
losses reported are the squared loss without the penalty. All candidates of a
sweep train at once under ``jax.vmap``.

Each independent part is a run of the study (:func:`parts`): one per sample
size and degree (``runs/capacity-SIZE-degree=D``, every seed), and one per
seed for the model selection and the weight decay sweep. A rerun into the
same workdir skips the finished parts and ends with the same
``results.json``.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common
from research import data
from research import optim

MAX_DEGREE = 30


# --- Training ----------------------------------------------------------------------


def squared_loss(params, x, y):
  """The textbook's (y_hat - y)^2 / 2, averaged over the examples."""
  return 0.5 * jnp.mean(jnp.square(x @ params['w'] + params['b'] - y))


def batch_plan(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """``(steps, batch)`` example indices: epoch ``e`` in the order of
  ``default_rng((seed, e))``, its last partial batch dropped."""
  if not 0 <= batch_size <= n:
    raise ValueError(f'batch_size={batch_size!r} is invalid for {n} examples; allowed: '
                     f'0 (full batch) to {n}.')
  batch = n if batch_size == 0 else batch_size
  per_epoch = n // batch
  epochs = -(-steps // per_epoch)
  plan = [np.random.default_rng((seed, e)).permutation(n)[:per_epoch * batch]
          for e in range(epochs)]
  return np.concatenate(plan).reshape(-1, batch)[:steps]


@functools.partial(jax.jit, static_argnames=('num_points',))
def _fit(w0, x, y, evals, weight_decays, masks, learning_rate, plan, num_points):
  """Trains one model per (weight decay, feature mask); losses at
  ``num_points + 1`` points."""
  plan = plan.reshape((num_points, -1) + plan.shape[1:])
  tx = optim.sgd(learning_rate)

  def one(lam, mask):
    # A masked-out feature is a zero column: its weight keeps its initial
    # value, so with w0 = 0 the model is exactly the smaller one.
    def loss_row(params):
      return {'train': squared_loss(params, x * mask, y),
              **{k: squared_loss(params, ex * mask, ey) for k, (ex, ey) in evals.items()}}

    def objective(params, xb, yb):
      return (squared_loss(params, xb * mask, yb)
              + 0.5 * lam * jnp.sum(jnp.square(params['w'])))

    def step(carry, idx):
      params, opt_state = carry
      grads = jax.grad(objective)(params, x[idx], y[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optim.apply_updates(params, updates), opt_state), None

    def chunk(carry, idxs):
      carry, _ = jax.lax.scan(step, carry, idxs)
      return carry, loss_row(carry[0])

    params = {'w': w0, 'b': jnp.zeros((), w0.dtype)}
    (params, _), curve = jax.lax.scan(chunk, (params, tx.init(params)), plan)
    first = loss_row({'w': w0, 'b': jnp.zeros((), w0.dtype)})
    curve = jax.tree.map(lambda a, c: jnp.concatenate([a[None], c]), first, curve)
    return params, curve

  return jax.vmap(one)(weight_decays, masks)


def fit(x, y, evals, weight_decays, *, steps, batch_size, learning_rate, num_points=1,
        seed=0, init_std=0.0, masks=None):
  """Minibatch SGD of ``y ~ x w + b``, one model per weight decay.

  ``masks`` (one row of 0/1 per model, default all ones) keeps only some
  features: the degree of a polynomial model.

  Returns ``(params, curves)``: params with a leading model axis, and for
  ``'train'`` and each eval set a ``(len(weight_decays), num_points + 1)``
  array of squared losses, the first at initialization.
  """
  x = jnp.asarray(x)
  w0 = init_std * jax.random.normal(jax.random.key(seed), (x.shape[1],), x.dtype)
  plan = jnp.asarray(batch_plan(len(y), batch_size, steps, seed))
  evals = {k: (jnp.asarray(ex), jnp.asarray(ey)) for k, (ex, ey) in evals.items()}
  if masks is None:
    masks = np.ones((len(weight_decays), x.shape[1]))
  params, curves = _fit(w0, x, jnp.asarray(y), evals,
                        jnp.asarray(weight_decays, x.dtype), jnp.asarray(masks, x.dtype),
                        learning_rate, plan, num_points)
  return jax.device_get(params), {k: np.asarray(v) for k, v in curves.items()}


# --- Data ----------------------------------------------------------------------------


def polynomial_data(degree, num_train, num_test, noise, seed):
  dcfg = data.default_config()
  dcfg.update(dict(name='synthetic:polynomial', num_train=num_train, seed=seed,
                   batch_size=1))
  dcfg.synthetic.update(dict(degree=degree, num_test=num_test, noise=noise))
  ds = data.get_dataset(dcfg)
  return ds.arrays('train'), ds.arrays('test')


def highdim_data(c, seed):
  dcfg = data.default_config()
  dcfg.update(dict(name='synthetic:linear_highdim', num_train=c.num_train, seed=seed,
                   batch_size=1))
  dcfg.synthetic.update(dict(input_dim=c.input_dim, num_test=c.num_test, noise=c.noise))
  ds = data.get_dataset(dcfg)
  return ds.arrays('train'), ds.arrays('test')


# --- Config checks -----------------------------------------------------------------


def _check_run(section, c):
  require = common.require
  require(c.steps >= 1, f'{section}.steps', c.steps, '>= 1')
  require(c.batch_size >= 0, f'{section}.batch_size', c.batch_size, '>= 0 (0: full batch)')
  require(c.learning_rate > 0, f'{section}.learning_rate', c.learning_rate, '> 0')
  if 'num_points' in c:
    require(1 <= c.num_points <= c.steps and c.steps % c.num_points == 0,
            f'{section}.num_points', c.num_points,
            f'a divisor of {section}.steps={c.steps}')


def _check_decays(field, values):
  common.require(len(values) >= 1 and all(v >= 0 for v in values), field, values,
                 'one or more weight decays >= 0')


def validate(config):
  require = common.require
  require(config.seeds >= 1, 'seeds', config.seeds, '>= 1')
  require(config.noise >= 0, 'noise', config.noise, '>= 0')
  c = config.capacity
  require(len(c.degrees) >= 1 and all(
      isinstance(d, int) and 0 <= d <= MAX_DEGREE for d in c.degrees),
      'capacity.degrees', c.degrees, f'one or more int degrees in [0, {MAX_DEGREE}]')
  for field in ('few', 'many', 'num_test'):
    require(c[field] >= 1, f'capacity.{field}', c[field], '>= 1')
  _check_run('capacity', c)
  require(c.batch_size <= min(c.few, c.many), 'capacity.batch_size', c.batch_size,
          f'0 (full batch) to capacity.few={c.few}')

  s = config.selection
  require(isinstance(s.degree, int) and 0 <= s.degree <= MAX_DEGREE, 'selection.degree',
          s.degree, f'an int in [0, {MAX_DEGREE}]')
  require(s.num_train >= 2, 'selection.num_train', s.num_train, '>= 2')
  require(s.num_test >= 1, 'selection.num_test', s.num_test, '>= 1')
  require(len(s.weight_decays) >= 2, 'selection.weight_decays', s.weight_decays,
          'at least two candidates')
  _check_decays('selection.weight_decays', s.weight_decays)
  require(len(s.degrees) >= 2 and all(
      isinstance(d, int) and 0 <= d <= MAX_DEGREE for d in s.degrees),
      'selection.degrees', s.degrees, f'two or more int degrees in [0, {MAX_DEGREE}]')
  held = round(s.validation_fraction * s.num_train)
  require(0 < s.validation_fraction < 1 and 1 <= held <= s.num_train - 1,
          'selection.validation_fraction', s.validation_fraction,
          f'a fraction of selection.num_train={s.num_train} leaving at least one '
          'example on each side')
  require(2 <= s.num_folds <= s.num_train, 'selection.num_folds', s.num_folds,
          f'[2, selection.num_train={s.num_train}]')
  _check_run('selection', s)
  smallest = min(s.num_train - held, s.num_train - -(-s.num_train // s.num_folds))
  require(s.batch_size <= smallest, 'selection.batch_size', s.batch_size,
          f'0 (full batch) to {smallest} (the smallest training part of a split)')

  w = config.weight_decay
  for field in ('input_dim', 'num_train', 'num_test'):
    require(w[field] >= 1, f'weight_decay.{field}', w[field], '>= 1')
  require(w.noise >= 0, 'weight_decay.noise', w.noise, '>= 0')
  require(w.init_std >= 0, 'weight_decay.init_std', w.init_std, '>= 0')
  _check_decays('weight_decay.weight_decays', w.weight_decays)
  _check_run('weight_decay', w)
  require(w.batch_size <= w.num_train, 'weight_decay.batch_size', w.batch_size,
          f'0 (full batch) to weight_decay.num_train={w.num_train}')
  for field, values in (('capacity.degrees', c.degrees), ('selection.weight_decays',
                                                          s.weight_decays)):
    require(len(set(values)) == len(values), field, values, 'distinct values')


# --- Part 1: capacity and sample size -------------------------------------------


def capacity_part(config, size_name, degree) -> dict:
  """Every seed's loss curves for one degree and one sample size."""
  c = config.capacity
  n = c[size_name]
  runs = []
  for seed in range(config.seeds):
    (x, y), test = polynomial_data(degree, n, c.num_test, config.noise, seed)
    _, curves = fit(x, y, {'test': test}, [0.0], steps=c.steps,
                    batch_size=c.batch_size, learning_rate=c.learning_rate,
                    num_points=c.num_points, seed=seed)
    runs.append(dict(seed=seed, train=curves['train'][0].tolist(),
                     test=curves['test'][0].tolist()))
  return dict(size=size_name, num_train=n, degree=degree, runs=runs)


def _final(runs, key):
  return np.array([r[key][-1] for r in runs])


def _pm(values, fmt='.4g') -> str:
  values = np.asarray(values, np.float64)
  return f'{values.mean():{fmt}} ± {values.std():{fmt}}'


def _plot_capacity(capacity, c):
  degrees = list(c.degrees)
  fig, axes = plt.subplots(2, len(degrees), figsize=(4 * len(degrees), 6.5),
                           squeeze=False, sharey=True)
  steps = np.linspace(0, c.steps, c.num_points + 1)
  for i, size_name in enumerate(('few', 'many')):
    for j, degree in enumerate(degrees):
      entry = capacity[f'{size_name}/{degree}']
      ax = axes[i, j]
      for k, r in enumerate(entry['runs']):
        ax.plot(steps, r['train'], color='#1f77b4', alpha=1.0 if k == 0 else 0.35,
                label='train' if k == 0 else None)
        ax.plot(steps, r['test'], color='#d62728', alpha=1.0 if k == 0 else 0.35,
                label='test' if k == 0 else None)
      ax.set_yscale('log')
      ax.set_title(f'degree {degree}, n = {entry["num_train"]}', fontsize=9)
      ax.set_xlabel('update')
  axes[0, 0].set_ylabel('squared loss')
  axes[1, 0].set_ylabel('squared loss')
  axes[0, 0].legend(fontsize=8)
  fig.suptitle('Polynomial regression: underfitting (degree 1), a good fit (3), '
               'overfitting (20 on few samples); one line per seed')
  fig.tight_layout()
  return fig


# --- Part 2: model selection -------------------------------------------------------


class Candidate(NamedTuple):
  label: str
  weight_decay: float
  degree: int


def selection_sweeps(s) -> dict[str, list[Candidate]]:
  """The two searches: lambda for the degree-``s.degree`` model, and the
  degree without weight decay."""
  return {
      'weight_decay': [Candidate(f'lambda={lam:g}', float(lam), s.degree)
                       for lam in s.weight_decays],
      'degree': [Candidate(f'degree {d}', 0.0, d) for d in s.degrees],
  }


def _select(x, y, test, candidates, s, seed):
  """Holdout and K-fold validation losses of every candidate, and the test
  loss of each refit on all the training data."""
  decays = [c.weight_decay for c in candidates]
  masks = np.array([np.arange(x.shape[1]) <= c.degree for c in candidates])
  kwargs = dict(steps=s.steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
                seed=seed, masks=masks)

  def val_losses(train_idx, val_idx):
    _, curves = fit(x[train_idx], y[train_idx], {'val': (x[val_idx], y[val_idx])},
                    decays, **kwargs)
    return curves['val'][:, -1]

  tr, va = data.holdout_split(len(y), fraction=s.validation_fraction, seed=seed)
  holdout = val_losses(tr, va)
  folds = np.stack([val_losses(tr, va)
                    for tr, va in data.kfold_split(len(y), s.num_folds, seed=seed)])
  # The chosen candidate is refit on all the training data; the others'
  # test losses only show what an oracle would pick.
  _, curves = fit(x, y, {'test': test}, decays, **kwargs)
  test_loss = curves['test'][:, -1]
  picks = dict(holdout=int(np.argmin(holdout)), kfold=int(np.argmin(folds.mean(0))),
               oracle=int(np.argmin(test_loss)))
  return dict(
      seed=seed, holdout=holdout.tolist(), folds=folds.tolist(),
      kfold_mean=folds.mean(0).tolist(), kfold_std=folds.std(0).tolist(),
      refit_train=curves['train'][:, -1].tolist(), refit_test=test_loss.tolist(),
      chosen={k: candidates[i].label for k, i in picks.items()},
      chosen_test={k: float(test_loss[i]) for k, i in picks.items()},
  )


def selection_part(config, seed) -> dict:
  """Both searches (:func:`selection_sweeps`) on one seed's data."""
  s = config.selection
  top = max([s.degree] + list(s.degrees))
  (x, y), test = polynomial_data(top, s.num_train, s.num_test, config.noise, seed)
  return {name: _select(x, y, test, cands, s, seed)
          for name, cands in selection_sweeps(s).items()}


def _plot_selection(selection, s):
  fig, axes = plt.subplots(1, len(selection), figsize=(6.5 * len(selection), 4.2),
                           squeeze=False)
  for ax, (name, sweep) in zip(axes[0], selection.items()):
    seeds = sweep['seeds']
    x = np.arange(len(sweep['candidates']))
    folds = np.array([r['folds'] for r in seeds])  # (seeds, K, candidates)
    for key, label, color in (('holdout', 'holdout validation', '#2ca02c'),
                              ('kfold_mean', f'{s.num_folds}-fold mean', '#1f77b4'),
                              ('refit_test', 'test (refit on all)', '#d62728'),
                              ('refit_train', 'train (refit on all)', '#7f7f7f')):
      arr = np.array([r[key] for r in seeds])
      ax.plot(x, np.median(arr, 0), '-o', color=color, label=label, markersize=4)
    # The spread over folds as their range (a std band has no log scale).
    ax.fill_between(x, np.median(folds.min(1), 0), np.median(folds.max(1), 0),
                    color='#1f77b4', alpha=0.15, label='fold min - max')
    ax.set_xticks(x, [c.split('=')[-1].replace('degree ', '') for c in sweep['candidates']])
    ax.set_xlabel('weight decay lambda (degree %d)' % s.degree if name == 'weight_decay'
                  else 'polynomial degree (no weight decay)')
    ax.set_ylabel('squared loss (median over seeds)')
    ax.set_yscale('log')
    ax.legend(fontsize=7)
  fig.suptitle(f'Model selection on n = {s.num_train} samples')
  fig.tight_layout()
  return fig


# --- Part 3: weight decay in high dimension ------------------------------------------


def weight_decay_part(config, seed) -> dict:
  """Every weight decay at once on one seed's data."""
  w = config.weight_decay
  (x, y), test = highdim_data(w, seed)
  params, curves = fit(x, y, {'test': test}, list(w.weight_decays), steps=w.steps,
                       batch_size=w.batch_size, learning_rate=w.learning_rate,
                       num_points=w.num_points, seed=seed, init_std=w.init_std)
  return dict(seed=seed, train=curves['train'].tolist(), test=curves['test'].tolist(),
              w_norm=np.linalg.norm(params['w'], axis=-1).tolist())


def _plot_weight_decay(wd, w):
  decays = np.asarray(wd['weight_decays'])
  runs = wd['runs']
  train = np.array([[c[-1] for c in r['train']] for r in runs])
  test = np.array([[c[-1] for c in r['test']] for r in runs])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  x = np.arange(len(decays))
  for arr, label, color in ((train, 'train', '#1f77b4'), (test, 'test', '#d62728')):
    axes[0].errorbar(x, arr.mean(0), yerr=arr.std(0), fmt='-o', color=color,
                     label=label, markersize=4, capsize=3)
  axes[0].set_xticks(x, [f'{d:g}' for d in decays])
  axes[0].set_yscale('log')
  axes[0].set_xlabel('weight decay lambda')
  axes[0].set_ylabel('squared loss after training (mean ± std over seeds)')
  axes[0].legend()
  steps = np.linspace(0, w.steps, w.num_points + 1)
  # No decay against the decay with the best mean test loss.
  shown = sorted({int(np.argmin(decays)), int(np.argmin(test.mean(0)))})
  for i in shown:
    style, lam = ('-' if i == shown[0] else '--'), decays[i]
    axes[1].plot(steps, runs[0]['train'][i], style, color='#1f77b4',
                 label=f'train, lambda={lam:g}')
    axes[1].plot(steps, runs[0]['test'][i], style, color='#d62728',
                 label=f'test, lambda={lam:g}')
  axes[1].set_yscale('log')
  axes[1].set_xlabel('update')
  axes[1].set_title('seed 0')
  axes[1].legend(fontsize=8)
  fig.suptitle(f'Weight decay: linear regression, d = {w.input_dim}, n = {w.num_train}')
  fig.tight_layout()
  return fig


def _selection_md(selection, s) -> list[str]:
  batch = 'full batch' if s.batch_size == 0 else f'batch {s.batch_size}'
  md = [
      f'## Model selection on n = {s.num_train} samples', '',
      f'Two searches on the same data: the weight decay lambda of the '
      f'degree-{s.degree} model, and the degree without weight decay. Holdout: '
      f'{s.validation_fraction:g} of the training set for validation. '
      f'{s.num_folds}-fold: mean and std of the validation loss over the folds. '
      'Each method picks the candidate with the lowest validation loss, which is '
      f'then refit on all {s.num_train} examples and scored on the test set '
      f'({s.num_test} examples). Rate {s.learning_rate:g}, {batch}, {s.steps} '
      'updates. Figure: `selection.png`.', '',
  ]
  methods = (('holdout validation set', 'holdout'),
             (f'{s.num_folds}-fold cross-validation', 'kfold'),
             ('oracle (lowest test loss; not a method)', 'oracle'))
  for name, sweep in selection.items():
    seeds, cands = sweep['seeds'], sweep['candidates']
    rows = [(label, _pm([r['holdout'][i] for r in seeds]),
             _pm([r['kfold_mean'][i] for r in seeds]),
             _pm([r['kfold_std'][i] for r in seeds]),
             _pm([r['refit_train'][i] for r in seeds]),
             _pm([r['refit_test'][i] for r in seeds]))
            for i, label in enumerate(cands)]
    seed0 = seeds[0]
    fold_rows = [(label, *[f'{f[i]:.4g}' for f in seed0['folds']],
                  f'{seed0["kfold_mean"][i]:.4g} ± {seed0["kfold_std"][i]:.4g}')
                 for i, label in enumerate(cands)]
    picks = [(method, ', '.join(r['chosen'][key] for r in seeds),
              _pm([r['chosen_test'][key] for r in seeds]))
             for method, key in methods]
    title = (f'lambda of the degree-{s.degree} model' if name == 'weight_decay'
             else 'degree, no weight decay')
    md += [
        f'### Choosing the {title}', '',
        common.markdown_table(
            ['candidate', 'holdout val loss', f'{s.num_folds}-fold mean',
             f'{s.num_folds}-fold std', 'train loss (refit on all)',
             'test loss (refit on all)'], rows),
        '', 'The folds of seed 0:', '',
        common.markdown_table(['candidate'] + [f'fold {k}' for k in range(s.num_folds)]
                              + ['mean ± std'], fold_rows),
        '', common.markdown_table(['selection', 'chosen (per seed)',
                                   'test loss of the chosen model'], picks),
        '',
    ]
  return md


# --- The study -------------------------------------------------------------------------


def parts(config) -> list:
  """The study's independent parts: ``(run name, compute() -> JSON-able dict)``.

  Each is a run of :class:`experiments.common.Study`: a rerun into the same
  workdir skips the finished ones.
  """
  out = [(f'capacity-{size}-degree={d}', functools.partial(capacity_part, config, size, d))
         for size in ('few', 'many') for d in config.capacity.degrees]
  out += [(f'selection-seed={seed}', functools.partial(selection_part, config, seed))
          for seed in range(config.seeds)]
  out += [(f'weight_decay-seed={seed}', functools.partial(weight_decay_part, config, seed))
          for seed in range(config.seeds)]
  return out


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  c, s, w = config.capacity, config.selection, config.weight_decay
  done = {name: common.run_part(study, name, compute) for name, compute in parts(config)}
  seeds = range(config.seeds)

  capacity = {f'{size}/{d}': done[f'capacity-{size}-degree={d}']
              for size in ('few', 'many') for d in c.degrees}
  common.save_figure(_plot_capacity(capacity, c), os.path.join(workdir, 'capacity.png'))
  selection = {name: dict(candidates=[x.label for x in cands],
                          seeds=[done[f'selection-seed={seed}'][name] for seed in seeds])
               for name, cands in selection_sweeps(s).items()}
  common.save_figure(_plot_selection(selection, s), os.path.join(workdir, 'selection.png'))
  wd = dict(weight_decays=list(w.weight_decays),
            runs=[done[f'weight_decay-seed={seed}'] for seed in seeds])
  common.save_figure(_plot_weight_decay(wd, w), os.path.join(workdir, 'weight_decay.png'))

  cap_rows = []
  for key, entry in capacity.items():
    train, test = _final(entry['runs'], 'train'), _final(entry['runs'], 'test')
    cap_rows.append((entry['degree'], entry['num_train'], _pm(train), _pm(test),
                     f'{np.median(test / train):.3g}'))
  wd_rows = []
  for i, lam in enumerate(wd['weight_decays']):
    wd_rows.append((f'{lam:g}', _pm([r['train'][i][-1] for r in wd['runs']]),
                    _pm([r['test'][i][-1] for r in wd['runs']]),
                    _pm([r['w_norm'][i] for r in wd['runs']], '.3g')))

  batch = lambda b: 'full batch' if b == 0 else f'batch {b}'  # noqa: E731
  md = [
      '# Generalization: capacity, sample size, model selection, weight decay', '',
      'Linear models in their features trained by minibatch SGD on the squared '
      'loss (y_hat - y)^2 / 2 (the textbook\'s); reported losses exclude the '
      f'penalty. {config.seeds} seeds (training set, test set, batch order); '
      'mean ± std over seeds.', '',
      f'## Underfitting and overfitting: y = 5 + 1.2x - 3.4x^2/2! + 5.6x^3/3! + '
      f'{config.noise:g} eps, x ~ N(0, 1)', '',
      f'Features x^i / i! for i <= degree; SGD from zero, rate {c.learning_rate:g}, '
      f'{batch(c.batch_size)}, {c.steps} updates; test set of {c.num_test}. '
      f'The noise floor is {0.5 * config.noise**2:.3g}. Figure: `capacity.png`.', '',
      common.markdown_table(['degree', 'n train', 'train loss', 'test loss',
                             'test / train (median)'], cap_rows),
      '',
      *_selection_md(selection, s),
      f'## Weight decay in high dimension: d = {w.input_dim}, n = {w.num_train}', '',
      f'y = 0.05 + 0.01 sum_i x_i + {w.noise:g} eps; w ~ N(0, {w.init_std:g}^2), b = 0; '
      f'SGD rate {w.learning_rate:g}, {batch(w.batch_size)}, {w.steps} updates; '
      f'test set of {w.num_test}. Figure: `weight_decay.png`.', '',
      common.markdown_table(['lambda', 'train loss', 'test loss', '||w||'], wd_rows),
      '',
  ]
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))
  results = dict(capacity=capacity, selection=selection, weight_decay=wd)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
