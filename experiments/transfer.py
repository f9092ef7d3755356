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

Outputs: ``results.md``, ``results.json``, ``accuracy.png`` (test accuracy
per arm and over epochs), ``epoch_time.png`` (per-round times and medians,
titled with the speed-up of caching).
"""

from __future__ import annotations

import os
import time

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
  trainer_lib.validate_config(c.train)


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

class Runner:
  """One Trainer and one optimizer object per arm: seeds and timing rounds
  reuse the compiled steps."""

  def __init__(self, config):
    c = self.config = config
    self.source_model = models.build_model(model_config(c, len(c.source_classes)))
    self.target_model = models.build_model(model_config(c, len(c.target_classes)))
    self.head = Head(len(c.target_classes))
    example = jnp.zeros((1,) + tuple(models.default_config(c.model).input_shape), jnp.float32)
    self.init_source = jax.jit(lambda k: {'params': self.source_model.init(
        k, example, train=False)['params']})
    self.init_target = jax.jit(lambda k: {'params': self.target_model.init(
        k, example, train=False)['params']})
    self.features = jax.jit(
        lambda params, xs: transfer.compute_features(
            lambda xb: head_input(self.target_model, {'params': params}, xb), xs,
            c.feature_batch_size))
    params = self.init_target(jax.random.key(0))['params']
    adam = optim.adam(c.target.learning_rate)
    self.tx = dict(scratch=adam, finetune=adam, cached=adam,
                   frozen=transfer.freeze_optimizer(adam, params, c.lower_layers))
    self.pretrain_tx = optim.adam(c.pretrain.learning_rate)
    self._trainers = {}

  def trainer(self, key: str, num_steps: int, batch_size: int, eval_every: int):
    if key not in self._trainers:
      tc = self.config.train.copy_and_resolve_references()
      tc.num_steps, tc.batch_size, tc.eval_every = num_steps, batch_size, eval_every
      tc.log_every = num_steps
      self._trainers[key] = trainer_lib.Trainer(tc)
    return self._trainers[key]

  def pretrain(self, tasks, seed: int):
    p = self.config.pretrain
    x, y = tasks['source']['train']
    xt, yt = tasks['source']['test']
    state = state_lib.TrainState.create(
        apply_fn=self.source_model.apply, variables=self.init_source(jax.random.key(seed)),
        tx=self.pretrain_tx, rng=jax.random.key(seed))
    trainer = self.trainer('pretrain', p.num_steps, p.batch_size, 0)
    result = trainer.fit(state, pipeline.TrainLoader(pipeline.ArraySource(x, y), p.batch_size,
                                                     seed=seed),
                         eval_sets={'test': dict(x=xt, y=yt)})
    return result.state.params, result.evals[-1]['test']['accuracy']

  def arm_state(self, arm: str, pretrained, seed: int):
    """The initial TrainState of ``arm``: the head from the target model's
    initialization (the same for every arm), the lower layers random
    (scratch) or pretrained."""
    init = self.init_target(jax.random.key(seed + 1))['params']
    if arm == 'cached':
      params, apply_fn = {HEAD: init[HEAD]}, self.head.apply
    else:
      params, apply_fn = init, self.target_model.apply
      if arm != 'scratch':
        params = transfer.load_params_subset(pretrained, init, self.config.lower_layers)
    return state_lib.TrainState.create(apply_fn=apply_fn, variables={'params': params},
                                       tx=self.tx[arm], rng=jax.random.key(seed + 2))

  def fit(self, arm: str, state, x, y, seed: int, eval_sets=None):
    t = self.config.target
    spe = len(y) // t.batch_size
    loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), t.batch_size, seed=seed)
    # scratch and finetune share the optimizer object and the model, hence a
    # Trainer (one compilation); the timing rounds reuse these Trainers
    # without evaluation sets, so they compile nothing either.
    key = 'full' if arm in ('scratch', 'finetune') else arm
    trainer = self.trainer(key, t.epochs * spe, t.batch_size, spe * t.eval_every_epochs)
    return trainer.fit(state, loader, eval_sets=eval_sets)


def _max_abs_diff(a, b) -> float:
  return float(max(jnp.max(jnp.abs(jnp.asarray(u) - jnp.asarray(v)))
                   for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def _lower_changed(config, before, after) -> bool:
  names = transfer.matching_paths(before, config.lower_layers)
  flat_b = {steps_lib.path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(before)}
  flat_a = {steps_lib.path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(after)}
  return any(not np.array_equal(np.asarray(flat_b[n]), np.asarray(flat_a[n])) for n in names)


def run_seed(config, runner: Runner, tasks: dict, seed: int) -> dict:
  c = config
  arms = common.split_names(c.arms)
  pretrained, source_acc = runner.pretrain(tasks, seed)
  x, y = few_shot(*tasks['target']['train'], c.target.examples_per_class, seed)
  xt, yt = tasks['target']['test']
  out = dict(source_test_accuracy=source_acc, arms={}, pretrained=pretrained)
  for arm in arms:
    state = runner.arm_state(arm, pretrained, seed)
    t0 = time.perf_counter()
    if arm == 'cached':
      feats = jax.block_until_ready(runner.features(pretrained, jnp.asarray(x)))
      cache_seconds = time.perf_counter() - t0
      train_x, test_x = np.asarray(feats), np.asarray(runner.features(pretrained,
                                                                      jnp.asarray(xt)))
    else:
      cache_seconds, train_x, test_x = None, x, xt
    result = runner.fit(arm, state, train_x, y, seed, eval_sets={'test': dict(x=test_x, y=yt)})
    out['arms'][arm] = dict(
        test_accuracy=result.evals[-1]['test']['accuracy'],
        curve=dict(epochs=[e['step'] // (len(y) // c.target.batch_size) for e in result.evals],
                   accuracy=[e['test']['accuracy'] for e in result.evals]),
        train_loss=float(result.history[-1]['loss']),
        cache_seconds=cache_seconds,
        params=result.state.params)
    if arm != 'cached':
      out['arms'][arm]['lower_changed_from_pretrained'] = _lower_changed(
          c, pretrained, result.state.params)
  if 'cached' in out['arms'] and 'frozen' in out['arms']:
    out['cached_vs_frozen_head_max_abs_diff'] = _max_abs_diff(
        out['arms']['cached']['params'][HEAD], out['arms']['frozen']['params'][HEAD])
  return out


def time_arms(config, runner: Runner, tasks: dict, pretrained) -> dict:
  """Seconds per epoch of each arm, rounds alternating the order of the arms."""
  c = config
  arms = common.split_names(c.arms)
  x, y = few_shot(*tasks['target']['train'], c.target.examples_per_class, c.seed)
  feats = np.asarray(runner.features(pretrained, jnp.asarray(x)))
  per_round = {arm: [] for arm in arms}
  cache = []
  for r in range(c.timing.rounds + 1):  # round 0 warms up: not counted
    order = arms[r % len(arms):] + arms[:r % len(arms)]
    for arm in order:
      state = runner.arm_state(arm, pretrained, c.seed)
      t0 = time.perf_counter()
      if arm == 'cached':
        f = jax.block_until_ready(runner.features(pretrained, jnp.asarray(x)))
        if r:
          cache.append(time.perf_counter() - t0)
        del f
      t0 = time.perf_counter()
      runner.fit(arm, state, feats if arm == 'cached' else x, y, c.seed)
      if r:
        per_round[arm].append((time.perf_counter() - t0) / c.target.epochs)
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
      'pretraining, the examples, the initialization and the batch order).', '',
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
  common.write_config(workdir, config)
  tasks = load_tasks(config)
  runner = Runner(config)
  per_seed = [run_seed(config, runner, tasks, config.seed + i) for i in range(config.num_seeds)]
  timing = time_arms(config, runner, tasks, per_seed[0]['pretrained'])
  summary = summarize(per_seed)
  lines = verdict(config, summary, timing)
  _figures(workdir, config, summary, per_seed, timing)
  common.atomic_write(os.path.join(workdir, 'results.md'),
                      _markdown(config, summary, timing, lines))
  saved = [dict({k: v for k, v in s.items() if k != 'pretrained'},
                arms={a: {k: v for k, v in r.items() if k != 'params'}
                      for a, r in s['arms'].items()}) for s in per_seed]
  results = dict(summary=summary, timing=timing, per_seed=saved, verdict=lines)
  common.write_json(os.path.join(workdir, 'results.json'), results)
  results['per_seed_full'] = per_seed  # params, for callers (tests); not written
  return results
