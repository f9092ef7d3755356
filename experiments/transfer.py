"""Reusing pretrained lower layers on MNIST-1D: digits 0-4 -> digits 5-9.

A model (``config.model``) is pretrained on the source digits. On the target
digits, with ``target.examples_per_class`` training examples per class, four
arms train a new linear head from the same initialization, with the same
optimizer and the same batches:

  scratch   every layer randomly initialized and trained;
  finetune  the lower layers start from the pretrained ones; all train;
  frozen    the lower layers are the pretrained ones and stay fixed
            (``transfer.freeze_optimizer``: zero updates, bit-identical);
  cached    as frozen, but the lower layers' outputs (the head's input) are
            computed once per split (``transfer.compute_features``) and only
            the head runs during training.

``cached`` and ``frozen`` train the same head: the results record the
largest difference between their final heads, which is float rounding only.
``frozen`` still runs the lower layers forward and backward at every step
(only the update is zeroed), so it costs about as much as ``finetune``;
``cached`` skips both, which is where its speed comes from.

Wall clock per epoch: after the accuracy runs (which also compile every
step), each arm trains again ``timing.rounds`` times without evaluation, the
order of the arms rotated each round; the per-epoch time of each round is
the fit's wall time over the epochs, and the report gives medians and the
median of the per-round ratios frozen / cached. The one-off cost of caching
the features is reported separately.

The study is a set of runs, each in its own folder under ``runs/`` with
checkpoints, metrics.jsonl and TensorBoard, resumed after a kill and
skipped once complete: ``pretrain`` (every seed as one vmapped grid; the
seeds differ in initialisation, the source batch order is ``config.seed``'s;
the pretrained params are saved there), ``<arm>_seed<s>`` (one arm on one
seed's few-shot sample; its final params are saved there) and ``timing``.
Runs with the same model object and optimizer share their compiled steps
through JAX's jit cache: scratch and finetune share one program, and the
seeds and timing rounds compile nothing new.

Outputs: ``results.md``, ``results.json``, ``accuracy.png`` (test accuracy
per arm and over epochs), ``epoch_time.png`` (per-round times and medians,
titled with the speed-up of caching).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import linen as nn

from configs.transfer import ARMS, MODELS
from experiments import common
from research import data as data_lib
from research import models
from research import optim
from research.data import pipeline
from research.train import checkpoints as ckpt_lib
from research.train import state as state_lib
from research.train import steps as steps_lib
from research.train import trainer as trainer_lib
from research.train import transfer

HEAD = 'head'  # the name of the linear head in both MNIST-1D models
_DATA_SETS = ('mnist1d', 'mnist1d_shuffled')
LABELS = dict(scratch='from scratch', finetune='fine-tune everything',
              frozen='frozen lower layers', cached='frozen + cached features')


# --- config checks ---------------------------------------------------------------

def _classes(field: str, values) -> list[int]:
  values = list(values)
  common.require(len(values) >= 2, field, tuple(values), 'at least two digits')
  common.require(all(isinstance(v, int) and 0 <= v <= 9 for v in values), field,
                 tuple(values), 'digits in [0, 9]')
  common.require(len(set(values)) == len(values), field, tuple(values), 'no repeats')
  return values


def _train_labels(config) -> np.ndarray:
  return data_lib.load_mnist1d(shuffle_seq=config.data_name == 'mnist1d_shuffled')['y_train']


def _check_lower_layers(c) -> None:
  """The pattern must select some parameters of the model, and not the head."""
  mc = model_config(c, len(c.target_classes))
  x = jnp.zeros((1,) + tuple(mc.input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: models.build_model(mc).init(jax.random.key(0), x))['params']
  try:
    paths = transfer.matching_paths(shapes, c.lower_layers)
  except (TypeError, ValueError):
    common.fail('lower_layers', c.lower_layers, 'a regular expression')
  common.require(bool(paths), 'lower_layers', c.lower_layers,
                 'a regular expression matching some of the paths '
                 + ', '.join(transfer.matching_paths(shapes, '.*')))
  common.require(not any(p.startswith(HEAD + '/') for p in paths), 'lower_layers',
                 c.lower_layers, f'a pattern that leaves out the new head ({HEAD}/...)')


def validate(config) -> None:
  c = config
  arms = common.split_names(c.arms)
  common.require(bool(arms), 'arms', c.arms, 'a comma-separated subset of ' + ', '.join(ARMS))
  common.require_choices('arms', arms, ARMS)
  common.require(len(set(arms)) == len(arms), 'arms', c.arms, 'no repeats')
  common.require(c.model in MODELS, 'model', c.model, ', '.join(MODELS))
  common.require(c.data_name in _DATA_SETS, 'data_name', c.data_name, ', '.join(_DATA_SETS))
  source = _classes('source_classes', c.source_classes)
  target = _classes('target_classes', c.target_classes)
  common.require(not set(source) & set(target), 'target_classes', tuple(target),
                 f'digits not in source_classes={tuple(source)}')
  _check_lower_layers(c)
  common.require(c.seed >= 0, 'seed', c.seed, '>= 0')
  common.require(c.num_seeds >= 1, 'num_seeds', c.num_seeds, '>= 1')
  p, t = c.pretrain, c.target
  y = _train_labels(c)
  n_source = int(np.isin(y, source).sum())
  fewest = int(min((y == k).sum() for k in target))
  common.require(p.num_steps >= 1, 'pretrain.num_steps', p.num_steps, '>= 1')
  common.require(1 <= p.batch_size <= n_source, 'pretrain.batch_size', p.batch_size,
                 f'[1, {n_source}] (the source classes\' training examples)')
  common.require(p.learning_rate > 0, 'pretrain.learning_rate', p.learning_rate, '> 0')
  common.require(1 <= t.examples_per_class <= fewest, 'target.examples_per_class',
                 t.examples_per_class, f'[1, {fewest}] (the rarest target class has {fewest} '
                 'training examples)')
  n_target = t.examples_per_class * len(target)
  common.require(1 <= t.batch_size <= n_target, 'target.batch_size', t.batch_size,
                 f'[1, {n_target}] (examples_per_class x number of target classes)')
  common.require(t.epochs >= 1, 'target.epochs', t.epochs, '>= 1')
  common.require(t.learning_rate > 0, 'target.learning_rate', t.learning_rate, '> 0')
  common.require(t.eval_every_epochs >= 1, 'target.eval_every_epochs', t.eval_every_epochs,
                 '>= 1')
  common.require(c.timing.rounds >= 1, 'timing.rounds', c.timing.rounds, '>= 1')
  common.require(c.feature_batch_size >= 1, 'feature_batch_size', c.feature_batch_size, '>= 1')
  common.require(c.log_every >= 1, 'log_every', c.log_every, '>= 1')
  trainer_lib.validate_config(trainer_config(c, 0))


# --- data ----------------------------------------------------------------------------

def _relabel(x, y, classes):
  keep = np.isin(y, classes)
  lookup = np.full(10, -1, np.int32)
  lookup[list(classes)] = np.arange(len(classes))
  return x[keep], lookup[y[keep]]


def few_shot(x, y, per_class: int, seed: int):
  """``per_class`` examples of each label, drawn by ``seed``, in a shuffled order."""
  rng = np.random.default_rng((seed, 0x7A5))
  rows = np.concatenate([rng.choice(np.flatnonzero(y == k), per_class, replace=False)
                         for k in np.unique(y)])
  rows = np.sort(rows)
  return x[rows], y[rows]


def load_tasks(config) -> dict:
  d = data_lib.default_config()
  d.name = config.data_name
  d.batch_size, d.eval_batch_size = 1, 1  # only the arrays are used
  ds = data_lib.get_dataset(d)
  x, y = ds.arrays('train')
  xt, yt = ds.arrays('test')
  return dict(source=dict(train=_relabel(x, y, config.source_classes),
                          test=_relabel(xt, yt, config.source_classes)),
              target=dict(train=_relabel(x, y, config.target_classes),
                          test=_relabel(xt, yt, config.target_classes)))


# --- the model split: lower layers and head ------------------------------------------

class Head(nn.Module):
  """The top of the network alone: the model's linear head, named alike, so
  that its params are ``{'head': params['head']}`` of the whole model."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    del train, mc_dropout
    return nn.Dense(self.num_classes, name=HEAD)(x)


