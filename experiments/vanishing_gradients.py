"""Vanishing and exploding gradients in deep MLPs, and their cures.

Part 1, at initialization (``research.analysis.propagation``): for every arm
(activation x init x arch, see configs/vanishing_gradients.py) the gradient
norm of each hidden layer's kernel and the variance of each hidden layer's
output, on one batch of MNIST-1D, at ``probe.depth``; and the ratio of the
first to the last hidden layer's gradient norm against the depth (10 to 50).
Sigmoid with N(0, 1) or Glorot init: the gradient shrinks layer by layer
towards the input (Glorot & Bengio, 2010); ReLU with He init and SELU with
LeCun init keep it level (He et al., 2015; Klambauer et al., 2017);
BatchNorm and residual connections restore it.

Part 2, training: representative arms trained at ``train_depth`` with one
optimizer, over seeds: training loss and test error curves, the first hidden
layer's gradient norm during training, and the probe again on the trained
weights.

Part 3, clipping (Pascanu et al., 2013): a setting whose gradients explode
(deep ReLU, large init, high learning rate) trained without clipping, with
clipping by value, by norm per tensor and by global norm. Along each run the
cosine between the raw gradient and its clipped version: value clipping
turns the gradient, global-norm clipping only shortens it (cosine 1), and
per-tensor norm clipping keeps each tensor's direction (per-tensor cosine 1)
but not the whole one.

Runs (``runs/`` of the workdir, each resumed after a kill and skipped once
complete): ``probe`` (part 1); ``train-<activation>-<arch>``, the arms of
part 2 that share a network (their inits differ) times the seeds, trained as
one vmapped program; ``clip-<rule>``, each rule's seeds as one grid. Seeds
differ in initialization (init key ``seed``, dropout key ``seed + 10000``);
the data and their order are drawn by ``data.seed`` and shared by every run.
A replica's non-finite steps are its own (the step count minus the
optimizer's count of updates).

The probe and the cosines use training mode (BatchNorm on batch statistics),
which is the gradient the training step sees. Outputs: ``results.md``,
``results.json``, ``probe_grad_norms.png``, ``probe_act_var.png``,
``depth_sweep.png``, ``training_curves.png``, ``trained_grad_norms.png``,
``clipping.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from configs.vanishing_gradients import ACTIVATIONS, ARCHS, CLIP_ARMS, INITS, OPTIMIZERS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.analysis import propagation
from research.train import state as state_lib
from research.train import trainer as trainer_lib


# --- arms --------------------------------------------------------------------


class Arm(NamedTuple):
  activation: str
  init: str
  arch: str = 'plain'

  @property
  def label(self) -> str:
    base = f'{self.activation}/{self.init}'
    return base if self.arch == 'plain' else f'{base}/{self.arch}'


def _known_inits() -> list[str]:
  return list(INITS) + [n for n in models.initializer_names() if n not in ('auto', 'zeros')]


def parse_arms(text: str, field: str) -> list[Arm]:
  """``'sigmoid/*,relu/he/bn'`` -> arms, wildcards expanded, in order, unique.

  Raises:
    ValueError: naming ``field``, for an unknown activation, init or arch, or
      a malformed or empty list.
  """
  allowed = ('activation/init[/arch] with activation in ' + ', '.join(ACTIVATIONS)
             + ' or *, init in ' + ', '.join(_known_inits()) + ' or *, arch in '
             + ', '.join(ARCHS))
  names = common.split_names(text)
  common.require(bool(names), field, text, allowed)
  arms = []
  for name in names:
    parts = name.split('/')
    common.require(len(parts) in (2, 3), field, name, allowed)
    act, init, arch = parts[0], parts[1], parts[2] if len(parts) == 3 else 'plain'
    acts = ACTIVATIONS if act == '*' else (act,)
    inits = tuple(INITS) if init == '*' else (init,)
    common.require(all(a in models.activation_names() for a in acts), field, name, allowed)
    common.require(all(i in _known_inits() for i in inits), field, name, allowed)
    common.require(arch in ARCHS, field, name, allowed)
    for a in acts:
      for i in inits:
        arm = Arm(a, i, arch)
        if arm not in arms:
          arms.append(arm)
  return arms


def model_config(config, arm: Arm, depth: int, init_scale=None):
  """The MLP config of ``arm`` at ``depth``; ``init_scale`` overrides the arm's."""
  m = config.model.copy_and_resolve_references()
  init, scale = INITS.get(arm.init, (arm.init, None))
  m.depth = depth
  m.activation = arm.activation
  m.init = init
  m.init_scale = scale if init_scale is None else init_scale
  m.update(ARCHS[arm.arch])
  return m


def shape_config(config, arm: Arm, depth: int):
  """The same network with a fixed init: one compiled step for all inits."""
  m = model_config(config, arm, depth)
  m.init, m.init_scale = 'auto', None
  return m


