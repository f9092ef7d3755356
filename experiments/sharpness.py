"""Sharpness, flat minima and the edge of stability, on MNIST-1D.

Part ``eos`` (Cohen et al., 2021; 2022): full-batch gradient descent with
step ``eta`` on the first ``eos.num_train`` training examples, tanh MLP
2 x 200, squared loss ``0.5 ||f(x) - onehot(y)||^2``, from one
initialization for every ``eta``. Every ``measure_every`` steps one jitted
``lax.scan`` ends with Lanczos on the full-batch Hessian: its top eigenvalue
(the sharpness) and, for Adam, the top eigenvalue of ``P^{-1} H`` with
Adam's preconditioner ``P``. A run stops at ``target_accuracy`` on its
training set (or ``max_steps``, or divergence). Per run: the first measured
step with sharpness >= 2 / eta (Adam: preconditioned >= 38 / eta at
beta1 = 0.9) and the median of sharpness / threshold from there on.

Part ``flat`` (Keskar et al., 2017; Foret et al., 2021): SGD + momentum with
a small and a large batch, and SAM (``optim.contrib.sam`` around the same
SGD, ascent ``rho g / ||g||``) with the small batch, for the MNIST-1D MLP and
CNN; the same number of updates for every arm, the seeds of an arm one
vmapped grid (Trainer). At the end: the top Hessian eigenvalue (Lanczos),
its trace (Hutchinson), the training loss on ``hessian_examples`` training
examples and the test error. SAM runs in Optax's transparent mode: each
update is two Trainer steps, the ascent (the params become the adversarial
point) and the step from the original params with the gradient taken
there, and both see the same minibatch (each batch comes twice).

Part ``landscape`` (Li et al., 2018; Huang et al., 2017): a snapshot run
(cyclic cosine, ``num_snapshots`` cycles) for two seeds as one grid; the loss
along the straight line between consecutive snapshots of a seed and
between the two seeds' snapshots of the same cycle (independently trained
models), with the barrier ``max_t L(t) - [(1 - t) L(0) + t L(1)]``; 1-D and
2-D slices along filter-normalized random directions around the last
snapshot of the first seed.

Outputs: ``results.md``, ``results.json``, ``eos.png`` (sharpness and loss
against step, one column per run), ``flat_sharp.png``, ``landscape_1d.png``,
``landscape_2d.png``, ``interpolation.png``.
"""

from __future__ import annotations

import functools
import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np

from experiments import common
from experiments.optimizers_compared import EachBatchTwice  # SAM: each batch twice
from research import data as data_lib
from research import models
from research import optim
from research.analysis import landscape
from research.analysis import sharpness as sharp_lib
from research.optim import transform as transform_lib
from research.train import losses as losses_lib
from research.train import state as state_lib
from research.train import trainer as trainer_lib

PARTS = ('eos', 'flat', 'landscape')
EOS_OPTIMIZERS = ('gd', 'adam')
FLAT_ARMS = ('small_batch', 'large_batch', 'sam')
FLAT_MODELS = ('mnist1d_mlp', 'mnist1d_cnn')
NUM_TRAIN = 4000  # MNIST-1D's training split


# --- checks ------------------------------------------------------------------------------

def _param_count(model_config) -> int:
  return models.count_params(model_config)


def _require_order(field: str, order, model_config) -> None:
  n = _param_count(model_config)
  common.require(isinstance(order, int) and 1 <= order <= n, field, order,
                 f'an int in [1, {n}] (the parameter count of {model_config.name})')


def _check_model(field: str, model_config) -> None:
  try:
    models.build_model(model_config)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f'config.{field}: {e}') from None


