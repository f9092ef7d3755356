"""The Trainer: one loop for one CPU, many devices or many hosts.

    trainer = Trainer(config.train, workdir)
    result = trainer.fit(state, train_loader, eval_sets={'validation': loader})

``train_loader`` is a ``research.data.TrainLoader`` (global batches fixed by
``(seed, epoch, step)``, each host reading its slice); evaluation sets are
``research.data.EvalLoader``s or dicts of arrays ``{'x', 'y'}``.

What it does around the pure steps (research/train/steps.py):
- runs them with the chosen strategy (``parallel='none'|'sharded'|'pmap'``),
  ``steps_per_dispatch`` steps per call under ``lax.scan``;
- pulls metrics to the host only every ``log_every`` steps and writes them to
  ``metrics.jsonl``, TensorBoard and a progress bar;
- evaluates every ``eval_every`` steps and calls the hooks (early stopping,
  performance scheduling, ...) with the results;
- keeps every snapshot asked for (``snapshot_steps``);
- skips steps whose loss or gradients are not finite and stops, with a clear
  message, after ``max_nonfinite_in_row`` of them; the last good checkpoint
  stays;
- checkpoints every ``checkpoint_every`` steps and at the end (the last
  ``keep_checkpoints`` kept) and resumes from the latest one, so that an
  interrupted run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import ml_collections
import numpy as np

from research.data import pipeline
from research.train import checkpoints as ckpt_lib
from research.train import metric_writers
from research.train import parallel as parallel_lib
from research.train import steps as steps_lib


def default_config() -> ml_collections.ConfigDict:
  """Every Trainer field with its default; studies override what they need."""
  return ml_collections.ConfigDict(dict(
      parallel='none',          # 'none' | 'sharded' | 'pmap'
      num_steps=1000,
      batch_size=100,           # global batch, over all devices and hosts
      eval_batch_size=1000,
      seed=0,
      loss='cross_entropy',     # 'cross_entropy' | 'mse'
      l1=0.0,
      l2=0.0,
      steps_per_dispatch=1,     # k steps per call under lax.scan
      data_on_device=False,     # keep an in-memory training split on the device
      num_replicas=1,           # N seeds at once (vmap); see state.create_replicas
      log_every=100,
      log_grad_norms=False,     # per-layer gradient norms in the metrics
      eval_every=0,             # 0: evaluate only at the end
      checkpoint_every=0,       # 0: checkpoint only at the end
      keep_checkpoints=3,
      checkpoints=True,
      snapshot_steps=(),        # steps after which params are kept (1-based)
      max_nonfinite_in_row=10,
      nonfinite_check='grads',  # 'grads': loss and every gradient at every step;
                                # 'loss': loss every step, gradients at logged steps
      resume='auto',            # 'auto' | 'force' | 'never'
      progress=True,
      tensorboard=True,
  ))


def validate_config(c) -> None:
  """Raises ValueError naming the field; called before any work starts."""
  def need(ok, field, allowed):
    if not ok:
      raise ValueError(f'config.train.{field}={c[field]!r} is invalid; allowed: {allowed}.')
  need(c.parallel in parallel_lib.STRATEGIES, 'parallel', ', '.join(parallel_lib.STRATEGIES))
  need(c.num_steps >= 1, 'num_steps', '>= 1')
  need(c.batch_size >= 1, 'batch_size', '>= 1')
  need(c.eval_batch_size >= 1, 'eval_batch_size', '>= 1')
  need(c.loss in ('cross_entropy', 'mse'), 'loss', "'cross_entropy' or 'mse'")
  need(c.l1 >= 0, 'l1', '>= 0')
  need(c.l2 >= 0, 'l2', '>= 0')
  need(c.steps_per_dispatch >= 1, 'steps_per_dispatch', '>= 1')
  need(c.log_every >= 1, 'log_every', '>= 1')
  need(c.eval_every >= 0, 'eval_every', '>= 0')
  need(c.checkpoint_every >= 0, 'checkpoint_every', '>= 0')
  need(c.keep_checkpoints >= 1, 'keep_checkpoints', '>= 1')
  need(c.max_nonfinite_in_row >= 1, 'max_nonfinite_in_row', '>= 1')
  need(c.nonfinite_check in steps_lib.NONFINITE_CHECKS, 'nonfinite_check',
       ', '.join(repr(x) for x in steps_lib.NONFINITE_CHECKS))
  need(c.num_replicas >= 1, 'num_replicas', '>= 1')
  need(c.resume in ('auto', 'force', 'never'), 'resume', "'auto', 'force' or 'never'")
  need(all(1 <= s <= c.num_steps for s in c.snapshot_steps), 'snapshot_steps',
       f'steps in [1, num_steps={c.num_steps}]')
  parallel_lib.check_batch_size(c.parallel, c.batch_size)
  if c.parallel != 'none':
    parallel_lib.check_batch_size(c.parallel, c.eval_batch_size)


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a non-finite loss or gradient."""