# --- checks ------------------------------------------------------------------


def validate(config) -> None:
  probe_arms = parse_arms(config.probe.arms, 'probe.arms')
  sweep_arms = parse_arms(config.probe.sweep_arms, 'probe.sweep_arms')
  train_arms = parse_arms(config.train_arms, 'train_arms')
  clip_arm = parse_arms(config.clip.arm, 'clip.arm')
  common.require(len(clip_arm) == 1, 'clip.arm', config.clip.arm, 'exactly one arm')
  common.require(config.model.width >= 1, 'model.width', config.model.width, '>= 1')
  common.require(config.probe.depth >= 1, 'probe.depth', config.probe.depth, '>= 1')
  common.require(all(d >= 1 for d in config.probe.depth_sweep), 'probe.depth_sweep',
                 config.probe.depth_sweep, 'depths >= 1')
  common.require(config.probe.batch_size >= 1, 'probe.batch_size', config.probe.batch_size,
                 '>= 1')
  if config.data.num_train is not None:
    common.require(config.probe.batch_size <= config.data.num_train, 'probe.batch_size',
                   config.probe.batch_size, f'at most data.num_train={config.data.num_train}')
  common.require(config.train_depth >= 1, 'train_depth', config.train_depth, '>= 1')
  common.require(config.num_seeds >= 1, 'num_seeds', config.num_seeds, '>= 1')
  common.require(config.num_steps >= 1, 'num_steps', config.num_steps, '>= 1')
  common.require(config.log_every >= 1, 'log_every', config.log_every, '>= 1')
  common.require(0 <= config.train.eval_every <= config.num_steps, 'train.eval_every',
                 config.train.eval_every, f'in [0, num_steps={config.num_steps}]')
  o = config.optimizer
  common.require(o.name in OPTIMIZERS, 'optimizer.name', o.name, 'one of ' + ', '.join(OPTIMIZERS))
  common.require(o.learning_rate > 0, 'optimizer.learning_rate', o.learning_rate, '> 0')
  common.require(0 <= o.momentum < 1, 'optimizer.momentum', o.momentum, '[0, 1)')
  k = config.clip
  common.require_choices('clip.arms', common.split_names(k.arms), CLIP_ARMS)
  common.require(bool(common.split_names(k.arms)), 'clip.arms', k.arms,
                 'a comma-separated subset of ' + ', '.join(CLIP_ARMS))
  for field in ('learning_rate', 'value', 'norm'):
    common.require(k[field] > 0, f'clip.{field}', k[field], '> 0')
  common.require(k.init_scale is None or k.init_scale > 0, 'clip.init_scale', k.init_scale,
                 '> 0 or None (the arm\'s own)')
  common.require(k.depth >= 1, 'clip.depth', k.depth, '>= 1')
  common.require(k.num_steps >= 1, 'clip.num_steps', k.num_steps, '>= 1')
  common.require(1 <= k.num_points <= k.num_steps, 'clip.num_points', k.num_points,
                 f'in [1, clip.num_steps={k.num_steps}]')
  common.require(k.num_seeds >= 1, 'clip.num_seeds', k.num_seeds, '>= 1')
  trainer_lib.validate_config(config.train)
  for arm in probe_arms + sweep_arms + train_arms:
    models.build_model(model_config(config, arm, config.probe.depth))
  models.build_model(model_config(config, clip_arm[0], k.depth, k.init_scale))


# --- part 1: the probe at initialization ---------------------------------------


def _probe_dict(p: dict) -> dict:
  return {k: np.asarray(p[k]).tolist() for k in
          ('act_mean', 'act_var', 'saturated', 'dead', 'grad_norm')} | dict(
              loss=float(p['loss']))


def probe_at_init(config, arm: Arm, depth: int, x, y) -> dict:
  p = propagation.probe_config(model_config(config, arm, depth), x, y,
                               jax.random.key(config.seed), train=True)
  return _probe_dict(p)