def head_input(model: nn.Module, variables: dict, x):
  """What the lower layers hand to the head: the model run with its head
  replaced by the identity (a method interceptor), in inference mode."""
  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == HEAD and context.method_name == '__call__':
      return args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    return model.apply(variables, x, train=False)


def model_config(config, num_classes: int):
  mc = models.default_config(config.model)
  mc.num_classes = num_classes
  return mc


# --- training ----------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0, 2))
def init_params(model: nn.Module, key, input_shape: tuple):
  return model.init(key, jnp.zeros((1,) + input_shape, jnp.float32), train=False)['params']


@functools.partial(jax.jit, static_argnums=(0, 3))
def features(model: nn.Module, params, x, batch_size: int):
  """The head's input for every example of ``x``, in batches (one program
  per model, batch size and shape: JAX's jit cache)."""
  return transfer.compute_features(
      lambda xb: head_input(model, {'params': params}, xb), x, batch_size)


class Parts(NamedTuple):
  """The models and optimizers of a study, built once: every run with the
  same model object and optimizer reuses the compiled steps."""
  source_model: nn.Module
  target_model: nn.Module
  head: nn.Module
  input_shape: tuple
  pretrain_tx: object
  tx: dict  # arm -> optimizer


def build_parts(config) -> Parts:
  c = config
  target_model = models.build_model(model_config(c, len(c.target_classes)))
  input_shape = tuple(models.default_config(c.model).input_shape)
  shapes = jax.eval_shape(lambda: init_params(target_model, jax.random.key(0), input_shape))
  adam = optim.make('adam', c.target.learning_rate)
  return Parts(
      source_model=models.build_model(model_config(c, len(c.source_classes))),
      target_model=target_model, head=Head(len(c.target_classes)), input_shape=input_shape,
      pretrain_tx=optim.make('adam', c.pretrain.learning_rate),
      tx=dict(scratch=adam, finetune=adam, cached=adam,
              frozen=transfer.freeze_optimizer(adam, shapes, c.lower_layers)))