def validate(config) -> None:
  c = config
  parts = common.split_names(c.parts)
  common.require(bool(parts), 'parts', c.parts, 'a comma-separated subset of ' + ', '.join(PARTS))
  common.require_choices('parts', parts, PARTS)
  common.require(c.log_every >= 1, 'log_every', c.log_every, '>= 1')
  e = c.eos
  _check_model('eos.model', e.model)  # an unknown model or a bad field fails here
  common.require(1 <= e.num_train <= NUM_TRAIN, 'eos.num_train', e.num_train,
                 f'[1, {NUM_TRAIN}]')
  opts = common.split_names(e.optimizers)
  common.require(bool(opts), 'eos.optimizers', e.optimizers,
                 'a comma-separated subset of ' + ', '.join(EOS_OPTIMIZERS))
  common.require_choices('eos.optimizers', opts, EOS_OPTIMIZERS)
  for field in ('etas', 'adam_etas'):
    values = tuple(e[field])
    common.require(bool(values) and all(v > 0 for v in values), f'eos.{field}', values,
                   'one or more step sizes > 0')
  common.require(0 <= e.adam_b1 < 1, 'eos.adam_b1', e.adam_b1, '[0, 1)')
  common.require(0 <= e.adam_b2 < 1, 'eos.adam_b2', e.adam_b2, '[0, 1)')
  common.require(e.adam_eps >= 0, 'eos.adam_eps', e.adam_eps, '>= 0')
  common.require(e.measure_every >= 1, 'eos.measure_every', e.measure_every, '>= 1')
  common.require(0 < e.target_accuracy <= 1, 'eos.target_accuracy', e.target_accuracy, '(0, 1]')
  common.require(e.max_steps >= e.measure_every, 'eos.max_steps', e.max_steps,
                 f'>= eos.measure_every={e.measure_every}')
  common.require(e.adam_steps == 0 or e.adam_steps >= e.measure_every, 'eos.adam_steps',
                 e.adam_steps, f'0 (stop at the target accuracy) or >= eos.measure_every='
                 f'{e.measure_every}')
  _require_order('eos.lanczos_order', e.lanczos_order, e.model)

  f = c.flat
  names = common.split_names(f.models)
  common.require(bool(names), 'flat.models', f.models,
                 'a comma-separated subset of ' + ', '.join(FLAT_MODELS))
  common.require_choices('flat.models', names, FLAT_MODELS)
  arms = common.split_names(f.arms)
  common.require(bool(arms), 'flat.arms', f.arms,
                 'a comma-separated subset of ' + ', '.join(FLAT_ARMS))
  common.require_choices('flat.arms', arms, FLAT_ARMS)
  for field in ('small_batch', 'large_batch'):
    common.require(1 <= f[field] <= NUM_TRAIN, f'flat.{field}', f[field], f'[1, {NUM_TRAIN}]')
  for field in ('learning_rate', 'sam_rho'):
    common.require(f[field] > 0, f'flat.{field}', f[field], '> 0')
  common.require(0 <= f.momentum < 1, 'flat.momentum', f.momentum, '[0, 1)')
  for field in ('num_steps', 'num_seeds', 'trace_probes'):
    common.require(f[field] >= 1, f'flat.{field}', f[field], '>= 1')
  common.require(f.curve_points >= 2, 'flat.curve_points', f.curve_points, '>= 2')
  common.require(1 <= f.hessian_examples <= NUM_TRAIN, 'flat.hessian_examples',
                 f.hessian_examples, f'[1, {NUM_TRAIN}]')
  for name in names:
    _require_order('flat.lanczos_order', f.lanczos_order, models.default_config(name))

  s = c.landscape
  common.require(s.model.name in FLAT_MODELS, 'landscape.model.name', s.model.name,
                 'one of ' + ', '.join(FLAT_MODELS) + ' (MNIST-1D inputs)')
  _check_model('landscape.model', s.model)
  common.require(s.direction in landscape.NORMALIZATIONS, 'landscape.direction', s.direction,
                 'one of ' + ', '.join(landscape.NORMALIZATIONS))
  common.require(s.ignore in landscape.IGNORE, 'landscape.ignore', s.ignore,
                 'one of ' + ', '.join(landscape.IGNORE))
  common.require(1 <= s.batch_size <= NUM_TRAIN, 'landscape.batch_size', s.batch_size,
                 f'[1, {NUM_TRAIN}]')
  common.require(s.num_snapshots >= 2, 'landscape.num_snapshots', s.num_snapshots,
                 '>= 2 (a pair of consecutive snapshots)')
  common.require(s.budget_steps >= s.num_snapshots, 'landscape.budget_steps', s.budget_steps,
                 f'>= landscape.num_snapshots={s.num_snapshots}')
  for field in ('learning_rate', 'span'):
    common.require(s[field] > 0, f'landscape.{field}', s[field], '> 0')
  common.require(0 <= s.momentum < 1, 'landscape.momentum', s.momentum, '[0, 1)')
  common.require(s.weight_decay >= 0, 'landscape.weight_decay', s.weight_decay, '>= 0')
  for field in ('points_1d', 'points_2d', 'interpolation_points'):
    common.require(s[field] >= 2, f'landscape.{field}', s[field], '>= 2')
  common.require(1 <= s.loss_examples <= NUM_TRAIN, 'landscape.loss_examples',
                 s.loss_examples, f'[1, {NUM_TRAIN}]')
  trainer_lib.validate_config(c.train)