def grad_ratio(probe: dict) -> float:
  """log10 of ||dL/dW_1|| / ||dL/dW_D||: < 0 when the gradient vanishes
  towards the input, > 0 when it explodes."""
  g = np.asarray(probe['grad_norm'], np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    return float(np.log10(g[0] / g[-1]))


def diagnosis(probe: dict) -> str:
  """A word for what the probe shows, in this order: ``overflow`` (a
  non-finite activation or gradient), ``underflow`` (the first layer's
  gradient is exactly 0 in float32), ``signal dies`` (last hidden layer's
  output variance below 1e-6, so the gradients are tiny everywhere),
  ``vanishing`` / ``exploding`` (the first layer's gradient 10 times smaller
  / larger than the last's), else ``level``."""
  g = np.asarray(probe['grad_norm'], np.float64)
  v = np.asarray(probe['act_var'], np.float64)
  if not (np.all(np.isfinite(g)) and np.all(np.isfinite(v))):
    return 'overflow'
  if g[0] == 0:
    return 'underflow'
  if v[-1] < 1e-6:
    return 'signal dies'
  r = grad_ratio(probe)
  return 'vanishing' if r < -1 else 'exploding' if r > 1 else 'level'


def ratio_text(r: float) -> str:
  if np.isfinite(r):
    return f'{r:+.2f}'
  return {True: 'overflow', False: 'underflow'}[bool(r > 0)] if np.isinf(r) else 'undefined'


def run_probes(config, x, y) -> dict:
  """``at_depth`` (label -> probe at ``probe.depth``) and ``sweep`` (label ->
  depth as a string -> log10 ratio); an (arm, depth) probed once."""
  probed = {}

  def probe(arm, depth):
    if (arm, depth) not in probed:
      logging.info('vanishing_gradients: probe %s at depth %d', arm.label, depth)
      probed[(arm, depth)] = probe_at_init(config, arm, depth, x, y)
    return probed[(arm, depth)]

  at_depth = {arm.label: probe(arm, config.probe.depth)
              for arm in parse_arms(config.probe.arms, 'probe.arms')}
  sweep = {arm.label: {str(d): grad_ratio(probe(arm, d)) for d in config.probe.depth_sweep}
           for arm in parse_arms(config.probe.sweep_arms, 'probe.sweep_arms')}
  return dict(at_depth=at_depth, sweep=sweep)


# --- the data ------------------------------------------------------------------


class Data(NamedTuple):
  """The data set, its train/test arrays and the probe batch."""
  ds: object
  eval_sets: dict
  probe_batch: tuple


def load_data(config) -> Data:
  ds = data_lib.get_dataset(config.data)
  x, y = ds.arrays('train')
  xt, yt = ds.arrays('test')
  n = min(config.probe.batch_size, len(y))
  return Data(ds, dict(train=dict(x=x, y=y), test=dict(x=xt, y=yt)), (x[:n], y[:n]))


# --- part 2: training ----------------------------------------------------------


def optimizer(o) -> optim.GradientTransformation:
  """``config.optimizer`` by name; its numbers live in the optimizer state."""
  if o.name == 'momentum':
    return optim.make('sgd', o.learning_rate, momentum=o.momentum)
  return optim.make(o.name, o.learning_rate)


@dataclasses.dataclass(frozen=True)
class Grid:
  """One training run: ``replicas`` (arm, seed) trained as one vmapped
  program. The arms share the network (their inits differ)."""
  name: str
  replicas: tuple


def train_grids(config) -> list[Grid]:
  """One grid per network (activation, arch): its arms x the seeds."""
  seeds = [config.seed + i for i in range(config.num_seeds)]
  groups = {}
  for arm in parse_arms(config.train_arms, 'train_arms'):
    groups.setdefault((arm.activation, arm.arch), []).append(arm)
  return [Grid(f'train-{act}-{arch}', tuple((arm, s) for arm in arms for s in seeds))
          for (act, arch), arms in groups.items()]


def run_config(name: str, config) -> dict:
  """The run's ``config.json`` content, as JSON gives it back (lists, not
  tuples), so that the Trainer's resume check compares like with like."""
  return json.loads(json.dumps(dict(run=name, study=config.to_dict()), default=str))


def init_replicas(config, model, tx, replicas, depth: int, init_scale=None):
  """``(initial variables of each replica, the stacked TrainState)``: replica
  (arm, seed) starts from the arm's init drawn with key ``seed`` and drops
  out with key ``seed + 10000``; every replica applies ``model``."""
  inits = [models.init_model(model_config(config, arm, depth, init_scale),
                             jax.random.key(seed), input_shape=tuple(config.model.input_shape))[1]
           for arm, seed in replicas]
  states = [state_lib.TrainState.create(apply_fn=model.apply, variables=v, tx=tx,
                                        rng=jax.random.key(seed + 10_000))
            for (_, seed), v in zip(replicas, inits)]
  return inits, jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def skipped_steps(state) -> np.ndarray:
  """Per replica, the steps skipped as non-finite: the step counter minus the
  optimizer's count of updates (a skipped step leaves the optimizer state as
  it was). The Trainer's own count is of steps where any replica was."""
  inject = [n for n in jax.tree.leaves(state.opt_state, is_leaf=_is_inject_state)
            if _is_inject_state(n)]
  return np.asarray(state.step) - np.asarray(inject[0].count)


def _is_inject_state(node) -> bool:
  return hasattr(node, 'hyperparams') and hasattr(node, 'count')


def _replica(tree, i: int):
  return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def _pick(value, i: int) -> float:
  return float(np.asarray(value, np.float64)[i])


def _layer_norm(row: dict, path: str):
  """``row['layer_grad_norms'][path]``; a resumed run's rows, read back from
  metrics.jsonl, hold it nested (``['hidden_0']['kernel']``)."""
  node = row['layer_grad_norms']
  if path in node:
    return node[path]
  for part in path.split('/'):
    node = node[part]
  return node


def _variables(params, batch_stats) -> dict:
  return dict(params=params, batch_stats=batch_stats) if batch_stats else dict(params=params)


def fit_grid(config, name: str, state, data: Data, folder: str, num_steps: int,
             eval_sets=None, snapshot_steps=()):
  trainer = trainer_lib.Trainer(config.train, folder, run_config=run_config(name, config))
  fit = trainer.fit(state, data.ds.train, eval_sets, num_steps=num_steps,
                    log_every=min(config.log_every, num_steps), snapshot_steps=snapshot_steps,
                    name=f'{name} ({len(np.asarray(state.step))} replicas)')
  return trainer, fit


def train_grid(config, grid: Grid, data: Data, folder: str) -> dict:
  """Trains ``grid`` in ``folder`` (resuming there); per replica, what the
  summary needs, keyed by arm label."""
  depth = config.train_depth
  arm0 = grid.replicas[0][0]
  model = models.build_model(shape_config(config, arm0, depth))
  inits, state = init_replicas(config, model, optimizer(config.optimizer), grid.replicas,
                               depth)
  _, fit = fit_grid(config, grid.name, state, data, folder, config.num_steps,
                    eval_sets=data.eval_sets)
  x, y = data.probe_batch
  skipped = skipped_steps(fit.state)
  steps = [e['step'] for e in fit.evals]
  logged = [h for h in fit.history if 'layer_grad_norms' in h]  # rows of logged steps
  out = {}
  for i, (arm, _) in enumerate(grid.replicas):
    trained = _variables(_replica(fit.state.params, i), _replica(fit.state.batch_stats, i))
    before = propagation.propagation_probe(model, inits[i], x, y, train=True)
    after = propagation.propagation_probe(model, trained, x, y, train=True)
    final = fit.evals[-1]
    out.setdefault(arm.label, []).append(dict(
        train_loss=_pick(final['train']['loss'], i),
        train_error=1 - _pick(final['train']['accuracy'], i),
        test_loss=_pick(final['test']['loss'], i),
        test_error=1 - _pick(final['test']['accuracy'], i),
        nonfinite_steps=int(skipped[i]),
        # A grid's time is shared equally among its replicas.
        seconds=(fit.wall_time - fit.compile_time) / len(grid.replicas),
        curves=dict(
            train_loss=dict(step=steps, value=[_pick(e['train']['loss'], i)
                                               for e in fit.evals]),
            test_error=dict(step=steps, value=[1 - _pick(e['test']['accuracy'], i)
                                               for e in fit.evals]),
            first_layer_grad=dict(
                step=[h['step'] for h in logged],
                value=[_pick(_layer_norm(h, 'hidden_0/kernel'), i) for h in logged])),
        probe_init=_probe_dict(before), probe_trained=_probe_dict(after)))
  return out


# --- part 3: clipping ------------------------------------------------------------


def clip_transform(name: str, k):
  return {
      'value': lambda: optim.clip(k.value),
      'norm': lambda: optim.clip_by_norm(k.norm),
      'global_norm': lambda: optim.clip_by_global_norm(k.norm),
  }[name]()


def clip_tx(name: str, k) -> optim.GradientTransformation:
  sgd = optim.make('sgd', k.learning_rate)
  return sgd if name == 'none' else optim.chain(clip_transform(name, k), sgd)


def clip_points(k) -> list[int]:
  return sorted({max(1, round(k.num_steps * (i + 1) / k.num_points)) for i in range(k.num_points)})


def _cosine(a, b) -> jax.Array:
  dot = sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  na = jnp.sqrt(sum(jnp.vdot(u, u) for u in jax.tree.leaves(a)))
  nb = jnp.sqrt(sum(jnp.vdot(v, v) for v in jax.tree.leaves(b)))
  return dot / (na * nb)


def make_clip_stats(model, k, x, y) -> Callable:
  """``params -> {clip name: (global cosine, mean per-tensor cosine, norm ratio,
  fraction of entries changed)}`` on the batch ``(x, y)``."""
  names = [n for n in CLIP_ARMS if n != 'none']
  transforms = {n: clip_transform(n, k) for n in names}

  @jax.jit
  def stats(variables):
    def loss(p):
      logits, _ = model.apply({**variables, 'params': p}, x, train=True,
                              mutable=['batch_stats'])
      return propagation.cross_entropy_loss(logits, y)
    g = jax.grad(loss)(variables['params'])
    out = {}
    for n, t in transforms.items():
      c, _ = t.update(g, t.init(g))
      # Tensors with a zero gradient (dead units) have no direction: left out.
      per_tensor = [jnp.where(jnp.vdot(u, u) > 0, _cosine(u, v), jnp.nan)
                    for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(c))]
      changed = sum(jnp.sum(u != v) for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(c)))
      size = sum(u.size for u in jax.tree.leaves(g))
      out[n] = jnp.stack([_cosine(g, c), jnp.nanmean(jnp.stack(per_tensor)),
                          optim.global_norm(c) / optim.global_norm(g), changed / size])
    out['grad_norm'] = optim.global_norm(g)
    return out

  return lambda variables: {n: np.asarray(v).tolist() for n, v in
                            jax.device_get(stats(variables)).items()}