def trainer_config(config, eval_every: int):
  """``config.train`` with the evaluation interval of a run (a study field)."""
  tc = config.train.copy_and_resolve_references()
  tc.eval_every = eval_every
  return tc


def run_config(config, name: str) -> dict:
  """What a run's config.json holds, as JSON reads it back (tuples as
  lists), so that the Trainer's check on resume compares like with like."""
  return json.loads(json.dumps(dict(run=name, study=config.to_dict()), default=str))


def _trainer(config, folder, name: str, eval_every: int = 0):
  return trainer_lib.Trainer(trainer_config(config, eval_every), folder,
                             run_config=run_config(config, name))


def seeds(config) -> list[int]:
  return [config.seed + i for i in range(config.num_seeds)]


def _at(value, i: int) -> float:
  """Replica ``i`` of an evaluated metric (a list for a grid)."""
  v = np.asarray(value)
  return float(v if v.ndim == 0 else v[i])


def pretrain(config, parts: Parts, tasks: dict, folder: str) -> dict:
  """Every seed pretrained on the source digits as one vmapped grid (the
  seed draws the initialisation; the batch order is ``config.seed``'s). The
  pretrained params are saved in ``folder/pretrained``."""
  p = config.pretrain
  x, y = tasks['source']['train']
  xt, yt = tasks['source']['test']
  runs = seeds(config)
  state = state_lib.create_replicas(
      apply_fn=parts.source_model.apply,
      init_fn=lambda k: {'params': init_params(parts.source_model, k, parts.input_shape)},
      tx=parts.pretrain_tx, keys=jnp.stack([jax.random.key(s) for s in runs]))
  loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), p.batch_size, seed=config.seed)
  fit = _trainer(config, folder, 'pretrain').fit(
      state, loader, eval_sets={'test': dict(x=xt, y=yt)}, num_steps=p.num_steps,
      log_every=min(config.log_every, p.num_steps), name=f'pretrain ({len(runs)} seeds)')
  ckpt_lib.save_params(os.path.join(folder, 'pretrained'), dict(params=fit.state.params))
  return dict(source_test_accuracy=[_at(fit.evals[-1]['test']['accuracy'], i)
                                    for i in range(len(runs))])