def _dataset(config, batch_size: int):
  d = ml_collections.ConfigDict(config.data.to_dict())  # the command line's is locked
  d.batch_size = batch_size
  return data_lib.get_dataset(d)


def _train_subset(ds, n: int):
  x, y = ds.arrays('train')
  return jnp.asarray(x[:n]), jnp.asarray(y[:n])


# --- part 1: edge of stability -------------------------------------------------------------

def eos_tx(config, optimizer: str, eta: float):
  e = config.eos
  if optimizer == 'gd':
    return optim.make('gd', float(eta))
  return optim.make('adam', float(eta), b1=float(e.adam_b1), b2=float(e.adam_b2),
                    eps=float(e.adam_eps))


def _adam_state(opt_state):
  found = [n for n in jax.tree.leaves(
      opt_state, is_leaf=lambda n: isinstance(n, transform_lib.ScaleByAdamState))
           if isinstance(n, transform_lib.ScaleByAdamState)]
  return found[0]


def eos_problem(config, ds):
  """``(loss, accuracy, params0)`` of the full-batch problem."""
  x, y = _train_subset(ds, config.eos.num_train)
  model = models.build_model(config.eos.model)
  targets = jax.nn.one_hot(y, config.eos.model.num_classes)

  def loss(params):
    out = model.apply({'params': params}, x)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out - targets), axis=-1))

  def accuracy(params):
    return jnp.mean(losses_lib.correct(model.apply({'params': params}, x), y))

  params = model.init(jax.random.key(config.seed), x[:1])['params']
  return loss, accuracy, params


def make_segment(config, loss, accuracy, tx, optimizer: str):
  """``segment(params, opt_state, key)``: ``measure_every`` steps of ``tx``
  under ``lax.scan``, then the sharpness (and Adam's preconditioned
  sharpness) at the end; one compilation for every step size (it is in the
  optimizer state)."""
  e = config.eos

  @jax.jit
  def segment(params, opt_state, key):
    def body(carry, _):
      p, s = carry
      value, g = jax.value_and_grad(loss)(p)
      u, s = tx.update(g, s, p)
      return (optim.apply_updates(p, u), s), value
    (params, opt_state), step_losses = jax.lax.scan(
        body, (params, opt_state), None, length=e.measure_every)
    k1, k2 = jax.random.split(key)
    out = dict(step_losses=step_losses, loss=loss(params), accuracy=accuracy(params),
               sharpness=sharp_lib.sharpness(loss, params, e.lanczos_order, k1))
    if optimizer == 'adam':
      a = _adam_state(opt_state)
      p = sharp_lib.adam_preconditioner(a.nu, a.count, e.adam_b1, e.adam_b2, e.adam_eps)
      out['preconditioned'] = sharp_lib.preconditioned_sharpness(
          loss, params, p, e.lanczos_order, k2)
    return params, opt_state, out

  return segment


def _save_progress(folder, step, params, opt_state, hist) -> None:
  os.makedirs(folder, exist_ok=True)
  leaves = jax.tree.leaves((params, opt_state))
  tmp = os.path.join(folder, '.progress.npz')
  with open(tmp, 'wb') as f:
    np.savez(f, *[np.asarray(x) for x in leaves])
  os.replace(tmp, os.path.join(folder, 'progress.npz'))
  common.write_json(os.path.join(folder, 'progress.json'), dict(step=step, history=hist))