def clip_grid(config, name: str, model, data: Data, stats: Callable, folder: str) -> dict:
  """The clipping rule ``name`` over the clip seeds, one grid, in ``folder``."""
  k = config.clip
  arm = parse_arms(k.arm, 'clip.arm')[0]
  replicas = tuple((arm, config.seed + i) for i in range(k.num_seeds))
  inits, state = init_replicas(config, model, clip_tx(name, k), replicas, k.depth,
                               init_scale=k.init_scale)
  trainer, fit = fit_grid(config, f'clip-{name}', state, data, folder, k.num_steps,
                          snapshot_steps=clip_points(k))
  train = trainer.evaluate(fit.state, data.eval_sets['train'])
  test = trainer.evaluate(fit.state, data.eval_sets['test'])
  skipped = skipped_steps(fit.state)
  history = fit.history
  logged = [h for h in history if 'grad_norm' in h]  # rows of logged steps
  out = []
  for i in range(len(replicas)):
    along = [dict(step=0, **stats(inits[i]))]
    for step, snap in fit.snapshots:
      along.append(dict(step=step, **stats(_variables(_replica(snap['params'], i),
                                                      _replica(snap['batch_stats'], i)))))
    out.append(dict(
        loss=dict(step=[h['step'] for h in history],
                  value=[_pick(h['loss'], i) for h in history]),
        grad_norm=dict(step=[h['step'] for h in logged],
                       value=[_pick(h['grad_norm'], i) for h in logged]),
        along=along, nonfinite_steps=int(skipped[i]),
        train_loss=_pick(train['loss'], i), test_error=1 - _pick(test['accuracy'], i)))
  return dict(seeds=out)