def load_pretrained(workdir: str, config, seed: int):
  """The params pretrained for ``seed`` (the replica of the pretrain grid)."""
  saved = ckpt_lib.load_params(os.path.join(workdir, 'runs', 'pretrain', 'pretrained'))
  i = seeds(config).index(seed)
  return jax.tree.map(lambda v: jnp.asarray(v[i]), saved['params'])


def load_final_params(workdir: str, arm: str, seed: int):
  """The params an arm ended with (saved by :func:`train_arm`)."""
  saved = ckpt_lib.load_params(os.path.join(workdir, 'runs', f'{arm}_seed{seed}',
                                            'final_params'))
  return saved['params']


def arm_state(config, parts: Parts, arm: str, pretrained, seed: int):
  """The initial TrainState of ``arm``: the head from the target model's
  initialization (the same for every arm), the lower layers random
  (scratch) or pretrained."""
  init = init_params(parts.target_model, jax.random.key(seed + 1), parts.input_shape)
  if arm == 'cached':
    params, apply_fn = {HEAD: init[HEAD]}, parts.head.apply
  else:
    params, apply_fn = init, parts.target_model.apply
    if arm != 'scratch':
      params = transfer.load_params_subset(pretrained, init, config.lower_layers)
  return state_lib.TrainState.create(apply_fn=apply_fn, variables={'params': params},
                                     tx=parts.tx[arm], rng=jax.random.key(seed + 2))


def _loader(config, x, y, seed: int):
  return pipeline.TrainLoader(pipeline.ArraySource(x, y), config.target.batch_size, seed=seed)


def _steps_per_epoch(config) -> int:
  return config.target.examples_per_class * len(config.target_classes) // \
      config.target.batch_size