def _load_progress(folder, params, opt_state):
  path = os.path.join(folder, 'progress.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    meta = json.load(f)
  with np.load(os.path.join(folder, 'progress.npz')) as z:
    leaves = [z[f'arr_{i}'] for i in range(len(z.files))]
  treedef = jax.tree.structure((params, opt_state))
  params, opt_state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
  return meta['step'], params, opt_state, meta['history']


def eos_run(config, problem, segment, optimizer: str, eta: float, folder: str) -> dict:
  """One step size, in ``folder`` (resuming from its last progress file)."""
  e = config.eos
  loss, _, params = problem
  tx = eos_tx(config, optimizer, eta)
  opt_state = tx.init(params)
  hist = dict(steps=[], sharpness=[], preconditioned=[], loss=[], accuracy=[], step_losses=[])
  step = 0
  resumed = _load_progress(folder, params, opt_state)
  if resumed:
    step, params, opt_state, hist = resumed
    logging.info('eos %s eta=%g: resumed from step %d', optimizer, eta, step)
  key = jax.random.key(config.seed + 1)
  diverged = False
  checkpoint_every = config.train.checkpoint_every or e.max_steps
  # Adam with adam_steps > 0 runs that many steps: past the target accuracy.
  last = e.adam_steps if optimizer == 'adam' and e.adam_steps else e.max_steps
  stop_at_target = not (optimizer == 'adam' and e.adam_steps)
  while step < last and not (stop_at_target and hist['accuracy']
                             and hist['accuracy'][-1] >= e.target_accuracy):
    params, opt_state, out = segment(params, opt_state, jax.random.fold_in(key, step))
    out = jax.device_get(out)
    step += e.measure_every
    hist['steps'].append(step)
    for name in ('sharpness', 'loss', 'accuracy'):
      hist[name].append(float(out[name]))
    if 'preconditioned' in out:
      hist['preconditioned'].append(float(out['preconditioned']))
    hist['step_losses'].extend(float(v) for v in out['step_losses'])
    if not np.isfinite(out['loss']) or not np.isfinite(out['sharpness']):
      diverged = True
      break
    if step % checkpoint_every < e.measure_every:
      _save_progress(folder, step, params, opt_state, hist)
  threshold = sharp_lib.stability_threshold(optimizer, eta, e.adam_b1)
  measured = hist['preconditioned'] if optimizer == 'adam' else hist['sharpness']
  finite = [(s, v) for s, v in zip(hist['steps'], measured) if np.isfinite(v)]
  summary = sharp_lib.edge_of_stability_summary(
      [s for s, _ in finite], [v for _, v in finite], threshold) if finite else dict(
          threshold=threshold, first_step=None, median_ratio=None, max_ratio=None)
  reached = max(hist['accuracy'], default=0.0) >= e.target_accuracy
  return dict(optimizer=optimizer, eta=float(eta), threshold=threshold, steps_run=step,
              reached_target=bool(reached), diverged=diverged, summary=summary,
              final_loss=hist['loss'][-1], final_accuracy=hist['accuracy'][-1], history=hist)


def run_eos(config, study, ds) -> dict:
  e = config.eos
  problem = eos_problem(config, ds)
  out = {}
  for optimizer in common.split_names(e.optimizers):
    etas = e.etas if optimizer == 'gd' else e.adam_etas
    segment = make_segment(config, problem[0], problem[1], eos_tx(config, optimizer, etas[0]),
                           optimizer)
    for eta in etas:
      name = f'eos_{optimizer}_eta={eta:.6g}'
      out[name] = study.run(name, functools.partial(eos_run, config, problem, segment,
                                                    optimizer, float(eta)))
  return out


# --- part 2: flat and sharp minima ------------------------------------------------------------

def flat_tx(config, arm: str):
  """SGD + momentum (cosine decay to 0 over the updates if asked, so that
  every arm ends converged); SAM wraps the same SGD (Foret et al.'s ascent)."""
  f = config.flat
  schedule = dict(schedule='cosine_decay_schedule',
                  schedule_kwargs=dict(decay_steps=f.num_steps)) if f.cosine_decay else {}
  sgd = optim.make('sgd', float(f.learning_rate), momentum=float(f.momentum), **schedule)
  if arm != 'sam':
    return sgd
  return optim.contrib.sam(sgd, optim.chain(optim.contrib.normalize(), optim.sgd(f.sam_rho)),
                           sync_period=2)


def _classification_loss(apply_fn, x, y):
  def loss(params):
    logits = apply_fn({'params': params}, x)
    return jnp.mean(losses_lib.softmax_cross_entropy(logits, y))
  return loss


def flat_measures(config, apply_fn, x, y):
  """A jitted ``(params, key) -> measures`` vmapped over a replica axis."""
  f = config.flat
  alphas = jnp.linspace(-1.0, 1.0, f.curve_points)

  def one(params, key):
    loss = _classification_loss(apply_fn, x, y)
    k1, k2, k3 = jax.random.split(key, 3)
    direction = landscape.random_direction(params, k3)
    return dict(
        sharpness=sharp_lib.sharpness(loss, params, f.lanczos_order, k1),
        trace=sharp_lib.hutchinson_trace(loss, params, k2, f.trace_probes),
        train_loss=loss(params),
        train_accuracy=jnp.mean(losses_lib.correct(apply_fn({'params': params}, x), y)),
        curve=landscape.loss_curve(loss, params, direction, alphas))

  return jax.jit(jax.vmap(one))


def flat_run(config, model_name: str, arm: str, module, measure, folder: str) -> dict:
  """One arm's seeds as one grid; ``measure`` is :func:`flat_measures`'s
  function, shared by the arms of a model (one compilation)."""
  f = config.flat
  batch = f.large_batch if arm == 'large_batch' else f.small_batch
  ds = _dataset(config, batch)
  x_train, _ = ds.arrays('train')
  x_test, y_test = ds.arrays('test')

  def init(key):
    return {'params': module.init(key, jnp.asarray(x_train[:1]), train=False)['params']}

  seeds = [config.seed + i for i in range(f.num_seeds)]
  state = state_lib.create_replicas(apply_fn=module.apply, init_fn=init, tx=flat_tx(config, arm),
                                    keys=jnp.stack([jax.random.key(s) for s in seeds]))
  per_update = 2 if arm == 'sam' else 1
  trainer = trainer_lib.Trainer(config.train, folder, run_config=dict(
      run=f'flat_{model_name}_{arm}', study=config.to_dict()))
  loader = EachBatchTwice(ds.train) if arm == 'sam' else ds.train
  num_steps = f.num_steps * per_update
  fit = trainer.fit(state, loader, eval_sets={'test': dict(x=x_test, y=y_test)},
                    num_steps=num_steps, log_every=min(config.log_every * per_update, num_steps),
                    name=f'flat {model_name} {arm} ({len(seeds)} seeds)')
  keys = jnp.stack([jax.random.key(10_000 + s) for s in seeds])
  measures = jax.device_get(measure(fit.state.params, keys))
  test = fit.evals[-1]['test']
  return dict(model=model_name, arm=arm, batch_size=batch, seeds=seeds,
              test_error=[1.0 - a for a in test['accuracy']], test_loss=test['loss'],
              **{k: np.asarray(v).tolist() for k, v in measures.items()},
              seconds=fit.wall_time - fit.compile_time)


def run_flat(config, study) -> dict:
  out = {}
  x, y = _train_subset(_dataset(config, config.flat.small_batch), config.flat.hessian_examples)
  for model_name in common.split_names(config.flat.models):
    module = models.build_model(models.default_config(model_name))
    measure = flat_measures(config, module.apply, x, y)
    for arm in common.split_names(config.flat.arms):
      name = f'flat_{model_name}_{arm}'
      out[name] = study.run(name, functools.partial(flat_run, config, model_name, arm, module,
                                                    measure))
  return out


# --- part 3: landscapes and barriers -----------------------------------------------------

def landscape_run(config, folder: str) -> dict:
  s = config.landscape
  ds = _dataset(config, s.batch_size)
  module = models.build_model(s.model)
  x_train, _ = ds.arrays('train')

  def init(key):
    v = module.init(key, jnp.asarray(x_train[:1]), train=False)
    return {k: v[k] for k in ('params', 'batch_stats') if k in v}

  seeds = [config.seed, config.seed + 1]
  tx = optim.make('sgd', float(s.learning_rate), momentum=float(s.momentum),
                  weight_decay=float(s.weight_decay), schedule='cyclic_cosine_schedule',
                  schedule_kwargs=dict(total_steps=s.budget_steps, num_cycles=s.num_snapshots))
  state = state_lib.create_replicas(apply_fn=module.apply, init_fn=init, tx=tx,
                                    keys=jnp.stack([jax.random.key(x) for x in seeds]))
  trainer = trainer_lib.Trainer(config.train, folder, run_config=dict(
      run='landscape', study=config.to_dict()))
  snap_steps = optim.snapshot_steps(s.budget_steps, s.num_snapshots)
  fit = trainer.fit(state, ds.train, num_steps=s.budget_steps,
                    log_every=min(config.log_every, s.budget_steps), snapshot_steps=snap_steps,
                    name='landscape (snapshot run, 2 seeds)')
  x, y = _train_subset(ds, s.loss_examples)

  def loss_of_variables(variables):
    logits = module.apply(variables, x)
    return jnp.mean(losses_lib.softmax_cross_entropy(logits, y))

  def member(snap, i):
    return jax.tree.map(lambda v: jnp.asarray(v)[i], snap)

  snaps = [snap for _, snap in fit.snapshots]
  ts = jnp.linspace(0.0, 1.0, s.interpolation_points)
  curve = jax.jit(lambda a, b: landscape.interpolation_curve(loss_of_variables, a, b, ts))
  paths = []
  for r in range(2):
    for i in range(len(snaps) - 1):
      paths.append(('consecutive', f'seed {seeds[r]}: snapshot {i + 1} -> {i + 2}',
                    member(snaps[i], r), member(snaps[i + 1], r)))
  for i in range(len(snaps)):
    paths.append(('independent', f'snapshot {i + 1}: seed {seeds[0]} -> seed {seeds[1]}',
                  member(snaps[i], 0), member(snaps[i], 1)))
  out_paths = []
  for kind, label, a, b in paths:
    losses = np.asarray(curve(a, b), np.float64)
    out_paths.append(dict(kind=kind, label=label, losses=losses.tolist(),
                          barrier=landscape.loss_barrier(np.asarray(ts), losses)))

  center = member(snaps[-1], 0)
  stats = center.get('batch_stats')

  def loss_of_params(params):
    return loss_of_variables(dict(center, params=params) if stats else {'params': params})

  alphas = jnp.linspace(-s.span, s.span, s.points_1d)
  grid = jnp.linspace(-s.span, s.span, s.points_2d)

  @jax.jit
  def slices(params, key):
    d1, d2 = (landscape.random_direction(params, k, s.direction, s.ignore)
              for k in jax.random.split(key))
    return (landscape.loss_curve(loss_of_params, params, d1, alphas),
            landscape.loss_surface(loss_of_params, params, d1, d2, grid, grid))

  line, surface = slices(center['params'], jax.random.key(config.seed + 2))
  return dict(ts=np.asarray(ts).tolist(), paths=out_paths, snapshot_steps=snap_steps,
              alphas=np.asarray(alphas).tolist(), curve_1d=np.asarray(line).tolist(),
              grid=np.asarray(grid).tolist(), surface=np.asarray(surface).tolist())


# --- summaries, figures, table ---------------------------------------------------------------

def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarize_flat(flat: dict) -> dict:
  out = {}
  for name, r in flat.items():
    out[name] = {k: _mean_std(r[k]) for k in ('sharpness', 'trace', 'test_error',
                                               'train_loss', 'train_accuracy')}
  return out


def flat_verdict(summary: dict, config) -> list[str]:
  """Per model and comparison: is the flatter arm (lower top eigenvalue) the
  one with the lower test error, beyond the seed spread?"""
  lines = []
  n = config.flat.num_seeds
  for model_name in common.split_names(config.flat.models):
    for a, b in (('small_batch', 'large_batch'), ('sam', 'small_batch')):
      ka, kb = f'flat_{model_name}_{a}', f'flat_{model_name}_{b}'
      if ka not in summary or kb not in summary:
        continue
      sa, sb = summary[ka], summary[kb]
      flat_claim, dsharp, sspread = common.seed_claim(sa['sharpness'], sb['sharpness'], n)
      err_claim, derr, espread = common.seed_claim(sa['test_error'], sb['test_error'], n)
      flatter = a if dsharp < 0 else b
      text = (f'- {model_name}, {a} vs {b}: top eigenvalue {sa["sharpness"][0]:.3g} vs '
              f'{sb["sharpness"][0]:.3g} ({flat_claim} the seed spread {sspread:.2g}), trace '
              f'{sa["trace"][0]:.3g} vs {sb["trace"][0]:.3g}, test error '
              f'{sa["test_error"][0] * 100:.2f} vs {sb["test_error"][0] * 100:.2f} % '
              f'(difference {derr * 100:+.2f}, spread {espread * 100:.2f}: {err_claim}). ')
      if flat_claim != 'beyond' or err_claim != 'beyond':
        text += 'No claim that flatter means better here (a difference within the spread).'
      elif (derr < 0) == (flatter == a):
        text += f'The flatter arm ({flatter}) generalizes better, beyond the spread.'
      else:
        text += f'The flatter arm ({flatter}) generalizes worse, beyond the spread.'
      lines.append(text)
  return lines


def _eos_lines(eos: dict) -> list[str]:
  lines = []
  for name, r in eos.items():
    s = r['summary']
    what = 'preconditioned sharpness' if r['optimizer'] == 'adam' else 'sharpness'
    line = f'threshold {r["threshold"]:.4g}'
    end = ('diverged' if r['diverged'] else
           f'{"reached" if r["reached_target"] else "did not reach"} the target accuracy '
           f'at step {r["steps_run"]}')
    if s['first_step'] is None:
      mx = s.get('max_ratio')
      lines.append(f'- {name}: {what} never reached the {line} '
                   f'(max {mx:.2f} of it); {end}.' if mx is not None else
                   f'- {name}: no finite measurement; {end}.')
    else:
      lines.append(f'- {name}: {what} first >= the {line} at step {s["first_step"]}; '
                   f'median {what} / threshold afterwards {s["median_ratio"]:.3f} over '
                   f'{s["measurements_after"]} measurements; {end}.')
  return lines


def _barrier_lines(land: dict) -> list[str]:
  by = {}
  for p in land['paths']:
    by.setdefault(p['kind'], []).append(p['barrier'])
  if not {'consecutive', 'independent'} <= set(by):
    return []
  c, i = by['consecutive'], by['independent']
  smaller = 'smaller' if max(c) < min(i) else ('smaller on average' if np.mean(c) < np.mean(i)
                                                else 'not smaller')
  return [f'- Loss barrier between consecutive snapshots: mean {np.mean(c):.4g} '
          f'(range {min(c):.4g} to {max(c):.4g}, {len(c)} paths); between independently '
          f'trained models: mean {np.mean(i):.4g} (range {min(i):.4g} to {max(i):.4g}, '
          f'{len(i)} paths): the snapshots\' barrier is {smaller}.',
          f'- The consecutive snapshots\' mean barrier is {np.mean(c) / np.mean(i):.2%} of the '
          'independent models\': a barrier near 0 means the straight path does not climb '
          'above the line between its ends (one basin, linearly connected); a large one '
          'means two basins as the linear path sees them.']


def _figures(workdir, config, eos, flat, land):
  if eos:
    runs = list(eos.values())
    fig, axes = plt.subplots(2, len(runs), figsize=(3.6 * len(runs), 5.5), squeeze=False)
    for j, r in enumerate(runs):
      h = r['history']
      key = 'preconditioned' if r['optimizer'] == 'adam' else 'sharpness'
      ax = axes[0, j]
      ax.plot(h['steps'], h[key], marker='.', markersize=3)
      ax.axhline(r['threshold'], color='k', linestyle='--', linewidth=0.8,
                 label=('38/eta' if r['optimizer'] == 'adam' and config.eos.adam_b1 == 0.9
                        else '2/eta' if r['optimizer'] == 'gd' else '(2+2b1)/((1-b1)eta)'))
      ax.set_title(f'{r["optimizer"]}, eta = {r["eta"]:.4g}', fontsize=9)
      ax.set_ylabel('preconditioned sharpness' if key == 'preconditioned' else 'sharpness')
      ax.legend(fontsize=7)
      axl = axes[1, j]
      axl.plot(np.arange(1, len(h['step_losses']) + 1), h['step_losses'], linewidth=0.7)
      axl.set_yscale('log')
      axl.set_xlabel('step')
      axl.set_ylabel('training loss')
    common.save_figure(fig, os.path.join(workdir, 'eos.png'))
  if flat:
    summary = summarize_flat(flat)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in summary.items():
      for ax, key in zip(axes, ('sharpness', 'trace')):
        ax.errorbar(s[key][0], s['test_error'][0] * 100, xerr=s[key][1],
                    yerr=s['test_error'][1] * 100, marker='o', capsize=3,
                    label=name.replace('flat_', ''))
    axes[0].set_xlabel('top Hessian eigenvalue')
    axes[1].set_xlabel('Hessian trace (Hutchinson)')
    for ax in axes:
      ax.set_ylabel('test error (%)')
      ax.set_xscale('log')
    axes[0].legend(fontsize=7)
    common.save_figure(fig, os.path.join(workdir, 'flat_sharp.png'))
  if land or flat:
    fig, ax = plt.subplots(figsize=(6, 4))
    if land:
      ax.plot(land['alphas'], land['curve_1d'], 'k', linewidth=2, label='landscape model')
    alphas = np.linspace(-1, 1, config.flat.curve_points)
    for name, r in (flat or {}).items():
      ax.plot(alphas, np.mean(r['curve'], axis=0), label=name.replace('flat_', ''))
    ax.set_xlabel(f'alpha ({config.landscape.direction}-normalized random direction)')
    ax.set_ylabel('training loss')
    ax.set_yscale('log')
    ax.legend(fontsize=7)
    common.save_figure(fig, os.path.join(workdir, 'landscape_1d.png'))
  if land:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    g = np.asarray(land['grid'])
    cs = ax.contour(g, g, np.log10(np.asarray(land['surface']).T), levels=20)
    ax.clabel(cs, fontsize=6)
    ax.plot([0], [0], 'r*')
    ax.set_xlabel('alpha (direction 1)')
    ax.set_ylabel('beta (direction 2)')
    ax.set_title('log10 training loss, filter-normalized directions', fontsize=9)
    common.save_figure(fig, os.path.join(workdir, 'landscape_2d.png'))
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in land['paths']:
      ax.plot(land['ts'], p['losses'], color='C0' if p['kind'] == 'consecutive' else 'C3',
              linestyle='-' if p['kind'] == 'consecutive' else '--', label=p['label'])
    ax.set_xlabel('t (interpolation (1 - t) a + t b)')
    ax.set_ylabel('training loss')
    ax.set_yscale('log')
    ax.legend(fontsize=6)
    common.save_figure(fig, os.path.join(workdir, 'interpolation.png'))


def _markdown(config, eos, flat, land, lines) -> str:
  parts = ['# Sharpness, flat minima and the edge of stability', '']
  if eos:
    rows = [(name, r['threshold'], r['summary']['first_step'] or '-',
             '-' if r['summary']['median_ratio'] is None else f'{r["summary"]["median_ratio"]:.3f}',
             r['steps_run'], f'{r["final_accuracy"] * 100:.1f}', 'yes' if r['diverged'] else 'no')
            for name, r in eos.items()]
    parts += ['## Edge of stability', '',
              f'Full batch of the first {config.eos.num_train} MNIST-1D training examples, '
              f'tanh MLP {config.eos.model.depth} x {config.eos.model.width}, squared loss; '
              f'Lanczos ({config.eos.lanczos_order} steps) every {config.eos.measure_every} '
              f'steps, until {config.eos.target_accuracy * 100:g} % training accuracy. GD: '
              'sharpness against 2/eta; Adam: preconditioned sharpness against '
              '(2 + 2 beta1)/((1 - beta1) eta).', '',
              common.markdown_table(['run', 'threshold', 'first step >= threshold',
                                     'median / threshold after', 'steps', 'train acc %',
                                     'diverged'], rows), '']
  if flat:
    summary = summarize_flat(flat)
    rows = []
    for name, s in summary.items():
      rows.append((name.replace('flat_', ''),
                   f'{s["sharpness"][0]:.4g} ± {s["sharpness"][1]:.2g}',
                   f'{s["trace"][0]:.4g} ± {s["trace"][1]:.2g}',
                   f'{s["test_error"][0] * 100:.2f} ± {s["test_error"][1] * 100:.2f}',
                   f'{s["train_loss"][0]:.3g}'))
    f = config.flat
    parts += ['## Flat and sharp minima', '',
              f'SGD + momentum {f.momentum:g}, lr {f.learning_rate:g}'
              f'{" with cosine decay" if f.cosine_decay else ""}, {f.num_steps} updates; '
              f'batch {f.small_batch} (small, SAM) and {f.large_batch} (large); SAM rho '
              f'{f.sam_rho:g}; {f.num_seeds} seeds (mean ± std). Hessian of the training '
              f'cross-entropy on {f.hessian_examples} training examples.', '',
              common.markdown_table(['model / arm', 'top eigenvalue', 'trace', 'test error %',
                                     'train loss'], rows), '']
  if land:
    rows = [(p['kind'], p['label'], f'{p["losses"][0]:.4g}', f'{p["losses"][-1]:.4g}',
             f'{max(p["losses"]):.4g}', f'{p["barrier"]:.4g}') for p in land['paths']]
    s = config.landscape
    parts += ['## Loss barriers on linear paths', '',
              f'`{s.model.name}`, cyclic cosine (alpha_0 = {s.learning_rate:g}, '
              f'{s.num_snapshots} cycles in {s.budget_steps} steps, batch {s.batch_size}), '
              f'snapshots at steps {land["snapshot_steps"]}, two seeds; training loss on '
              f'{s.loss_examples} examples at {s.interpolation_points} points.', '',
              common.markdown_table(['path', 'models', 'L(0)', 'L(1)', 'max L', 'barrier'],
                                    rows), '']
  parts += ['## What the numbers say', '', *lines, '',
            'Figures: `eos.png`, `flat_sharp.png`, `landscape_1d.png`, `landscape_2d.png`, '
            '`interpolation.png` (those of the parts run).', '']
  return '\n'.join(parts)


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  parts = set(common.split_names(config.parts))
  eos, flat, land = {}, {}, {}
  if 'eos' in parts:
    eos = run_eos(config, study, _dataset(config, config.eos.num_train))
  if 'flat' in parts:
    flat = run_flat(config, study)
  if 'landscape' in parts:
    land = study.run('landscape', functools.partial(landscape_run, config))
  lines = _eos_lines(eos)
  if flat:
    lines += flat_verdict(summarize_flat(flat), config)
  if land:
    lines += _barrier_lines(land)
  _figures(workdir, config, eos, flat, land)
  common.atomic_write(os.path.join(workdir, 'results.md'),
                      _markdown(config, eos, flat, land, lines))
  results = dict(eos=eos, flat=flat, flat_summary=summarize_flat(flat) if flat else {},
                 landscape=land, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