# --- summaries -------------------------------------------------------------------


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  with np.errstate(invalid='ignore'):  # inf - inf in the std of diverged runs
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _ratios_text(values) -> str:
  """Mean ± std of per-seed log10 ratios, or the words for the non-finite ones."""
  v = np.asarray(values, np.float64)
  if np.all(np.isfinite(v)):
    return _pm(_mean_std(v), 1, 2)
  return ', '.join(ratio_text(x) for x in v)


def _pm(ms, scale=1.0, digits=3) -> str:
  return f'{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}'


def summarize_training(per_arm: dict) -> dict:
  out = {}
  for label, runs in per_arm.items():
    out[label] = dict(
        train_loss=_mean_std([r['train_loss'] for r in runs]),
        train_error=_mean_std([r['train_error'] for r in runs]),
        test_error=_mean_std([r['test_error'] for r in runs]),
        ratio_init=[grad_ratio(r['probe_init']) for r in runs],
        ratio_trained=[grad_ratio(r['probe_trained']) for r in runs],
        nonfinite_steps=int(sum(r['nonfinite_steps'] for r in runs)),
        seconds=_mean_std([r['seconds'] for r in runs]))
  return out


def summarize_clipping(runs: dict) -> dict:
  out = {}
  for name, seeds in runs.items():
    row = dict(train_loss=_mean_std([r['train_loss'] for r in seeds]),
               test_error=_mean_std([r['test_error'] for r in seeds]),
               nonfinite_steps=int(sum(r['nonfinite_steps'] for r in seeds)),
               grad_norm_init=_mean_std([r['along'][0]['grad_norm'] for r in seeds]))
    for clip in CLIP_ARMS[1:]:
      vals = np.array([[p[clip] for p in r['along']] for r in seeds])  # seeds, points, 4
      finite = np.all(np.isfinite(vals[..., [0, 2, 3]]), axis=-1)
      ok = vals[finite]  # points whose gradient overflowed have no cosine
      stat = (lambda f, i: float(f(ok[:, i]))) if len(ok) else (lambda f, i: float('nan'))
      row[clip] = dict(cos_min=stat(np.min, 0), cos_mean=stat(np.mean, 0),
                       per_tensor_cos_min=stat(np.nanmin, 1), norm_ratio_mean=stat(np.mean, 2),
                       changed_mean=stat(np.mean, 3), points=int(finite.size),
                       finite_points=int(finite.sum()))
    out[name] = row
  return out


