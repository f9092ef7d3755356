"""Optimizer trajectories: the textbook 2-D runs reproduced exactly, and Rosenbrock.

Part 1 runs the textbook's f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2) for 20 steps
with each rule of the textbook, once with our optimizers (float64) and once
with the textbook's update written out in NumPy, and reports the largest
difference along the trajectory. Part 2 runs every optimizer of the library
on the Rosenbrock function. Part 1 and each optimizer of part 2 are runs of
the study (``runs/textbook``, ``runs/rosenbrock-NAME``): a rerun into the
same workdir skips the finished ones. Outputs: ``textbook.png``, ``rosenbrock.png``,
``results.md`` and ``results.json``.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common
from research import optim


def textbook_quadratic(x):
  return 0.1 * x[0] ** 2 + 2.0 * x[1] ** 2


def rosenbrock(x):
  return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


# --- The textbook's update rules, written out (x, g are NumPy float64). -------

def _gd(eta):
  def run(x, grad, steps):
    xs = [x]
    for _ in range(steps):
      x = x - eta * grad(x)
      xs.append(x)
    return np.array(xs)
  return run


def _momentum(eta, gamma):
  def run(x, grad, steps):
    v, xs = np.zeros_like(x), [x]
    for _ in range(steps):
      v = gamma * v + eta * grad(x)
      x = x - v
      xs.append(x)
    return np.array(xs)
  return run


def _adagrad(eta, eps=1e-6):
  def run(x, grad, steps):
    s, xs = np.zeros_like(x), [x]
    for _ in range(steps):
      g = grad(x)
      s = s + g**2
      x = x - eta / np.sqrt(s + eps) * g
      xs.append(x)
    return np.array(xs)
  return run


def _rmsprop(eta, gamma, eps=1e-6):
  def run(x, grad, steps):
    s, xs = np.zeros_like(x), [x]
    for _ in range(steps):
      g = grad(x)
      s = gamma * s + (1 - gamma) * g**2
      x = x - eta / np.sqrt(s + eps) * g
      xs.append(x)
    return np.array(xs)
  return run


def _adadelta(rho, eps=1e-5):
  def run(x, grad, steps):
    s, delta, xs = np.zeros_like(x), np.zeros_like(x), [x]
    for _ in range(steps):
      g = grad(x)
      s = rho * s + (1 - rho) * g**2
      g = np.sqrt((delta + eps) / (s + eps)) * g
      x = x - g
      delta = rho * delta + (1 - rho) * g**2
      xs.append(x)
    return np.array(xs)
  return run


def _adam(eta, beta1=0.9, beta2=0.999, eps=1e-6):
  def run(x, grad, steps):
    v, s, xs = np.zeros_like(x), np.zeros_like(x), [x]
    for t in range(1, steps + 1):
      g = grad(x)
      v = beta1 * v + (1 - beta1) * g
      s = beta2 * s + (1 - beta2) * g**2
      v_hat, s_hat = v / (1 - beta1**t), s / (1 - beta2**t)
      x = x - eta * v_hat / (np.sqrt(s_hat) + eps)
      xs.append(x)
    return np.array(xs)
  return run


class TextbookRun(NamedTuple):
  label: str
  rule: str  # the textbook's update, as printed in results.md
  optimizer: str  # our factory
  kwargs: dict  # our hyperparameters that reproduce the rule
  textbook: Callable


TEXTBOOK_RUNS = [
    TextbookRun('gd, eta=0.4', 'x -= eta g', 'sgd', dict(learning_rate=0.4), _gd(0.4)),
    TextbookRun('gd, eta=0.6', 'x -= eta g', 'sgd', dict(learning_rate=0.6), _gd(0.6)),
    TextbookRun('momentum, eta=0.6, beta=0.5', 'v = beta v + eta g; x -= v', 'sgd',
                dict(learning_rate=0.6, momentum=0.5), _momentum(0.6, 0.5)),
    TextbookRun('momentum, eta=0.6, beta=0.25', 'v = beta v + eta g; x -= v', 'sgd',
                dict(learning_rate=0.6, momentum=0.25), _momentum(0.6, 0.25)),
    TextbookRun('adagrad, eta=0.4', 's += g^2; x -= eta g / sqrt(s + 1e-6)', 'adagrad',
                dict(learning_rate=0.4, initial_accumulator_value=0.0, eps=1e-6),
                _adagrad(0.4)),
    TextbookRun('adagrad, eta=2', 's += g^2; x -= eta g / sqrt(s + 1e-6)', 'adagrad',
                dict(learning_rate=2.0, initial_accumulator_value=0.0, eps=1e-6),
                _adagrad(2.0)),
    TextbookRun('rmsprop, eta=0.4, gamma=0.9',
                's = gamma s + (1-gamma) g^2; x -= eta g / sqrt(s + 1e-6)', 'rmsprop',
                dict(learning_rate=0.4, decay=0.9, eps=1e-6), _rmsprop(0.4, 0.9)),
    TextbookRun('adadelta, rho=0.9',
                's = rho s + (1-rho) g^2; g\' = sqrt((d + 1e-5)/(s + 1e-5)) g; '
                'x -= g\'; d = rho d + (1-rho) g\'^2', 'adadelta',
                dict(learning_rate=1.0, rho=0.9, eps=1e-5), _adadelta(0.9)),
    TextbookRun('adam, eta=0.4',
                'v, s = EMAs of g, g^2 (0.9, 0.999), bias-corrected; '
                'x -= eta v^ / (sqrt(s^) + 1e-6)', 'adam',
                dict(learning_rate=0.4, b1=0.9, b2=0.999, eps=1e-6), _adam(0.4)),
]

MAPPING_NOTES = """\
How the textbook's rules map onto our (Optax's) hyperparameters:

- Momentum: the textbook keeps the learning rate inside the velocity,
  v = beta v + eta g, x -= v. Ours (Optax's) keeps it outside, m = g + beta m,
  x -= eta m. With a constant eta, v = eta m, so `sgd(eta, momentum=beta)` is the
  same run. (With a schedule the two differ: ours rescales the whole velocity
  when eta changes.)
- Adagrad: the textbook starts the accumulator at 0 and adds eps = 1e-6 inside
  the root; Optax's defaults are an initial accumulator of 0.1 and eps = 1e-7.
  `adagrad(eta, initial_accumulator_value=0.0, eps=1e-6)` is the textbook rule.
- RMSProp: the textbook adds eps = 1e-6 inside the root, as Optax does by
  default (`eps_in_sqrt=True`), but Optax's default eps is 1e-8:
  `rmsprop(eta, decay=gamma, eps=1e-6)`.
- Adadelta: the textbook has no learning rate and eps = 1e-5;
  `adadelta(learning_rate=1.0, rho=rho, eps=1e-5)`.
- Adam: the textbook's eps = 1e-6 sits outside the root after bias correction,
  as Optax's does: `adam(eta, eps=1e-6)` (Optax's default eps is 1e-8).
"""

# label -> (our factory, fixed hyperparameters) for Rosenbrock. The learning
# rate of each is the best of ``config.rosenbrock.learning_rates`` (the lowest
# final loss), found in one vmapped run per optimizer; the optimizers without a
# learning rate (polyak_sgd, lbfgs with its line search) run as given.
ROSENBROCK_SETTINGS = {
    'sgd': ('sgd', {}),
    'sgd_momentum': ('sgd', dict(momentum=0.9)),
    'sgd_nesterov': ('sgd', dict(momentum=0.9, nesterov=True)),
    'adagrad': ('adagrad', {}),
    'rmsprop': ('rmsprop', {}),
    'adadelta': ('adadelta', {}),
    'adam': ('adam', {}),
    'adamw': ('adamw', dict(weight_decay=1e-4)),
    'nadam': ('nadam', {}),
    'nadamw': ('nadamw', dict(weight_decay=1e-4)),
    'adamax': ('adamax', {}),
    'adamaxw': ('adamaxw', dict(weight_decay=1e-4)),
    'amsgrad': ('amsgrad', {}),
    'adabelief': ('adabelief', {}),
    'adafactor': ('adafactor', {}),
    'adan': ('adan', {}),
    'lamb': ('lamb', {}),
    'lars': ('lars', {}),
    'lion': ('lion', {}),
    'novograd': ('novograd', {}),
    'radam': ('radam', {}),
    'yogi': ('yogi', {}),
    'sm3': ('sm3', {}),
    'fromage': ('fromage', {}),
    'noisy_sgd': ('noisy_sgd', {}),
    'sign_sgd': ('sign_sgd', {}),
    'signum': ('signum', {}),
    'rprop': ('rprop', {}),
    'optimistic_gradient_descent': ('optimistic_gradient_descent', {}),
    'optimistic_adam_v2': ('optimistic_adam_v2', {}),
    'polyak_sgd': ('polyak_sgd', dict(max_learning_rate=1e-2)),
    'lbfgs': ('lbfgs', {}),
}
NO_LEARNING_RATE = {'polyak_sgd', 'lbfgs'}
# Names whose update reads `value`, `grad` and `value_fn`.
NEEDS_VALUE = {'polyak_sgd', 'lbfgs'}


def known_optimizers():
  return list(ROSENBROCK_SETTINGS)


def validate(config):
  common.require(config.textbook.steps >= 1, 'textbook.steps', config.textbook.steps, '>= 1')
  common.require(config.rosenbrock.steps >= 1, 'rosenbrock.steps', config.rosenbrock.steps, '>= 1')
  lrs = config.rosenbrock.learning_rates
  common.require(len(lrs) >= 1 and all(lr > 0 for lr in lrs), 'rosenbrock.learning_rates',
                 lrs, 'one or more values > 0')
  for field in ('textbook.start', 'rosenbrock.start'):
    start = config[field.split('.')[0]].start
    common.require(len(start) == 2, field, start, 'two numbers (x1, x2)')
  names = config.rosenbrock.optimizers
  if names != 'all':
    listed = common.split_names(names)
    common.require(len(listed) >= 1, 'rosenbrock.optimizers', names,
                   "'all' or a comma-separated subset of " + ', '.join(known_optimizers()))
    common.require_choices('rosenbrock.optimizers', listed, known_optimizers())
    common.require(len(set(listed)) == len(listed), 'rosenbrock.optimizers', names,
                   'distinct names')


def _scan_points(opt, fn, x0, steps, needs_value):
  def body(carry, _):
    x, state = carry
    value, grad = jax.value_and_grad(fn)(x)
    extra = dict(value=value, grad=grad, value_fn=fn) if needs_value else {}
    updates, state = opt.update(grad, state, x, **extra)
    x = optim.apply_updates(x, updates)
    return (x, state), x

  _, xs = jax.lax.scan(body, (x0, opt.init(x0)), None, length=steps)
  return jnp.concatenate([x0[None], xs])


def trajectory(opt, fn, x0, steps, needs_value=False):
  """The points x_0..x_steps of ``opt`` on ``fn`` (jit + lax.scan)."""
  run = jax.jit(lambda x0: _scan_points(opt, fn, x0, steps, needs_value))
  return np.asarray(run(jnp.asarray(x0)))


def sweep(factory, fn, x0, steps, learning_rates, needs_value=False):
  """Trajectories for every learning rate at once (``vmap``; one compile)."""
  def one(lr):
    return _scan_points(factory(lr), fn, x0, steps, needs_value)
  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(learning_rates, jnp.float32)))


def _contour(ax, fn, xlim, ylim, levels):
  x1, x2 = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200))
  ax.contour(x1, x2, fn(np.stack([x1, x2])), levels=levels, colors='#888888',
             linewidths=0.6)


def _plot_grid(results, fn, xlim, ylim, levels, optimum, title):
  rows, cols = common.grid_shape(len(results), max_cols=4 if len(results) <= 12 else 6)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
  for ax in axes.flat[len(results):]:
    ax.axis('off')
  for ax, (label, xs) in zip(axes.flat, results):
    _contour(ax, fn, xlim, ylim, levels)
    ax.plot(xs[:, 0], xs[:, 1], '-o', color='#d62728', markersize=2, linewidth=1)
    ax.plot(*optimum, 'k*', markersize=8)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(label, fontsize=8)
    ax.tick_params(labelsize=6)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def run_textbook(config):
  steps, start = config.textbook.steps, np.asarray(config.textbook.start, np.float64)
  grad_np = lambda x: np.array([0.2 * x[0], 4.0 * x[1]])  # noqa: E731
  rows = []
  with jax.enable_x64(True):
    for r in TEXTBOOK_RUNS:
      ours = trajectory(getattr(optim, r.optimizer)(**r.kwargs), textbook_quadratic,
                        jnp.asarray(start, jnp.float64), steps)
      reference = r.textbook(start, grad_np, steps)
      rows.append(dict(
          label=r.label, rule=r.rule,
          call=f'{r.optimizer}({", ".join(f"{k}={v}" for k, v in r.kwargs.items())})',
          final_point=ours[-1].tolist(),
          final_loss=float(textbook_quadratic(ours[-1])),
          max_abs_diff=float(np.max(np.abs(ours - reference))),
          trajectory=ours.tolist(),
      ))
  return rows


def rosenbrock_names(config) -> list[str]:
  if config.rosenbrock.optimizers == 'all':
    return known_optimizers()
  return common.split_names(config.rosenbrock.optimizers)


def rosenbrock_part(config, name) -> dict:
  """``name`` on Rosenbrock at its best rate of ``rosenbrock.learning_rates``."""
  x0 = jnp.asarray(config.rosenbrock.start, jnp.float32)
  lrs = list(config.rosenbrock.learning_rates)
  call_name, kwargs = ROSENBROCK_SETTINGS[name]
  factory = getattr(optim, call_name)
  needs_value = call_name in NEEDS_VALUE
  if call_name in NO_LEARNING_RATE:
    xs, lr = trajectory(factory(**kwargs), rosenbrock, x0, config.rosenbrock.steps,
                        needs_value), None
  else:
    runs = sweep(lambda lr, f=factory, kw=kwargs: f(learning_rate=lr, **kw), rosenbrock,
                 x0, config.rosenbrock.steps, lrs, needs_value)
    finals = np.array([rosenbrock(r[-1]) for r in runs], np.float64)
    finals[~np.isfinite(finals)] = np.inf
    best = int(np.argmin(finals))
    xs, lr = runs[best], lrs[best]
  final = xs[-1]
  shown = dict(kwargs, learning_rate=lr) if lr is not None else kwargs
  return dict(
      label=name, learning_rate=lr,
      call=f'{call_name}({", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())})',
      final_point=final.tolist(),
      final_loss=float(rosenbrock(final)),
      distance_to_optimum=float(np.linalg.norm(final - 1.0)),
      trajectory=xs.tolist(),
  )


def parts(config) -> list:
  """The study's independent parts: ``(run name, compute() -> JSON-able dict)``;
  each is a run of :class:`experiments.common.Study` (a rerun skips the
  finished ones)."""
  return [('textbook', lambda: dict(rows=run_textbook(config)))] + [
      (f'rosenbrock-{name}', functools.partial(rosenbrock_part, config, name))
      for name in rosenbrock_names(config)]


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  done = {}
  for name, compute in parts(config):
    t0 = time.time()
    done[name] = study.run(name, lambda folder, compute=compute: compute())
    logging.info('run %s: done in %.1fs', name, time.time() - t0)
  textbook = done['textbook']['rows']
  rosen = [done[f'rosenbrock-{name}'] for name in rosenbrock_names(config)]

  fig = _plot_grid([(r['label'], np.array(r['trajectory'])) for r in textbook],
                   textbook_quadratic, (-5.5, 1.5), (-3.0, 3.0), 15, (0, 0),
                   'f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2)')
  common.save_figure(fig, os.path.join(workdir, 'textbook.png'))
  fig = _plot_grid([(r['label'], np.array(r['trajectory'])) for r in rosen],
                   rosenbrock, (-2.0, 2.0), (-1.0, 3.0), np.logspace(-1, 3, 12),
                   (1, 1), f'Rosenbrock from {tuple(config.rosenbrock.start)}, '
                   f'{config.rosenbrock.steps} steps')
  common.save_figure(fig, os.path.join(workdir, 'rosenbrock.png'))

  point = lambda p: f'({p[0]:.5g}, {p[1]:.5g})'  # noqa: E731
  md = [
      '# Optimizer trajectories', '',
      f'## Textbook quadratic, f(x) = 0.1 x1^2 + 2 x2^2, from '
      f'{tuple(config.textbook.start)}, {config.textbook.steps} steps', '',
      'Each run is made twice: with our optimizer (float64) and with the '
      "textbook's rule written out in NumPy; the last column is the largest "
      'difference between the two trajectories.', '',
      common.markdown_table(
          ['run', 'textbook rule', 'our call', 'final point', 'final loss',
           'max abs diff'],
          [(r['label'], r['rule'], f'`{r["call"]}`', point(r['final_point']),
            r['final_loss'], f'{r["max_abs_diff"]:.2e}') for r in textbook]),
      '', MAPPING_NOTES, '',
      f'## Rosenbrock from {tuple(config.rosenbrock.start)}, '
      f'{config.rosenbrock.steps} steps (float32); minimum 0 at (1, 1)', '',
      'Each optimizer runs at the learning rate of '
      f'{tuple(config.rosenbrock.learning_rates)} with the lowest final loss '
      '(its other hyperparameters at their defaults); polyak_sgd and lbfgs (line '
      'search) have no learning rate to choose.', '',
      common.markdown_table(
          ['optimizer', 'call', 'final point', 'final loss', 'distance to (1, 1)'],
          [(r['label'], f'`{r["call"]}`', point(r['final_point']), r['final_loss'],
            r['distance_to_optimum']) for r in rosen]),
      '', 'Figures: `textbook.png`, `rosenbrock.png`.', '',
  ]
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))
  results = dict(textbook=textbook, rosenbrock=rosen)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
