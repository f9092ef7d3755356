"""Escaping saddle points, and the Hessian's index along training.

Part 1 (test functions): from random starts at distance 10^-k of a saddle, the
number of steps each optimizer needs to escape, and the fraction of starts that
never escape within the budget. A start has escaped at the first step where
``||x - x*|| >= radius`` and ``f(x) < f(x*)``: it left the ball downhill (a run
that diverges uphill along a positive-curvature direction has not escaped).
The starts are vmapped; each optimizer runs in one ``lax.while_loop``.

- 2-D functions: ``saddle`` x^2 - y^2, ``saddle_5`` 5x^2 - y^2, ``monkey``
  x^3 - 3xy^2 (degenerate), ``double_well`` x^2/2 + y^4/4 - y^2/2 (saddle at
  the origin, minima at (0, +-1)).
- The strict saddle x^T diag(lambda) x / 2 in d dimensions with k negative
  eigenvalues, over d and the distance.
- A chain of saddles (:func:`saddle_chain`): escaping one saddle leads to the
  next plateau.

Part 2 (network): the MNIST-1D MLP trained with each listed optimizer; at
checkpoints, the Hessian's extreme eigenvalues, index and spectral density by
Lanczos on a fixed batch of training examples.

Each independent part is a run of the study (:func:`parts`): one per 2-D
function (``runs/functions-NAME``), per dimension of the strict saddle
(``runs/strict-d=D``), the chain (``runs/chain``) and one per network
optimizer (``runs/network-NAME``). A rerun into the same workdir skips the
finished parts and recomputes an interrupted one from its start; every part
is deterministic, so the rerun ends with the same ``results.json``. Progress:
a log line as each part and each optimizer in it ends, and every 30 s inside
a long escape loop.

Outputs: ``config.json``, ``results.json``, ``results.md`` and the figures
``trajectories.png``, ``escape_vs_distance.png``, ``escape_vs_dim.png``,
``chain.png``, ``hessian_index.png``, ``hessian_density.png``.
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
from research import models
from research import optim
from research.analysis import hessian
from research.optim import saddle
from research.train import metric_writers


# --- Test functions. ----------------------------------------------------------

class TestFunction(NamedTuple):
  fn: Callable[[jax.Array], jax.Array]
  saddle: np.ndarray  # the saddle the starts are drawn around
  formula: str
  # Known critical points and their kind (for the tests and the table).
  critical_points: tuple[tuple[tuple[float, ...], str], ...]


def _saddle(x):
  return x[0] ** 2 - x[1] ** 2


def _saddle_5(x):
  return 5.0 * x[0] ** 2 - x[1] ** 2


def _monkey(x):
  return x[0] ** 3 - 3.0 * x[0] * x[1] ** 2


def _double_well(x):
  return x[0] ** 2 / 2 + x[1] ** 4 / 4 - x[1] ** 2 / 2


FUNCTIONS = {
    'saddle': TestFunction(_saddle, np.zeros(2), 'x^2 - y^2',
                           (((0.0, 0.0), 'saddle'),)),
    'saddle_5': TestFunction(_saddle_5, np.zeros(2), '5x^2 - y^2',
                             (((0.0, 0.0), 'saddle'),)),
    'monkey': TestFunction(_monkey, np.zeros(2), 'x^3 - 3xy^2',
                           (((0.0, 0.0), 'degenerate'),)),
    'double_well': TestFunction(
        _double_well, np.zeros(2), 'x^2/2 + y^4/4 - y^2/2',
        (((0.0, 0.0), 'saddle'), ((0.0, 1.0), 'minimum'), ((0.0, -1.0), 'minimum'))),
}


def strict_saddle_eigenvalues(dim: int, num_negative: int, negative: float = 1.0,
                              positive: float = 1.0) -> np.ndarray:
  """``lambda``: ``num_negative`` entries ``-negative``, the rest ``+positive``."""
  if not isinstance(dim, int) or dim < 2:
    raise ValueError(f'strict_saddle: d={dim!r} is invalid; allowed: an int >= 2.')
  if not isinstance(num_negative, int) or not 1 <= num_negative <= dim:
    raise ValueError(
        f'strict_saddle: k={num_negative!r} is invalid; allowed: an int in [1, {dim}].')
  lam = np.full(dim, float(positive))
  lam[:num_negative] = -float(negative)
  return lam


def strict_saddle(dim: int, num_negative: int, negative: float = 1.0,
                  positive: float = 1.0) -> TestFunction:
  """``f(x) = x^T diag(lambda) x / 2``: a strict saddle of index k/d at 0.

  ``k = d`` makes the origin a maximum.
  """
  lam = jnp.asarray(strict_saddle_eigenvalues(dim, num_negative, negative, positive))
  kind = 'maximum' if num_negative == dim else 'saddle'
  return TestFunction(
      lambda x: 0.5 * jnp.sum(lam * x * x), np.zeros(dim),
      f'x^T diag(lambda) x / 2, d={dim}, k={num_negative}',
      ((tuple([0.0] * dim), kind),))


def saddle_chain(dim: int, coupling: float = 1.0, tau: float = 0.1) -> TestFunction:
  r"""A smooth chain of ``dim`` saddles, each escape leading to the next plateau.

  .. math::
    f(x) = \sum_{i=1}^{d} \Big(\frac{x_i^4}{4} + c_i(x) \frac{x_i^2}{2}\Big),
    \quad c_1 = -1, \quad
    c_i = L - (L + 1) \tanh(x_{i-1}^2 / \tau) \; (i \ge 2).

  While ``x_{i-1}`` is near 0, coordinate i sits in a well of curvature
  ``L = coupling``; once ``x_{i-1}`` has escaped to about +-1 the gate
  ``tanh`` opens and the curvature of coordinate i turns to about -1. So the
  origin is a saddle of index 1/d, ``(+-1, 0, ..., 0)`` is the next one
  (again index 1/d, value -1/4), and so on, until ``(+-1, ..., +-1)``, a
  minimum near ``-d/4``. While coordinate i-1 escapes, coordinate i is pulled
  toward 0 at the rate ``1 - eta L`` per step, so each plateau starts closer to
  its saddle than the last: the mechanism of Du et al. (2017), where gradient
  descent needs exponential time. ``f`` is smooth and bounded below by
  ``-d/4``.

  References:
    Du, Jin, Lee, Jordan, Poczos & Singh, Gradient descent can take
    exponential time to escape saddle points, 2017.
  """
  if not isinstance(dim, int) or dim < 2:
    raise ValueError(f'saddle_chain: dim={dim!r} is invalid; allowed: an int >= 2.')

  def fn(x):
    gates = jnp.tanh(jnp.square(x[:-1]) / tau)
    c = jnp.concatenate([-jnp.ones(1, x.dtype), coupling - (coupling + 1) * gates])
    return jnp.sum(x ** 4 / 4 + c * x ** 2 / 2)

  second = tuple([1.0] + [0.0] * (dim - 1))
  return TestFunction(fn, np.zeros(dim), f'chain of saddles, d={dim}',
                      ((tuple([0.0] * dim), 'saddle'), (second, 'saddle')))


# --- Optimizers. --------------------------------------------------------------

# Names whose update reads value_fn (the loss).
NEEDS_VALUE = {'saddle_free_newton', 'newton'}

# The standard optimizers: name -> optim.make arguments besides the rate.
# Adagrad starts its accumulator at 0 (Optax's default 0.1 would make it plain
# gradient descent with step ``lr / sqrt(0.1)`` near a saddle, where the
# gradients are tiny); noisy_sgd draws its noise from ``config.seed``.
MAKE_ARGS = {
    'gd': {}, 'momentum': {}, 'nesterov': {},
    'adagrad': dict(initial_accumulator_value=0.0),
    'rmsprop': {}, 'adam': {}, 'noisy_sgd': {},
}
# The saddle-aware methods optim.make does not build: name -> (factory, the
# config section and fields it takes).
SADDLE_METHODS = {
    'perturbed_gd': (saddle.perturbed_gd, 'perturbed', dict(
        g_thres='g_thres', t_thres='t_thres', radius='radius')),
    'saddle_free_newton': (saddle.saddle_free_newton, 'curvature',
                           dict(damping='sfn_damping')),
    'newton': (saddle.newton, 'curvature', dict(damping='newton_damping')),
}
KNOWN_OPTIMIZERS = tuple(MAKE_ARGS) + tuple(SADDLE_METHODS)
NETWORK_OPTIMIZERS = ('sgd', 'adam')


def optimizer(name: str, config, dim: int) -> optim.GradientTransformation:
  """The optimizer ``name`` at ``config.lr[name]`` (library defaults else).

  The curvature methods use the full Hessian up to
  ``curvature.exact_max_dim`` and ``curvature.krylov_order`` Lanczos vectors
  above.
  """
  lr = config.lr[name]
  if name in MAKE_ARGS:
    extra = dict(key=config.seed) if name == 'noisy_sgd' else {}
    return optim.make(name, lr, **MAKE_ARGS[name], **extra)
  factory, section, fields = SADDLE_METHODS[name]
  kwargs = {arg: config[section][field] for arg, field in fields.items()}
  if section == 'curvature':
    c = config.curvature
    kwargs['order'] = None if dim <= c.exact_max_dim else min(c.krylov_order, dim)
  return factory(lr, seed=config.seed, **kwargs)


def _rekey(state, index):
  """Folds ``index`` into every PRNG key of an optimizer state (one stream per start)."""
  def fold(leaf):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.fold_in(leaf, index)
    return leaf
  return jax.tree.map(fold, state)


# --- Escape runs. -------------------------------------------------------------

class EscapeRun(NamedTuple):
  escaped_at: np.ndarray  # (starts,) first escape step; -1: never (within budget)
  finite: np.ndarray  # (starts,) the last iterate is finite
  trajectory: np.ndarray  # (trajectory_steps + 1, d) of start 0


def _step_fn(fn, opt, needs_value):
  def step(x, state):
    g = jax.grad(fn)(x)
    extra = dict(value_fn=fn) if needs_value else {}
    u, state = opt.update(g, state, x, **extra)
    return optim.apply_updates(x, u), state
  return step


def _init_states(opt, x0s):
  return jax.vmap(lambda x0, i: _rekey(opt.init(x0), i))(x0s, jnp.arange(x0s.shape[0]))


# Steps per compiled call: between calls the host logs progress (a line every
# 30 s without a terminal). The loop body is one compiled program whatever
# the chunk, so the numbers do not depend on it.
CHUNK_STEPS = 250


def _chunked(advance, carry, steps, label, done=lambda carry: False):
  """``advance(carry, t_end)`` over chunks of :data:`CHUNK_STEPS` steps up
  to ``steps``, or until ``done(carry)``."""
  progress = metric_writers.Progress(steps, 0, True, label, 30.0)
  t = 0
  while t < steps and not done(carry):
    t = min(t + CHUNK_STEPS, steps)
    carry = advance(carry, jnp.asarray(t, jnp.int32))
    progress.update(int(carry[0]), {})
  progress.close()
  return carry


def escape_run(fn, saddle_point, opt, needs_value, x0s, steps, radius,
               trajectory_steps=0, label='') -> EscapeRun:
  """Runs ``opt`` from every row of ``x0s`` until all have escaped or ``steps``.

  Escape: ``||x - x*|| >= radius`` and ``f(x) < f(x*)``, ``x*`` the saddle.
  An escaped start is frozen. Start 0's path is kept for ``trajectory_steps``.
  """
  saddle_point = jnp.asarray(saddle_point, x0s.dtype)
  f_star = fn(saddle_point)
  escaped = jax.vmap(lambda x: jnp.logical_and(
      jnp.linalg.norm(x - saddle_point) >= radius, fn(x) < f_star))
  step = jax.vmap(_step_fn(fn, opt, needs_value))
  traj_len = trajectory_steps + 1

  @jax.jit
  def start(x0s):
    escaped_at = jnp.where(escaped(x0s), 0, -1)
    traj = jnp.zeros((traj_len, x0s.shape[1]), x0s.dtype).at[0].set(x0s[0])
    return jnp.zeros([], jnp.int32), x0s, _init_states(opt, x0s), escaped_at, traj

  def body(carry):
    t, xs, states, escaped_at, traj = carry
    new_xs, states = step(xs, states)
    active = escaped_at < 0
    xs = jnp.where(active[:, None], new_xs, xs)
    t = t + 1
    escaped_at = jnp.where(active & escaped(xs), t, escaped_at)
    traj = traj.at[jnp.minimum(t, traj_len - 1)].set(
        jnp.where(t < traj_len, xs[0], traj[traj_len - 1]))
    return t, xs, states, escaped_at, traj

  @jax.jit
  def advance(carry, t_end):
    return jax.lax.while_loop(
        lambda c: jnp.logical_and(c[0] < t_end, jnp.any(c[3] < 0)), body, carry)

  t, xs, _, escaped_at, traj = _chunked(
      advance, start(x0s), steps, label, done=lambda c: not np.any(np.asarray(c[3]) < 0))
  # Steps not run (every start escaped early) repeat the last point.
  traj = np.asarray(traj)[np.minimum(np.arange(traj_len), int(t))]
  return EscapeRun(np.asarray(escaped_at), np.asarray(jnp.all(jnp.isfinite(xs), axis=1)),
                   traj)


def chain_run(fn, opt, needs_value, x0s, steps, label=''):
  """``(passed_at (starts, d), losses of start 0)``: the first step with |x_i| > 1/2."""
  step = jax.vmap(_step_fn(fn, opt, needs_value))

  @jax.jit
  def start(x0s):
    losses = jnp.zeros(steps + 1, x0s.dtype).at[0].set(fn(x0s[0]))
    passed = jnp.where(jnp.abs(x0s) > 0.5, 0, -1)
    return jnp.zeros([], jnp.int32), x0s, _init_states(opt, x0s), passed, losses

  def body(carry):
    t, xs, states, passed, losses = carry
    xs, states = step(xs, states)
    t = t + 1
    passed = jnp.where((passed < 0) & (jnp.abs(xs) > 0.5), t, passed)
    return t, xs, states, passed, losses.at[t].set(fn(xs[0]))

  @jax.jit
  def advance(carry, t_end):
    return jax.lax.while_loop(lambda c: c[0] < t_end, body, carry)

  _, _, _, passed, losses = _chunked(advance, start(x0s), steps, label)
  return np.asarray(passed), np.asarray(losses)


def random_starts(key, saddle_point, distances, num_starts) -> np.ndarray:
  """``num_starts`` points per distance, uniform on the sphere of that radius."""
  dim = len(saddle_point)
  z = jax.random.normal(key, (len(distances), num_starts, dim))
  z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
  x = jnp.asarray(saddle_point) + jnp.asarray(distances)[:, None, None] * z
  return np.asarray(x.reshape(-1, dim), np.float32)


def summarize(escaped_at: np.ndarray, finite: np.ndarray) -> dict:
  """Median / mean escape step over the escaped starts, fraction never escaped."""
  ok = escaped_at >= 0
  times = escaped_at[ok]
  return dict(
      median=float(np.median(times)) if times.size else None,
      mean=float(np.mean(times)) if times.size else None,
      never=float(1.0 - np.mean(ok)),
      diverged=float(np.mean(~finite & ~ok)),
  )


def _sweep(fn_spec, names, config, distances, key, trajectory_start=None, part=''):
  """Every optimizer on one function over ``distances``: summaries by distance."""
  n = config.escape.num_starts
  x0s = random_starts(key, fn_spec.saddle, distances, n)
  if trajectory_start is not None:
    x0s = np.concatenate([np.asarray(trajectory_start, np.float32)[None], x0s])
  out = {}
  dim = len(fn_spec.saddle)
  for name in names:
    t0 = time.time()
    r = escape_run(fn_spec.fn, fn_spec.saddle, optimizer(name, config, dim),
                   name in NEEDS_VALUE, jnp.asarray(x0s), config.escape.steps,
                   config.escape.radius,
                   trajectory_steps=config.trajectory.steps if trajectory_start is not None else 0,
                   label=f'{part} {name}')
    offset = 1 if trajectory_start is not None else 0
    esc = r.escaped_at[offset:].reshape(len(distances), n)
    fin = r.finite[offset:].reshape(len(distances), n)
    out[name] = dict(
        by_distance=[dict(distance=float(d), **summarize(esc[i], fin[i]))
                     for i, d in enumerate(distances)],
        trajectory=r.trajectory.tolist() if trajectory_start is not None else None,
        trajectory_escape_step=int(r.escaped_at[0]) if trajectory_start is not None else None,
    )
    logging.info('%s: %s done in %.1fs', part, name, time.time() - t0)
  return out


def gd_log_slope(rows, distances) -> dict:
  """Least-squares slope of median escape steps against ln(1/distance)."""
  pts = [(np.log(1.0 / d), r['median']) for d, r in zip(distances, rows)
         if d > 0 and r['median'] is not None and r['never'] == 0.0]
  if len(pts) < 2:
    return dict(slope=None, points=len(pts))
  x, y = np.array(pts).T
  slope, intercept = np.polyfit(x, y, 1)
  return dict(slope=float(slope), intercept=float(intercept), points=len(pts))


def function_part(config, names, fname, key) -> dict:
  """Every optimizer on the 2-D function ``fname``, with the trajectory start."""
  spec = FUNCTIONS[fname]
  angle = config.trajectory.angle
  start = spec.saddle + config.trajectory.distance * np.array([np.cos(angle), np.sin(angle)])
  return _sweep(spec, names, config, config.distances, key, start, part=f'functions-{fname}')


def strict_part(config, names, dim, key) -> dict:
  s = config.strict
  spec = strict_saddle(int(dim), s.num_negative, s.negative, s.positive)
  return _sweep(spec, names, config, config.distances, key, part=f'strict-d={dim}')


def chain_part(config, names, key) -> dict:
  c = config.chain
  spec = saddle_chain(c.dim, c.coupling, c.tau)
  x0s = jnp.asarray(random_starts(key, spec.saddle, [c.distance], c.num_starts))
  results = {}
  for name in names:
    t0 = time.time()
    passed, losses = chain_run(spec.fn, optimizer(name, config, c.dim),
                               name in NEEDS_VALUE, x0s, c.steps, label=f'chain {name}')
    passed = passed.T  # (saddles, starts)
    results[name] = dict(
        per_saddle=[summarize(p, np.ones_like(p, bool)) for p in passed],
        all_passed=float(np.mean(np.all(passed >= 0, axis=0))),
        loss_curve=losses.tolist(),
    )
    logging.info('chain: %s done in %.1fs', name, time.time() - t0)
  return results


# --- Network: the MNIST-1D MLP and its Hessian. ------------------------------

def mlp_config(width: int):
  """The MNIST-1D MLP baseline (40 -> relu(width) -> h + relu(W h) -> 10)."""
  config = models.default_config('mnist1d_mlp')
  config.width = width
  return config


def mlp_num_params(width: int) -> int:
  return models.count_params(mlp_config(width))


def make_cross_entropy(model) -> Callable:
  def cross_entropy(params, x, y):
    logits = model.apply({'params': params}, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
  return cross_entropy


def load_mnist1d() -> dict:
  """MNIST-1D (4000 train / 1000 test, 40 features) from research.data."""
  from research.data import mnist1d_data  # pylint: disable=import-outside-toplevel
  return mnist1d_data.load_mnist1d()


class Network(NamedTuple):
  """What the network parts share: the data, the model, the losses and the
  compiled evaluation and Hessian programs (built once per study)."""
  data: dict  # jnp arrays x_train, y_train, x_test, y_test
  model: object
  cross_entropy: Callable
  evaluate: Callable  # params -> (train loss, test accuracy, |grad| on the Hessian batch)
  hess_loss: Callable  # params -> loss on the Hessian batch (one object: one compile)
  full_hessian: Callable


def network(config, data) -> Network:
  net = config.network
  data = {k: jnp.asarray(data[k]) for k in ('x_train', 'y_train', 'x_test', 'y_test')}
  x_h, y_h = data['x_train'][:net.hessian_batch], data['y_train'][:net.hessian_batch]
  model = models.build_model(mlp_config(net.width))
  cross_entropy = make_cross_entropy(model)
  hess_loss = lambda p: cross_entropy(p, x_h, y_h)  # noqa: E731

  @jax.jit
  def evaluate(params):
    logits = model.apply({'params': params}, data['x_test'])
    acc = jnp.mean(jnp.argmax(logits, -1) == data['y_test'])
    grad = jax.grad(hess_loss)(params)
    return (cross_entropy(params, data['x_train'], data['y_train']), acc,
            optim.tree.tree_norm(grad))

  return Network(data, model, cross_entropy, evaluate, hess_loss,
                 jax.jit(lambda p: hessian.full_hessian(hess_loss, p)))


def network_part(config, name, key, shared: Network) -> dict:
  """The MLP trained with ``name`` (``sgd`` or ``adam`` at ``network.lr_<name>``):
  at each checkpoint its loss, accuracy and Hessian spectrum (``rows``)."""
  net = config.network
  x_tr, y_tr = shared.data['x_train'], shared.data['y_train']
  cross_entropy, hess_loss = shared.cross_entropy, shared.hess_loss
  n_train = x_tr.shape[0]
  per_epoch = n_train // net.batch_size
  epochs = -(-net.steps // per_epoch)
  order = np.concatenate([
      np.random.default_rng((config.seed, e)).permutation(n_train)[:per_epoch * net.batch_size]
      for e in range(epochs)]).reshape(-1, net.batch_size)[:net.steps]
  checkpoints = sorted(set(np.linspace(0, net.steps, net.checkpoints + 1).astype(int)))
  # Every optimizer starts from the same initialization.
  key_init, key_h = jax.random.split(key)
  params0 = shared.model.init(key_init, x_tr[:1])['params']
  opt = optim.make(name, net['lr_' + name])

  @jax.jit
  def train(params, state, batches):
    def body(carry, idx):
      params, state = carry
      loss, g = jax.value_and_grad(cross_entropy)(params, x_tr[idx], y_tr[idx])
      u, state = opt.update(g, state, params)
      return (optim.apply_updates(params, u), state), loss
    return jax.lax.scan(body, (params, state), batches)[0]

  params, state, rows = params0, opt.init(params0), []
  for i, step in enumerate(checkpoints):
    if i > 0:
      params, state = train(params, state, jnp.asarray(order[checkpoints[i - 1]:step]))
    loss, acc, gnorm = shared.evaluate(params)
    density = hessian.spectral_density(hess_loss, params, net.lanczos_order,
                                       net.num_draws, jax.random.fold_in(key_h, step))
    values = np.asarray(density.ritz_values)
    tol = net.index_tol_rel * max(float(values.max()), 0.0)
    exact = None
    if mlp_num_params(net.width) <= net.exact_max_params:
      lam = np.linalg.eigvalsh(np.asarray(shared.full_hessian(params), np.float64))
      exact = dict(index=float(np.mean(lam < -tol)), lambda_min=float(lam[0]),
                   lambda_max=float(lam[-1]))
    rows.append(dict(
        step=int(step), train_loss=float(loss), test_accuracy=float(acc),
        grad_norm=float(gnorm), lambda_min=float(values.min()),
        lambda_max=float(values.max()),
        index=float(hessian.critical_point_index(density, tol)), index_tol=tol,
        exact=exact,
        ritz_values=values.tolist(),
        ritz_weights=np.asarray(density.ritz_weights).tolist(),
    ))
    logging.info('network-%s: step %d/%d, loss %.4f, index %.4f', name, step, net.steps,
                 loss, rows[-1]['index'])
  return dict(rows=rows)


# --- Config checks. -----------------------------------------------------------

def validate(config):
  req = common.require
  names = common.split_names(config.optimizers)
  req(len(names) > 0, 'optimizers', config.optimizers, 'a non-empty list')
  common.require_choices('optimizers', names, KNOWN_OPTIMIZERS)
  req(len(set(names)) == len(names), 'optimizers', config.optimizers, 'distinct names')
  for name in names:
    req(name in config.lr and config.lr[name] >= 0, f'lr.{name}',
        config.lr.get(name), 'a learning rate >= 0')
  fnames = common.split_names(config.functions)
  common.require_choices('functions', fnames, FUNCTIONS)
  req(len(set(fnames)) == len(fnames), 'functions', config.functions, 'distinct names')
  e = config.escape
  req(e.num_starts >= 1, 'escape.num_starts', e.num_starts, '>= 1')
  req(e.steps >= 1, 'escape.steps', e.steps, '>= 1')
  req(e.radius > 0, 'escape.radius', e.radius, '> 0')
  req(len(config.distances) >= 1 and all(d >= 0 for d in config.distances),
      'distances', config.distances, 'one or more numbers >= 0')
  s = config.strict
  req(len(s.dims) >= 1, 'strict.dims', s.dims, 'one or more ints >= 2')
  for d in s.dims:
    req(isinstance(d, int) and d >= 2, 'strict.dims', s.dims, 'ints >= 2 (d < 2 has no saddle)')
  req(len(set(s.dims)) == len(s.dims), 'strict.dims', s.dims, 'distinct dimensions')
  req(isinstance(s.num_negative, int) and 1 <= s.num_negative <= min(s.dims),
      'strict.num_negative', s.num_negative, f'an int k in [1, d] for every d in {tuple(s.dims)}')
  req(s.negative > 0, 'strict.negative', s.negative, '> 0')
  req(s.positive > 0, 'strict.positive', s.positive, '> 0')
  req(s.reference_distance in config.distances, 'strict.reference_distance',
      s.reference_distance, f'one of distances {tuple(config.distances)}')
  c = config.chain
  req(isinstance(c.dim, int) and c.dim >= 2, 'chain.dim', c.dim, 'an int >= 2')
  req(c.tau > 0, 'chain.tau', c.tau, '> 0')
  req(c.coupling > 0, 'chain.coupling', c.coupling, '> 0')
  req(c.steps >= 1, 'chain.steps', c.steps, '>= 1')
  req(c.num_starts >= 1, 'chain.num_starts', c.num_starts, '>= 1')
  req(c.distance > 0, 'chain.distance', c.distance, '> 0')
  cu = config.curvature
  req(cu.krylov_order >= 1, 'curvature.krylov_order', cu.krylov_order, 'an int >= 1')
  req(cu.sfn_damping >= 0, 'curvature.sfn_damping', cu.sfn_damping, '>= 0')
  req(cu.newton_damping >= 0, 'curvature.newton_damping', cu.newton_damping, '>= 0')
  p = config.perturbed
  req(p.g_thres >= 0, 'perturbed.g_thres', p.g_thres, '>= 0')
  req(p.t_thres >= 0, 'perturbed.t_thres', p.t_thres, '>= 0')
  req(p.radius >= 0, 'perturbed.radius', p.radius, '>= 0')
  req(config.trajectory.steps >= 1, 'trajectory.steps', config.trajectory.steps, '>= 1')
  net = config.network
  if net.enabled:
    net_names = common.split_names(net.optimizers)
    common.require_choices('network.optimizers', net_names, NETWORK_OPTIMIZERS)
    req(len(set(net_names)) == len(net_names), 'network.optimizers', net.optimizers,
        'distinct names')
    req(net.width >= 1, 'network.width', net.width, '>= 1')
    req(net.steps >= 1, 'network.steps', net.steps, '>= 1')
    req(1 <= net.batch_size <= 4000, 'network.batch_size', net.batch_size, 'in [1, 4000]')
    req(net.checkpoints >= 1, 'network.checkpoints', net.checkpoints, '>= 1')
    req(1 <= net.hessian_batch <= 4000, 'network.hessian_batch', net.hessian_batch,
        'in [1, 4000]')
    n = mlp_num_params(net.width)
    req(isinstance(net.lanczos_order, int) and 1 <= net.lanczos_order <= n,
        'network.lanczos_order', net.lanczos_order,
        f'an int in [1, {n}] (the MLP has {n} parameters)')
    req(net.num_draws >= 1, 'network.num_draws', net.num_draws, '>= 1')
    req(0 <= net.index_tol_rel < 1, 'network.index_tol_rel', net.index_tol_rel, 'in [0, 1)')
    req(net.exact_max_params >= 0, 'network.exact_max_params', net.exact_max_params, '>= 0')
    req(net.density_sigma > 0, 'network.density_sigma', net.density_sigma, '> 0')


# --- Figures and tables. ------------------------------------------------------

def _colors(names):
  cmap = plt.get_cmap('tab10')
  return {n: cmap(i % 10) for i, n in enumerate(names)}


def plot_trajectories(results, config, names):
  fnames = list(results)
  fig, axes = plt.subplots(1, len(fnames), figsize=(4.2 * len(fnames), 4), squeeze=False)
  colors = _colors(names)
  lim = 1.4 * config.escape.radius
  for ax, fname in zip(axes[0], fnames):
    g = np.linspace(-lim, lim, 200)
    x1, x2 = np.meshgrid(g, g)
    z = np.asarray(jax.vmap(jax.vmap(FUNCTIONS[fname].fn, 1, 0), 1, 1)(
        jnp.stack([jnp.asarray(x1), jnp.asarray(x2)])))
    ax.contour(x1, x2, z, levels=20, colors='#999999', linewidths=0.5)
    ax.add_patch(plt.Circle((0, 0), config.escape.radius, fill=False, ls='--', color='k', lw=0.6))
    for name in names:
      xs = np.array(results[fname][name]['trajectory'])
      xs[np.any(np.abs(xs) > 3 * lim, axis=1)] = np.nan
      ax.plot(xs[:, 0], xs[:, 1], '-', color=colors[name], lw=1.2, label=name)
    ax.plot(0, 0, 'k+', ms=10)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect('equal')
    ax.set_title(f'{FUNCTIONS[fname].formula}', fontsize=9)
  axes[0][-1].legend(fontsize=6, loc='lower right')
  fig.suptitle(f'Trajectories from distance {config.trajectory.distance} '
               f'(dashed: escape radius {config.escape.radius})')
  fig.tight_layout()
  return fig


def _median_curve(rows):
  d = [r['distance'] for r in rows if r['distance'] > 0 and r['median'] is not None]
  m = [r['median'] for r in rows if r['distance'] > 0 and r['median'] is not None]
  return d, m


def plot_escape_vs_distance(panels, names):
  rows, cols = common.grid_shape(len(panels), max_cols=4)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.axis('off')
  colors = _colors(names)
  for ax, (title, res) in zip(axes.flat, panels):
    for name in names:
      d, m = _median_curve(res[name]['by_distance'])
      if d:
        ax.plot(d, m, 'o-', color=colors[name], label=name, ms=3)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('distance of the start from the saddle')
    ax.set_title(title, fontsize=9)
  for row in axes:
    row[0].set_ylabel('median steps to escape')
  axes.flat[len(panels) - 1].legend(fontsize=6)
  fig.tight_layout()
  return fig


def plot_escape_vs_dim(strict, names, distance):
  fig, ax = plt.subplots(figsize=(5, 3.6))
  colors = _colors(names)
  dims = sorted(strict)
  for name in names:
    pts = []
    for d in dims:
      row = next(r for r in strict[d][name]['by_distance'] if r['distance'] == distance)
      if row['median'] is not None:
        pts.append((d, row['median']))
    if pts:
      ax.plot(*zip(*pts), 'o-', color=colors[name], label=name, ms=3)
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('dimension d')
  ax.set_ylabel('median steps to escape')
  ax.set_title(f'strict saddle, start distance {distance:g}', fontsize=9)
  ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def plot_chain(chain, names, config):
  fig, ax = plt.subplots(figsize=(6, 3.6))
  colors = _colors(names)
  for name in names:
    ax.plot(chain[name]['loss_curve'], color=colors[name], label=name, lw=1)
  for i in range(config.chain.dim + 1):
    ax.axhline(-i / 4, color='#bbbbbb', lw=0.5, ls=':')
  ax.set_xscale('symlog', linthresh=10)
  ax.set_xlabel('step')
  ax.set_ylabel('f(x)')
  ax.set_title(f'chain of {config.chain.dim} saddles from distance {config.chain.distance:g} '
               '(dotted: saddle values)', fontsize=9)
  ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def plot_index(network):
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for name, rows in network.items():
    loss = [r['train_loss'] for r in rows]
    axes[0].plot(loss, [r['index'] for r in rows], 'o-', label=f'{name} (SLQ)', ms=4)
    if rows[0]['exact']:
      axes[0].plot(loss, [r['exact']['index'] for r in rows], 's--',
                   label=f'{name} (exact)', ms=3)
    axes[1].plot([r['step'] for r in rows], [r['lambda_min'] for r in rows], 'o--',
                 label=f'{name} lambda_min', ms=3)
    axes[1].plot([r['step'] for r in rows], [r['lambda_max'] for r in rows], 'o-',
                 label=f'{name} lambda_max', ms=3)
  axes[0].set_xlabel('training loss')
  axes[0].set_ylabel('index (fraction of negative eigenvalues)')
  axes[0].set_title('index against loss (Dauphin et al. 2014, fig. 1)', fontsize=9)
  axes[0].legend(fontsize=7)
  axes[1].set_yscale('symlog', linthresh=1e-2)
  axes[1].set_xlabel('step')
  axes[1].set_title('extreme Hessian eigenvalues (Lanczos)', fontsize=9)
  axes[1].legend(fontsize=6)
  fig.tight_layout()
  return fig


def plot_density(network, sigma_rel):
  fig, axes = plt.subplots(1, len(network), figsize=(4.5 * len(network), 3.4), squeeze=False)
  for ax, (name, rows) in zip(axes[0], network.items()):
    for row, label in ((rows[0], 'start'), (rows[-1], 'end')):
      values = np.array(row['ritz_values'])
      weights = np.array(row['ritz_weights'])
      lo, hi = values.min(), values.max()
      width = max(hi - lo, 1e-6)
      sigma = sigma_rel * width
      grid = np.linspace(lo - 0.1 * width, hi + 0.1 * width, 600)
      dens = np.asarray(hessian.density_on_grid(
          hessian.SpectralDensity(jnp.asarray(values), jnp.asarray(weights)),
          jnp.asarray(grid), sigma))
      ax.semilogy(grid, np.maximum(dens, 1e-8), label=f'{label} (step {row["step"]})')
    ax.set_ylim(bottom=1e-6)
    ax.set_xlabel('eigenvalue')
    ax.set_title(f'{name}: Hessian spectral density (SLQ)', fontsize=9)
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel('density')
  fig.tight_layout()
  return fig


def _cell(row):
  if row['median'] is None:
    return 'never' + (' (diverged)' if row['diverged'] > 0 else '')
  text = f'{row["median"]:.0f}'
  if row['never'] > 0:
    text += f' ({100 * row["never"]:.0f}% never)'
  return text


def _distance_table(res, names, distances):
  return common.markdown_table(
      ['optimizer'] + [f'{d:g}' for d in distances],
      [[name] + [_cell(r) for r in res[name]['by_distance']] for name in names])


def write_results(workdir, config, names, results):
  md = ['# Escaping saddle points', '',
        f'Escape: the first step with ||x - x*|| >= {config.escape.radius} and '
        f'f(x) < f(x*). Cells: median steps over the starts that escaped, '
        f'with the percentage that never escaped within {config.escape.steps} '
        f'steps; {config.escape.num_starts} random starts per distance (columns). '
        'Learning rates: ' + ', '.join(f'{n}={config.lr[n]}' for n in names) + '.', '']
  for fname, res in results['functions'].items():
    md += [f'## {FUNCTIONS[fname].formula}', '', _distance_table(res, names, config.distances), '']
  s = config.strict
  md += [f'## Strict saddle x^T diag(lambda) x / 2, k={s.num_negative} eigenvalues '
         f'-{s.negative}, the rest +{s.positive}', '',
         f'Start distance {s.reference_distance:g}; columns: dimension d.', '',
         common.markdown_table(
             ['optimizer'] + [f'd={d}' for d in s.dims],
             [[name] + [_cell(next(r for r in results['strict'][int(d)][name]['by_distance']
                                   if r['distance'] == s.reference_distance))
                        for d in s.dims] for name in names]), '']
  for d in s.dims:
    md += [f'### d = {d}, over the start distance', '',
           _distance_table(results['strict'][int(d)], names, config.distances), '']
  if results['gd_slopes']:
    md += ['## gd: escape steps against ln(1/distance)', '',
           'Least-squares slope of the median escape step on ln(1/distance) '
           '(starts that all escaped); theory for a strict saddle: '
           '1 / ln(1 + eta |lambda_min|).', '',
           common.markdown_table(['function', 'slope', 'theory', 'points'],
                                 [(k, v['slope'], v['theory'], v['points'])
                                  for k, v in results['gd_slopes'].items()]), '']
  c = config.chain
  md += [f'## Chain of {c.dim} saddles (start distance {c.distance:g}, '
         f'{c.num_starts} starts, budget {c.steps})', '',
         'Median step at which saddle i is passed (|x_i| > 1/2), and the '
         'fraction of starts that pass all of them.', '',
         common.markdown_table(
             ['optimizer'] + [f'saddle {i + 1}' for i in range(c.dim)] + ['all passed'],
             [[name] + [_cell(r) for r in results['chain'][name]['per_saddle']]
              + [results['chain'][name]['all_passed']] for name in names]), '']
  if results.get('network'):
    net = config.network
    md += [f'## MNIST-1D MLP (width {net.width}, {mlp_num_params(net.width)} parameters)', '',
           f'Hessian of the loss on {net.hessian_batch} training examples: '
           f'{net.num_draws} Lanczos runs of order {net.lanczos_order} from Gaussian '
           'starts; lambda_min / lambda_max: the extreme Ritz values; index: the '
           'stochastic Lanczos quadrature estimate of the fraction of eigenvalues '
           f'below -{net.index_tol_rel:g} lambda_max (near-zero eigenvalues of either '
           'sign are not counted). The points are checkpoints along training, not '
           'exact critical points. Exact columns (full Hessian, eigh) where the '
           f'MLP has at most {net.exact_max_params} parameters.', '']
    for name, rows in results['network'].items():
      md += [f'### {name} (lr {net["lr_" + name]})', '',
             common.markdown_table(
                 ['step', 'train loss', 'test acc', '|grad|', 'lambda_min',
                  'lambda_max', 'index'] + (['exact lambda_min', 'exact index']
                                            if rows[0]['exact'] else []),
                 [[r['step'], r['train_loss'], r['test_accuracy'], r['grad_norm'],
                   r['lambda_min'], r['lambda_max'], r['index']]
                  + ([r['exact']['lambda_min'], r['exact']['index']] if r['exact'] else [])
                  for r in rows]), '']
  md += ['Figures: `trajectories.png`, `escape_vs_distance.png`, `escape_vs_dim.png`, '
         '`chain.png`' + (', `hessian_index.png`, `hessian_density.png`'
                          if results.get('network') else '') + '.', '']
  common.atomic_write(os.path.join(workdir, 'results.md'), '\n'.join(md))


def _sequential_keys(key, n: int) -> list:
  """``key, sub = split(key)`` n times: the subs (one per function, per d)."""
  subs = []
  for _ in range(n):
    key, sub = jax.random.split(key)
    subs.append(sub)
  return subs


def parts(config, names, data_fn=load_mnist1d) -> list:
  """The study's independent parts: ``(run name, compute() -> JSON-able dict)``.

  Each is a run of :class:`experiments.common.Study`: a rerun skips the
  finished ones. ``data_fn()`` gives MNIST-1D to the network parts.
  """
  k_fn, k_strict, k_chain, k_net = jax.random.split(jax.random.key(config.seed), 4)
  fnames = common.split_names(config.functions)
  dims = [int(d) for d in config.strict.dims]
  out = [(f'functions-{f}', functools.partial(function_part, config, names, f, k))
         for f, k in zip(fnames, _sequential_keys(k_fn, len(fnames)))]
  out += [(f'strict-d={d}', functools.partial(strict_part, config, names, d, k))
          for d, k in zip(dims, _sequential_keys(k_strict, len(dims)))]
  out.append(('chain', functools.partial(chain_part, config, names, k_chain)))
  if config.network.enabled:
    shared = functools.cache(lambda: network(config, data_fn()))
    out += [(f'network-{n}', lambda n=n: network_part(config, n, k_net, shared()))
            for n in common.split_names(config.network.optimizers)]
  return out


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  names = common.split_names(config.optimizers)
  done = {name: common.run_part(study, name, compute) for name, compute in parts(config, names)}
  results = dict(
      functions={f: done[f'functions-{f}'] for f in common.split_names(config.functions)},
      strict={int(d): done[f'strict-d={int(d)}'] for d in config.strict.dims},
      chain=done['chain'])
  slopes = {}
  if 'gd' in names:
    lr = config.lr['gd']
    for fname, res in results['functions'].items():
      if fname in ('saddle', 'saddle_5', 'double_well'):
        neg = {'saddle': 2.0, 'saddle_5': 2.0, 'double_well': 1.0}[fname]
        slopes[fname] = dict(**gd_log_slope(res['gd']['by_distance'], config.distances),
                             theory=float(1 / np.log1p(lr * neg)))
    for d, res in results['strict'].items():
      slopes[f'strict d={d}'] = dict(**gd_log_slope(res['gd']['by_distance'], config.distances),
                                     theory=float(1 / np.log1p(lr * config.strict.negative)))
  results['gd_slopes'] = slopes
  if config.network.enabled:
    results['network'] = {n: done[f'network-{n}']['rows']
                          for n in common.split_names(config.network.optimizers)}

  if results['functions']:
    common.save_figure(plot_trajectories(results['functions'], config, names),
                       os.path.join(workdir, 'trajectories.png'))
  panels = [(FUNCTIONS[f].formula, r) for f, r in results['functions'].items()]
  panels += [(f'strict saddle d={d}', r) for d, r in results['strict'].items()]
  common.save_figure(plot_escape_vs_distance(panels, names),
                     os.path.join(workdir, 'escape_vs_distance.png'))
  common.save_figure(plot_escape_vs_dim(results['strict'], names,
                                        config.strict.reference_distance),
                     os.path.join(workdir, 'escape_vs_dim.png'))
  common.save_figure(plot_chain(results['chain'], names, config),
                     os.path.join(workdir, 'chain.png'))
  if results.get('network'):
    common.save_figure(plot_index(results['network']), os.path.join(workdir, 'hessian_index.png'))
    common.save_figure(plot_density(results['network'], config.network.density_sigma),
                       os.path.join(workdir, 'hessian_density.png'))
  write_results(workdir, config, names, results)
  common.write_json(os.path.join(workdir, 'results.json'),
                    {**results, 'strict': {str(k): v for k, v in results['strict'].items()}})
  return results