def verdict(config, probes, training, clipping) -> list[str]:
  lines = []
  d = config.probe.depth
  kinds = {}
  for label, p in probes.items():
    kinds.setdefault(diagnosis(p), []).append(label)
  words = {
      'underflow': 'the first layer\'s gradient underflows to exactly 0 in float32',
      'overflow': 'activations or gradients overflow to inf',
      'signal dies': 'the forward signal dies (output variance of the last hidden layer '
                     '< 1e-6), so every gradient is tiny',
      'vanishing': 'the first layer\'s gradient is over 10 times smaller than the last\'s',
      'exploding': 'the first layer\'s gradient is over 10 times larger than the last\'s',
      'level': 'first and last gradients within a factor 10',
  }
  for kind in ('underflow', 'vanishing', 'signal dies', 'overflow', 'exploding', 'level'):
    if kind in kinds:
      lines.append(f'- At init, depth {d}, {words[kind]}: '
                   + ', '.join(f'`{l}`' for l in kinds[kind]) + '.')
  if training:
    best = min(training, key=lambda l: training[l]['test_error'][0])
    b = training[best]['test_error']
    for label, s in training.items():
      if label == best:
        continue
      gap = s['test_error'][0] - b[0]
      spread = float(np.hypot(s['test_error'][1], b[1]))
      if config.num_seeds < 2:
        lines.append(f'- Trained `{label}`: test error {gap * 100:+.1f} points from the best '
                     f'(`{best}`); one seed, no claim.')
      elif gap > spread:
        lines.append(f'- Trained `{label}`: test error higher than `{best}` by '
                     f'{gap * 100:.1f} points, beyond the seed spread ({spread * 100:.1f}).')
      else:
        lines.append(f'- Trained `{label}`: within the seed spread of `{best}` '
                     f'({gap * 100:+.1f} vs {spread * 100:.1f} points): no claim.')
  for name, s in clipping.items():
    if name == 'none':
      continue
    lines.append(f'- Clipping by {name}: cosine(raw, clipped) min {s[name]["cos_min"]:.4f}, '
                 f'per-tensor min {s[name]["per_tensor_cos_min"]:.4f}, '
                 f'{s[name]["changed_mean"] * 100:.1f}% of entries changed on average; '
                 f'final training loss {_pm(s["train_loss"])}.')
  if 'none' in clipping:
    lines.append(f'- Without clipping: {clipping["none"]["nonfinite_steps"]} non-finite '
                 f'steps skipped over {config.clip.num_seeds} seed(s); final training loss '
                 f'{_pm(clipping["none"]["train_loss"])}.')
  return lines


# --- figures and tables -------------------------------------------------------------


def _panels(n):
  rows, cols = common.grid_shape(n, 3)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  return fig, axes.ravel()


def _per_layer_figure(workdir, probes, key, ylabel, filename, title):
  by_act = {}
  for label in probes:
    by_act.setdefault(label.split('/')[0], []).append(label)
  fig, axes = _panels(len(by_act))
  for ax, (act, labels) in zip(axes, by_act.items()):
    for label in labels:
      v = np.asarray(probes[label][key], np.float64)
      style = '-' if label.count('/') == 1 else '--'
      ax.semilogy(np.arange(1, len(v) + 1), np.where(v > 0, v, np.nan), style, marker='.',
                  label=label.split('/', 1)[1])
    ax.set_title(act)
    ax.set_xlabel('hidden layer (1 = next to the input)')
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6)
  for ax in axes[len(by_act):]:
    ax.axis('off')
  fig.suptitle(title)
  fig.tight_layout()
  common.save_figure(fig, os.path.join(workdir, filename))