def train_arm(config, parts: Parts, tasks: dict, pretrained, arm: str, seed: int,
              folder: str) -> dict:
  """One arm on the seed's few-shot sample; its final params are saved in
  ``folder/final_params``."""
  c, t = config, config.target
  x, y = few_shot(*tasks['target']['train'], t.examples_per_class, seed)
  xt, yt = tasks['target']['test']
  spe = _steps_per_epoch(c)
  state = arm_state(c, parts, arm, pretrained, seed)
  cache_seconds = None
  if arm == 'cached':
    t0 = time.perf_counter()
    x = jax.block_until_ready(features(parts.target_model, pretrained, jnp.asarray(x),
                                       c.feature_batch_size))
    cache_seconds = time.perf_counter() - t0
    x = np.asarray(x)
    xt = np.asarray(features(parts.target_model, pretrained, jnp.asarray(xt),
                             c.feature_batch_size))
  steps = t.epochs * spe
  fit = _trainer(c, folder, f'{arm}_seed{seed}', spe * t.eval_every_epochs).fit(
      state, _loader(c, x, y, seed), eval_sets={'test': dict(x=xt, y=yt)},
      num_steps=steps, log_every=min(c.log_every, steps), name=f'{arm} (seed {seed})')
  params = fit.state.params
  ckpt_lib.save_params(os.path.join(folder, 'final_params'), dict(params=params))
  out = dict(test_accuracy=fit.evals[-1]['test']['accuracy'],
             curve=dict(epochs=[e['step'] // spe for e in fit.evals],
                        accuracy=[e['test']['accuracy'] for e in fit.evals]),
             train_loss=float(fit.history[-1]['loss']),
             cache_seconds=cache_seconds)
  if arm != 'cached':
    out['lower_changed_from_pretrained'] = _lower_changed(c, pretrained, params)
  return out


def _max_abs_diff(a, b) -> float:
  return float(max(jnp.max(jnp.abs(jnp.asarray(u) - jnp.asarray(v)))
                   for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def _lower_changed(config, before, after) -> bool:
  names = transfer.matching_paths(before, config.lower_layers)
  flat_b = {steps_lib.path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(before)}
  flat_a = {steps_lib.path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(after)}
  return any(not np.array_equal(np.asarray(flat_b[n]), np.asarray(flat_a[n])) for n in names)


def time_arms(config, parts: Parts, tasks: dict, pretrained) -> dict:
  """Seconds per epoch of each arm, rounds alternating the order of the arms.

  The fits keep nothing (no workdir, no progress bar) and reuse the
  accuracy runs' compiled steps (the same models, optimizers, train config
  and evaluation interval); round 0 warms up and is not counted.
  """
  c, t = config, config.target
  arms = common.split_names(c.arms)
  x, y = few_shot(*tasks['target']['train'], t.examples_per_class, c.seed)
  feats = np.asarray(features(parts.target_model, pretrained, jnp.asarray(x),
                              c.feature_batch_size))
  spe = _steps_per_epoch(c)
  tc = trainer_config(c, spe * t.eval_every_epochs)
  tc.progress = False
  per_round = {arm: [] for arm in arms}
  cache = []
  for r in range(c.timing.rounds + 1):
    order = arms[r % len(arms):] + arms[:r % len(arms)]
    for arm in order:
      state = arm_state(c, parts, arm, pretrained, c.seed)
      if arm == 'cached':
        t0 = time.perf_counter()
        jax.block_until_ready(features(parts.target_model, pretrained, jnp.asarray(x),
                                       c.feature_batch_size))
        if r:
          cache.append(time.perf_counter() - t0)
      trainer = trainer_lib.Trainer(tc)
      loader = _loader(c, feats if arm == 'cached' else x, y, c.seed)
      t0 = time.perf_counter()
      trainer.fit(state, loader, num_steps=t.epochs * spe, log_every=t.epochs * spe)
      if r:
        per_round[arm].append((time.perf_counter() - t0) / t.epochs)
  out = dict(per_round=per_round,
             median={arm: float(np.median(v)) for arm, v in per_round.items()},
             cache_seconds_median=float(np.median(cache)) if cache else None)
  if 'frozen' in per_round and 'cached' in per_round:
    ratios = np.array(per_round['frozen']) / np.array(per_round['cached'])
    out['frozen_over_cached'] = dict(
        per_round=ratios.tolist(), median=float(np.median(ratios)),
        min=float(ratios.min()), max=float(ratios.max()),
        ratio_of_medians=out['median']['frozen'] / out['median']['cached'])
  return out


# --- summaries ---------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarize(per_seed: list) -> dict:
  arms = list(per_seed[0]['arms'])
  out = dict(source_test_accuracy=mean_std([s['source_test_accuracy'] for s in per_seed]),
             arms={})
  for arm in arms:
    rows = [s['arms'][arm] for s in per_seed]
    out['arms'][arm] = dict(test_accuracy=mean_std([r['test_accuracy'] for r in rows]),
                            train_loss=mean_std([r['train_loss'] for r in rows]))
    if arm != 'cached':
      out['arms'][arm]['lower_changed'] = [r['lower_changed_from_pretrained'] for r in rows]
  diffs = [s['cached_vs_frozen_head_max_abs_diff'] for s in per_seed
           if 'cached_vs_frozen_head_max_abs_diff' in s]
  if diffs:
    out['cached_vs_frozen_head_max_abs_diff'] = max(diffs)
  return out


def _pm(ms, scale=100.0, digits=1) -> str:
  return f'{ms[0] * scale:.{digits}f} ± {ms[1] * scale:.{digits}f}'


def verdict(config, summary: dict, timing: dict) -> list[str]:
  lines = []
  arms = summary['arms']
  n = config.num_seeds
  pairs = [(arm, 'scratch') for arm in ('finetune', 'frozen', 'cached')]
  pairs.append(('finetune', 'frozen'))
  for arm, base in pairs:
    if arm not in arms or base not in arms:
      continue
    claim, diff, spread = common.seed_claim(
        arms[arm]['test_accuracy'], arms[base]['test_accuracy'], n)
    if claim == 'one_seed':
      lines.append(f'- {LABELS[arm]}: {diff * 100:+.1f} points against {LABELS[base]} '
                   '(one seed: no spread, no claim).')
    elif claim == 'beyond':
      word = 'above' if diff > 0 else 'below'
      lines.append(f'- {LABELS[arm]}: {abs(diff) * 100:.1f} points {word} {LABELS[base]}, '
                   f'beyond the seed spread ({spread * 100:.1f}).')
    else:
      lines.append(f'- {LABELS[arm]}: {diff * 100:+.1f} points against {LABELS[base]}, '
                   f'within the seed spread ({spread * 100:.1f}): no claim.')
  if 'cached_vs_frozen_head_max_abs_diff' in summary:
    d = summary['cached_vs_frozen_head_max_abs_diff']
    lines.append('- The cached and frozen arms train the same head: their final head weights '
                 + ('are bit-identical.' if d == 0 else
                    f'differ by at most {d:.2g} (float rounding).'))
  r = timing.get('frozen_over_cached')
  if r:
    faster = r['min'] > 1
    lines.append(
        f'- Caching the features makes an epoch {r["median"]:.1f}x faster than the frozen arm '
        f'(median of {len(r["per_round"])} alternating rounds; range {r["min"]:.1f}x to '
        f'{r["max"]:.1f}x): ' + ('faster in every round.' if faster else
                                 'not faster in every round, so the speed-up is not '
                                 'established at this size.'))
    med, e = timing['median'], config.target.epochs
    if timing['cache_seconds_median'] is not None:
      whole = med['frozen'] * e / (med['cached'] * e + timing['cache_seconds_median'])
      lines.append(f'- With the one-off caching counted, the {e} epochs of training are '
                   f'{whole:.1f}x faster than with the frozen arm.')
  return lines


# --- figures and report --------------------------------------------------------------

def _figures(workdir, config, summary, per_seed, timing):
  arms = list(summary['arms'])
  fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(11, 4))
  ms = np.array([summary['arms'][a]['test_accuracy'] for a in arms]) * 100
  ax_bar.bar(range(len(arms)), ms[:, 0], yerr=ms[:, 1], capsize=4,
             color=[f'C{i}' for i in range(len(arms))])
  ax_bar.set_xticks(range(len(arms)), [LABELS[a] for a in arms], rotation=15, fontsize=8)
  ax_bar.set_ylabel('target test accuracy (%)')
  ax_bar.set_ylim(max(0.0, ms[:, 0].min() - 15), min(100.0, ms[:, 0].max() + 8))
  ax_bar.set_title(f'digits {tuple(config.target_classes)}, {config.target.examples_per_class} '
                   f'examples per class (mean ± std, {config.num_seeds} seed(s))', fontsize=9)
  for i, arm in enumerate(arms):
    curves = np.array([s['arms'][arm]['curve']['accuracy'] for s in per_seed]) * 100
    epochs = per_seed[0]['arms'][arm]['curve']['epochs']
    ax_curve.plot(epochs, curves.mean(0), color=f'C{i}', label=LABELS[arm],
                  ls='--' if arm == 'cached' else '-')
  ax_curve.set_xlabel('epoch')
  ax_curve.set_ylabel('target test accuracy (%)')
  ax_curve.legend(fontsize=7)
  common.save_figure(fig, os.path.join(workdir, 'accuracy.png'))

  fig, ax = plt.subplots(figsize=(6.5, 4))
  med = timing['median']
  ax.bar(range(len(arms)), [med[a] * 1e3 for a in arms], color=[f'C{i}' for i in range(len(arms))],
         alpha=0.5)
  for i, arm in enumerate(arms):
    v = np.array(timing['per_round'][arm]) * 1e3
    ax.plot(np.full(len(v), i), v, 'k.', ms=4)
    ax.annotate(f'{med[arm] * 1e3:.2f} ms', (i, med[arm] * 1e3), ha='center',
                va='bottom', fontsize=8, xytext=(0, 3), textcoords='offset points')
  ax.set_xticks(range(len(arms)), [LABELS[a] for a in arms], rotation=15, fontsize=8)
  ax.set_ylabel('wall clock per epoch (ms)')
  r = timing.get('frozen_over_cached')
  title = 'median over alternating rounds (dots: each round)'
  if r:
    title = (f'caching the features: {r["median"]:.1f}x faster per epoch than frozen\n'
             + title)
  ax.set_title(title, fontsize=9)
  common.save_figure(fig, os.path.join(workdir, 'epoch_time.png'))


def _markdown(config, summary, timing, lines) -> str:
  c, t = config, config.target
  arms = summary['arms']
  rows = []
  for arm, s in arms.items():
    changed = s.get('lower_changed')
    rows.append((
        LABELS[arm], _pm(s['test_accuracy']), f'{s["train_loss"][0]:.3g}',
        f'{timing["median"][arm] * 1e3:.2f}',
        f'{timing["median"][arm] / timing["median"]["frozen"]:.2f}' if 'frozen' in arms else '-',
        ('no (not in the model)' if changed is None else 'n/a (random init)'
         if arm == 'scratch' else 'yes' if all(changed) else 'no' if not any(changed)
         else 'mixed')))
  n_target = t.examples_per_class * len(c.target_classes)
  cache = timing['cache_seconds_median']
  return '\n'.join([
      '# Transfer: reusing pretrained lower layers on MNIST-1D', '',
      f'Model `{c.model}` pretrained on digits {tuple(c.source_classes)} '
      f'({c.pretrain.num_steps} steps of Adam, lr {c.pretrain.learning_rate:g}, batch '
      f'{c.pretrain.batch_size}; source test accuracy {_pm(summary["source_test_accuracy"])} %). '
      f'Target: digits {tuple(c.target_classes)} with {t.examples_per_class} training examples '
      f'per class ({n_target} in all), {t.epochs} epochs of Adam (lr {t.learning_rate:g}, batch '
      f'{t.batch_size}) for every arm, a new head from the same initialization; test on every '
      f'target-digit test example. {c.num_seeds} seed(s), mean ± std (the seed draws the '
      'pretraining initialization, the examples, the initialization and the batch order '
      'on the target; the seeds are pretrained as one vmapped grid and see the source '
      f'examples in the same order, that of seed {c.seed}).', '',
      common.markdown_table(
          ['arm', 'target test accuracy (%)', 'final train loss', 'ms per epoch (median)',
           'time / frozen', 'lower layers changed'], rows), '',
      f'Wall clock: {c.timing.rounds} rounds of {c.target.epochs} epochs per arm, the arms in '
      'rotating order, medians; compilation excluded. Caching the features of the '
      f'{n_target} training examples costs {cache * 1e3:.2f} ms once (median).'
      if cache is not None else
      f'Wall clock: {c.timing.rounds} rounds of {c.target.epochs} epochs per arm, the arms in '
      'rotating order, medians; compilation excluded.', '',
      '## What the numbers say', '', *lines, '',
      'Figures: `accuracy.png`, `epoch_time.png`.', ''])


def run(config, workdir):
  validate(config)
  study = common.Study(workdir, config)
  tasks = load_tasks(config)
  parts = build_parts(config)
  arms = common.split_names(config.arms)
  source = study.run('pretrain', lambda folder: pretrain(config, parts, tasks, folder))
  per_seed = []
  for i, seed in enumerate(seeds(config)):
    pretrained = load_pretrained(workdir, config, seed)
    out = dict(source_test_accuracy=source['source_test_accuracy'][i], arms={})
    for arm in arms:
      out['arms'][arm] = study.run(
          f'{arm}_seed{seed}', lambda folder, arm=arm: train_arm(
              config, parts, tasks, pretrained, arm, seed, folder))
    if 'cached' in arms and 'frozen' in arms:
      out['cached_vs_frozen_head_max_abs_diff'] = _max_abs_diff(
          load_final_params(workdir, 'cached', seed)[HEAD],
          load_final_params(workdir, 'frozen', seed)[HEAD])
    per_seed.append(out)
  pretrained = load_pretrained(workdir, config, config.seed)
  timing = study.run('timing', lambda folder: time_arms(config, parts, tasks, pretrained))
  summary = summarize(per_seed)
  lines = verdict(config, summary, timing)
  _figures(workdir, config, summary, per_seed, timing)
  common.atomic_write(os.path.join(workdir, 'results.md'),
                      _markdown(config, summary, timing, lines))
  results = dict(summary=summary, timing=timing, per_seed=per_seed, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  return results