@dataclasses.dataclass
class FitResult:
  state: Any                      # the final TrainState (host copy)
  history: list                   # logged train metrics, one dict per log step
  evals: list                     # one dict per evaluation: {'step', name: metrics}
  snapshots: list                 # [(step, {'params', 'batch_stats'})]
  stopped_early: bool = False
  nonfinite_steps: int = 0
  wall_time: float = 0.0
  compile_time: float = 0.0


# A hook is called after each evaluation with (trainer, state, evals) and may
# return a replacement state (e.g. a new learning rate) or None. Setting
# ``trainer.should_stop = True`` ends the run after this step.
Hook = Callable[['Trainer', Any, dict], Optional[Any]]


def _check_finite(arrays: dict, where: str) -> None:
  for k, v in arrays.items():
    v = np.asarray(v)
    if v.dtype.kind == 'f' and not np.all(np.isfinite(v)):
      raise ValueError(
          f'input data: field {k!r} of {where} holds '
          f'{int(np.sum(~np.isfinite(v)))} NaN or Inf values; clean the data '
          'set before training.')


def _check_finite_source(source) -> None:
  """In-memory sources are checked whole; others batch by batch (first one)."""
  arrays = {k: getattr(source, k) for k in ('x', 'y') if hasattr(source, k)}
  if arrays:
    _check_finite(arrays, 'the training data')


def _check_finite_state(state, step: int) -> None:
  """A checkpoint is never written from a state with non-finite params."""
  if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params)):
    raise NonFiniteError(
        f'the params are not finite at step {step}; no checkpoint was written '
        'and the last good one is kept. Use nonfinite_check=\'grads\' to skip '
        'such steps, lower the learning rate or add gradient clipping.')


def _config_for_comparison(config_json: dict) -> dict:
  cfg = dict(config_json.get('config', config_json))
  cfg.pop('resume', None)
  if isinstance(cfg.get('train'), dict):
    cfg['train'] = {k: v for k, v in cfg['train'].items() if k != 'resume'}
  return cfg


def check_resume(workdir: str, run_config: Optional[dict], resume: str) -> None:
  """Refuses to resume a run directory that holds a run of another config."""
  path = os.path.join(workdir, 'config.json')
  if run_config is None or not os.path.exists(path) or resume == 'force':
    return
  with open(path) as f:
    saved = json.load(f)
  if _config_for_comparison(saved) != _config_for_comparison(dict(config=run_config)):
    raise ValueError(
        f'{workdir} holds a run with a different config (see its config.json); '
        'use a new workdir, or --config.train.resume=force to resume it anyway.')