def _figures(workdir, config, probes, sweep, per_arm, clip_runs):
  d = config.probe.depth
  _per_layer_figure(workdir, probes, 'grad_norm', '||dL/dW|| (log)', 'probe_grad_norms.png',
                    f'Gradient norm per layer at init, depth {d} (dashed: bn / residual; '
                    'zeros, i.e. underflow, not drawn)')
  _per_layer_figure(workdir, probes, 'act_var', 'Var(activation) (log)', 'probe_act_var.png',
                    f'Activation variance per layer at init, depth {d}')

  fig, ax = plt.subplots(figsize=(6, 4))
  for label, by_depth in sweep.items():
    vals = np.asarray(list(by_depth.values()), np.float64)
    ax.plot(list(by_depth), np.where(np.isfinite(vals), vals, np.nan), marker='o',
            label=label)
  ax.axhline(0, color='k', linewidth=0.8)
  ax.set_xlabel('depth (hidden layers)')
  ax.set_ylabel('log10 ||dL/dW_1|| / ||dL/dW_D||')
  ax.set_title('First layer\'s gradient relative to the last, at init (underflow not drawn)')
  ax.legend(fontsize=7)
  common.save_figure(fig, os.path.join(workdir, 'depth_sweep.png'))

  if per_arm:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, runs in per_arm.items():
      for ax, key in zip(axes, ('train_loss', 'test_error', 'first_layer_grad')):
        steps = runs[0]['curves'][key]['step']
        vals = np.array([r['curves'][key]['value'] for r in runs], np.float64)
        line, = ax.plot(steps, vals.mean(0), label=label)
        if len(runs) > 1:
          ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.2, color=line.get_color())
    axes[0].set_ylabel('training loss (whole set)')
    axes[0].set_yscale('log')
    axes[1].set_ylabel('test error')
    axes[2].set_ylabel('||dL/dW_1|| (one batch)')
    axes[2].set_yscale('log')
    for ax in axes:
      ax.set_xlabel('step')
    axes[0].legend(fontsize=6)
    fig.suptitle(f'Training at depth {config.train_depth} ({config.optimizer.name}, '
                 f'lr {config.optimizer.learning_rate}); band: min-max over seeds')
    common.save_figure(fig, os.path.join(workdir, 'training_curves.png'))

    fig, axes = _panels(len(per_arm))
    for ax, (label, runs) in zip(axes, per_arm.items()):
      for key, name in (('probe_init', 'init'), ('probe_trained', 'trained')):
        v = np.asarray(runs[0][key]['grad_norm'], np.float64)
        ax.semilogy(np.arange(1, len(v) + 1), np.where(v > 0, v, np.nan), marker='.',
                    label=name)
      ax.set_title(label)
      ax.set_xlabel('hidden layer')
      ax.set_ylabel('||dL/dW|| (log)')
      ax.legend(fontsize=7)
    for ax in axes[len(per_arm):]:
      ax.axis('off')
    fig.suptitle('Gradient norm per layer at init and after training (first seed)')
    fig.tight_layout()
    common.save_figure(fig, os.path.join(workdir, 'trained_grad_norms.png'))

  if clip_runs:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, seeds in clip_runs.items():
      r = seeds[0]
      label = f'{name} ({r["nonfinite_steps"]} non-finite steps)'
      axes[0].semilogy(r['loss']['step'], r['loss']['value'], label=label)
      axes[1].semilogy(r['grad_norm']['step'], r['grad_norm']['value'], label=label)
      if name != 'none':
        axes[2].plot([p['step'] for p in r['along']], [p[name][0] for p in r['along']],
                     marker='o', label=f'{name} (global)')
        axes[2].plot([p['step'] for p in r['along']], [p[name][1] for p in r['along']],
                     linestyle=':', marker='x', label=f'{name} (per tensor)')
    axes[0].set_ylabel('training loss (batch)')
    axes[1].set_ylabel('raw gradient norm')
    axes[2].set_ylabel('cosine(raw, clipped)')
    for ax in axes:
      ax.set_xlabel('step')
      if ax.get_legend_handles_labels()[0]:  # no rule but `none`: no cosine
        ax.legend(fontsize=7)
    k = config.clip
    fig.suptitle(f'Clipping on `{k.arm}` (init scale {k.init_scale}), depth {k.depth}, '
                 f'SGD lr {k.learning_rate}; value {k.value}, norm {k.norm} (first seed)')
    common.save_figure(fig, os.path.join(workdir, 'clipping.png'))


def _fmt(x: float) -> str:
  return f'{x:.3g}' if np.isfinite(x) else str(x)


def _markdown(config, probes, sweep, training, clipping, lines) -> str:
  d = config.probe.depth
  probe_rows = []
  for label, p in probes.items():
    g, v = p['grad_norm'], p['act_var']
    probe_rows.append((label, _fmt(g[0]), _fmt(g[-1]), ratio_text(grad_ratio(p)), _fmt(v[0]),
                       _fmt(v[-1]), _fmt(p['saturated'][-1]), _fmt(p['dead'][-1]),
                       _fmt(p['loss']), diagnosis(p)))
  depths = list(config.probe.depth_sweep)
  sweep_rows = [(label, *[ratio_text(by[int(x)]) for x in depths]) for label, by in sweep.items()]
  out = [
      '# Vanishing and exploding gradients', '',
      f'Data `{config.data.name}`, MLP of width {config.model.width}. Probe batch '
      f'{config.probe.batch_size}, seed {config.seed}, training mode.', '',
      f'## At initialization, depth {d}', '',
      'Gradient norms of the first (1) and last (D) hidden kernels, their ratio as log10, '
      'the output variance of those layers, and at layer D the saturated fraction '
      '(sigmoid, tanh) and the dead-unit fraction.', '',
      common.markdown_table(['arm', '||g_1||', '||g_D||', 'log10 ratio', 'Var a_1', 'Var a_D',
                             'saturated D', 'dead D', 'loss', 'diagnosis'], probe_rows), '',
      '## log10 ||g_1|| / ||g_D|| against depth (at init)', '',
      common.markdown_table(['arm'] + [f'D = {x}' for x in depths], sweep_rows), '',
  ]
  if training:
    rows = [(label, _pm(s['train_loss']), _pm(s['train_error'], 100, 1),
             _pm(s['test_error'], 100, 1), _ratios_text(s['ratio_init']),
             _ratios_text(s['ratio_trained']), s['nonfinite_steps'])
            for label, s in training.items()]
    o = config.optimizer
    out += [f'## Training at depth {config.train_depth}', '',
            f'{o.name}, learning rate {o.learning_rate}, {config.num_steps} steps, batch '
            f'{config.data.batch_size}, {config.num_seeds} seed(s) (mean ± std). Errors in %.', '',
            common.markdown_table(['arm', 'train loss', 'train error', 'test error',
                                   'log10 ratio at init', 'log10 ratio trained',
                                   'non-finite steps'], rows), '']
  if clipping:
    k = config.clip
    rows = []
    for name, s in clipping.items():
      own = s[name] if name != 'none' else None
      rows.append((name, _pm(s['train_loss']), _pm(s['test_error'], 100, 1),
                   s['nonfinite_steps'],
                   f'{own["cos_min"]:.4f}' if own else '-',
                   f'{own["per_tensor_cos_min"]:.4f}' if own else '-',
                   f'{own["norm_ratio_mean"]:.3g}' if own else '-',
                   f'{own["changed_mean"] * 100:.1f}' if own else '-'))
    cos_rows = [(name, *[f'{s[c]["cos_min"]:.4f} / {s[c]["cos_mean"]:.4f}'
                         for c in CLIP_ARMS[1:]]) for name, s in clipping.items()]
    out += ['## Clipping where the gradients explode', '',
            f'`{k.arm}` with init scale {k.init_scale}, depth {k.depth}, SGD learning rate '
            f'{k.learning_rate}, {k.num_steps} steps, {k.num_seeds} seed(s); clip by value '
            f'{k.value}, by norm {k.norm} (per tensor: `norm`; all together: `global_norm`). '
            'Cosines between the raw gradient and its clipped version on one batch, at init '
            f'and at {k.num_points} points of each run; min over points and seeds (points '
            'where the raw gradient is not finite have no cosine and are left out; `nan`: '
            'none was finite). Thresholds are not tuned: the losses compare these '
            'thresholds, not the rules in general.', '',
            common.markdown_table(['run', 'train loss', 'test error (%)', 'non-finite steps',
                                   'cos min', 'per-tensor cos min', '|clipped|/|raw|',
                                   '% entries changed'], rows), '',
            'Every clipping rule applied to the gradients met along each run '
            '(cosine min / mean):', '',
            common.markdown_table(['run'] + list(CLIP_ARMS[1:]), cos_rows), '']
  out += ['## What the numbers say', '', *lines, '',
          'Figures: `probe_grad_norms.png`, `probe_act_var.png`, `depth_sweep.png`, '
          '`training_curves.png`, `trained_grad_norms.png`, `clipping.png`.', '']
  return '\n'.join(out)


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  data = load_data(config)
  probes = study.run('probe', lambda folder: run_probes(config, *data.probe_batch))
  at_depth = probes['at_depth']
  # JSON keys are strings: the depths back to ints.
  sweep = {label: {int(d): r for d, r in by.items()} for label, by in probes['sweep'].items()}

  by_label = {}
  for grid in train_grids(config):
    by_label.update(study.run(grid.name, lambda folder, grid=grid: train_grid(
        config, grid, data, folder)))
  per_arm = {arm.label: by_label[arm.label]
             for arm in parse_arms(config.train_arms, 'train_arms')}
  training = summarize_training(per_arm)

  k = config.clip
  clip_model = models.build_model(shape_config(config, parse_arms(k.arm, 'clip.arm')[0],
                                               k.depth))
  stats = make_clip_stats(clip_model, k, *data.probe_batch)
  clip_runs = {name: study.run(f'clip-{name}', lambda folder, name=name: clip_grid(
      config, name, clip_model, data, stats, folder))['seeds']
               for name in common.split_names(k.arms)}
  clipping = summarize_clipping(clip_runs)
  lines = verdict(config, at_depth, training, clipping)
  _figures(workdir, config, at_depth, sweep, per_arm, clip_runs)
  common.atomic_write(os.path.join(workdir, 'results.md'),
                      _markdown(config, at_depth, sweep, training, clipping, lines))
  results = dict(probe=at_depth, depth_sweep=sweep, training=training, per_arm=per_arm,
                 clipping=clipping, clip_runs=clip_runs, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