class Trainer:
  """Runs training for a TrainState under one parallel strategy."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: Optional[str] = None,
               hooks: Sequence[Hook] = (), run_config: Optional[dict] = None):
    validate_config(config)
    self.config = config
    self.workdir = workdir
    self.hooks = list(hooks)
    self.run_config = run_config
    self.should_stop = False
    if config.num_replicas > 1 and self.hooks:
      raise ValueError(
          f'config.train.num_replicas={config.num_replicas} cannot be combined with '
          'hooks (early stopping, performance scheduling): they decide for one run.')
    self.strategy = parallel_lib.make_strategy(
        config.parallel, config.loss, config.l1, config.l2, config.log_grad_norms,
        config.num_replicas, log_every=config.log_every, num_steps=config.num_steps,
        nonfinite_check=config.nonfinite_check)

  # --- evaluation ---------------------------------------------------------

  def evaluate(self, state, arrays) -> dict:
    """Loss and accuracy over every example of ``arrays`` exactly once."""
    loader = arrays
    if isinstance(arrays, dict):
      n = len(arrays['y'])
      loader = pipeline.EvalLoader(pipeline.ArraySource(arrays['x'], arrays['y']),
                                   min(self.config.eval_batch_size, n))
    totals = None
    for batch in loader:
      sums = self.strategy.host(self.strategy.evaluate(state, self.strategy.place_batch(batch)))
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return steps_lib.summarize_eval(totals)

  # --- the loop -------------------------------------------------------------

  def _batches(self, data: pipeline.TrainLoader, step: int) -> Iterator[dict]:
    # One batch per step, so the data position follows from the step alone.
    epoch, start = divmod(step, data.steps_per_epoch)
    while True:
      yield from data.epoch_batches(epoch, start)
      epoch, start = epoch + 1, 0

  def _index_batches(self, data: pipeline.TrainLoader, step: int) -> Iterator[np.ndarray]:
    epoch, start = divmod(step, data.steps_per_epoch)
    while True:
      order = data.epoch_indices(epoch)
      for s in range(start, data.steps_per_epoch):
        yield data.batch_indices(order, s)
      epoch, start = epoch + 1, 0

  def _device_data(self, data: pipeline.TrainLoader):
    if not (hasattr(data.source, 'x') and hasattr(data.source, 'y')):
      raise ValueError(
          'config.train.data_on_device=True needs an in-memory training split '
          f'(an ArraySource); got {type(data.source).__name__}.')
    if data.transform is not None:
      raise ValueError(
          'config.train.data_on_device=True cannot apply the host-side transform '
          '(augmentation) of the training loader; turn one of them off.')
    return self.strategy.place_data(dict(x=np.asarray(data.source.x),
                                         y=np.asarray(data.source.y)))

  def _next_event(self, step: int) -> int:
    c = self.config
    events = [c.num_steps]
    for every in (c.log_every, c.eval_every, c.checkpoint_every):
      if every:
        events.append((step // every + 1) * every)
    events += [s for s in c.snapshot_steps if s > step]
    return min(events)

  def host_state(self, state):
    """A NumPy copy of a (placed) state, e.g. for hooks and checkpoints."""
    return self.strategy.host(state)

  def fit(self, state, data: pipeline.TrainLoader, eval_sets: Optional[dict] = None,
          ) -> FitResult:
    c = self.config
    eval_sets = eval_sets or {}
    self.should_stop = False  # one Trainer (one compilation) serves many runs
    if data.batch_size != c.batch_size:
      raise ValueError(
          f'config.train.batch_size={c.batch_size} but the data yields global '
          f'batches of {data.batch_size}.')
    _check_finite_source(data.source)
    start_time = time.perf_counter()
    checkpoints = None
    meta = dict(nonfinite_steps=0, nonfinite_in_row=0, snapshot_steps=[])
    if self.workdir:
      os.makedirs(self.workdir, exist_ok=True)
    if self.workdir and c.checkpoints:
      check_resume(self.workdir, self.run_config, c.resume)
    if (self.workdir and self.run_config is not None and jax.process_index() == 0
        and not os.path.exists(os.path.join(self.workdir, 'config.json'))):
      metric_writers.write_run_config(self.workdir, self.run_config)
    if self.workdir and c.checkpoints:
      checkpoints = ckpt_lib.Checkpoints(
          os.path.join(self.workdir, 'checkpoints'), c.keep_checkpoints)
      latest = checkpoints.latest_step() if c.resume != 'never' else None
      if latest is not None:
        restored, meta = checkpoints.restore(latest, ckpt_lib.state_tree(state))
        state = state.replace(**restored)
        for hook in self.hooks:
          if hasattr(hook, 'load_state_dict') and hook.name in meta.get('hooks', {}):
            hook.load_state_dict(self, meta['hooks'][hook.name], state)
    step = int(np.max(state.step))  # replicas step together
    writer = None
    if self.workdir:
      writer = metric_writers.MetricWriter(self.workdir, c.tensorboard, resume_step=step)
    snapshots = [(s, ckpt_lib.load_params(self._snapshot_dir(s)))
                 for s in meta.get('snapshot_steps', [])]

    on_device = None
    if c.data_on_device:
      on_device = self._device_data(data)
      batches = self._index_batches(data, step)
    else:
      batches = pipeline.Prefetcher(self._batches(data, step), size=2)
      first = next(batches)
      _check_finite(first, 'the first training batch')
      batches = _chain_first(first, batches)

    state = self.strategy.place_state(state)
    history, evals, pending = [], [], []
    bar = metric_writers.progress_bar(c.num_steps, step, c.progress)
    compile_time, last_log = 0.0, (time.perf_counter(), step)
    try:
      while step < c.num_steps and not self.should_stop:
        k = min(c.steps_per_dispatch, self._next_event(step) - step)
        t0 = time.perf_counter()
        if on_device is not None:
          idx = np.stack([next(batches) for _ in range(k)])
          state, metrics = self.strategy.train_gather(
              state, on_device, self.strategy.place_indices(idx))
        elif k == 1:
          state, metrics = self.strategy.train(state, self.strategy.place_batch(next(batches)))
        else:
          group = [next(batches) for _ in range(k)]
          stacked = jax.tree.map(lambda *xs: np.stack(xs), *group)
          state, metrics = self.strategy.train_many(
              state, self.strategy.place_batch(stacked, stacked=True))
        if not compile_time:
          jax.block_until_ready(metrics)
          compile_time = time.perf_counter() - t0
        pending.append((step, k, metrics))
        step += k

        if step % c.log_every == 0 or step == c.num_steps:
          row = self._flush(pending, meta, step, last_log, writer, bar)
          history.append(row)
          pending, last_log = [], (time.perf_counter(), step)
        if step in c.snapshot_steps:
          snapshots.append((step, self._save_snapshot(state, step, meta)))
        if (c.eval_every and step % c.eval_every == 0) or step == c.num_steps:
          if eval_sets:
            state = self._evaluate_and_hook(state, step, eval_sets, evals, writer)
        if checkpoints and ((c.checkpoint_every and step % c.checkpoint_every == 0)
                            or step == c.num_steps or self.should_stop):
          if pending:  # counters in meta must be current before saving
            history.append(self._flush(pending, meta, step, last_log, writer, bar))
            pending = []
          meta['hooks'] = {h.name: h.state_dict() for h in self.hooks
                           if hasattr(h, 'state_dict')}
          host = self.host_state(state)
          _check_finite_state(host, step)
          checkpoints.save(step, ckpt_lib.state_tree(host), meta)
      if pending:  # stopped by a hook between two logged steps
        history.append(self._flush(pending, meta, step, last_log, writer, bar))
      for hook in self.hooks:
        if hasattr(hook, 'finalize'):
          final = hook.finalize(self, state)
          if final is not None:
            state = self.strategy.place_state(final)
    finally:
      batches.close()
      bar.close()
      if writer:
        writer.close()
      if checkpoints:
        checkpoints.close()
    return FitResult(
        state=self.host_state(state), history=history, evals=evals,
        snapshots=snapshots, stopped_early=self.should_stop,
        nonfinite_steps=meta['nonfinite_steps'],
        wall_time=time.perf_counter() - start_time, compile_time=compile_time)

  def _flush(self, pending, meta, step, last_log, writer, bar) -> dict:
    """Pulls the pending metrics to the host (the only sync in the loop)."""
    host = self.strategy.host([m for _, _, m in pending])
    per_step = []
    for (_, k, _), m in zip(pending, host):
      if k == 1 and not self.config.data_on_device:
        per_step.append(m)
      else:
        per_step.extend(jax.tree.map(lambda x, i=i: x[i], m) for i in range(k))
    for m in per_step:
      bad = bool(np.any(m['nonfinite'] > 0))  # any replica
      meta['nonfinite_steps'] += int(bad)
      meta['nonfinite_in_row'] = meta['nonfinite_in_row'] + 1 if bad else 0
      if meta['nonfinite_in_row'] >= self.config.max_nonfinite_in_row:
        raise NonFiniteError(
            f'{meta["nonfinite_in_row"]} steps in a row had a non-finite loss or '
            f'gradient (up to step {step}); they were skipped and training '
            'stopped. The last good checkpoint is kept. Lower the learning rate '
            'or add gradient clipping.')
    last = per_step[-1]
    elapsed = time.perf_counter() - last_log[0]
    row = dict(last)
    if step % self.config.log_every and step != self.config.num_steps:
      # Not a logged step: the step skipped its diagnostics (see steps.py).
      for key in ('accuracy', 'grad_norm', 'layer_grad_norms'):
        row.pop(key, None)
    row['steps_per_second'] = (step - last_log[1]) / max(elapsed, 1e-9)
    row['nonfinite_steps'] = meta['nonfinite_steps']
    if writer:
      writer.write(step, row, prefix='train/')
    bar.update(step - bar.n)
    bar.set_postfix({k: f'{float(np.mean(v)):.4g}' for k, v in row.items()
                     if k in ('loss', 'accuracy', 'learning_rate', 'steps_per_second')})
    return dict(step=step, **row)

  def _evaluate_and_hook(self, state, step, eval_sets, evals, writer):
    results = {name: self.evaluate(state, arrays) for name, arrays in eval_sets.items()}
    evals.append(dict(step=step, **results))
    if writer:
      for name, metrics in results.items():
        writer.write(step, metrics, prefix=f'eval/{name}/')
    for hook in self.hooks:
      new_state = hook(self, state, results)
      if new_state is not None:  # hooks return host copies
        state = self.strategy.place_state(new_state)
    return state

  def _snapshot_dir(self, step: int) -> str:
    return os.path.join(self.workdir, 'snapshots', f'step_{step:08d}')

  def _save_snapshot(self, state, step, meta) -> dict:
    host = self.host_state(state)
    snap = dict(params=host.params, batch_stats=host.batch_stats)
    if self.workdir:
      ckpt_lib.save_params(self._snapshot_dir(step), snap)
      meta['snapshot_steps'] = sorted(set(meta['snapshot_steps']) | {step})
    return snap


class _chain_first:
  """``first`` then the rest of a closable iterator."""

  def __init__(self, first, rest):
    self._first, self._rest = [first], rest

  def __iter__(self):
    return self

  def __next__(self):
    return self._first.pop() if self._first else next(self._rest)

  def close(self):
    self._rest.close()
