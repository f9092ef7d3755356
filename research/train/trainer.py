"""The Trainer: one loop for one CPU, many devices or many hosts.

    trainer = Trainer(config.train, workdir)
    result = trainer.fit(state, train_loader, eval_sets={'validation': loader},
                         num_steps=1000)

``train_loader`` is a ``research.data.TrainLoader`` (global batches fixed by
``(seed, epoch, step)``, each host reading its slice); evaluation sets are
``research.data.EvalLoader``s or dicts of arrays ``{'x', 'y'}``.

What it does around the pure steps (research/train/steps.py):
- compiles nothing of its own: the steps are module-level jitted functions
  whose program depends on model, optimizer and loss only (``StepSpec``), so
  runs of another length, log interval or snapshot steps, and every Trainer
  with the same model and optimizer, reuse one compilation;
- runs them with the chosen strategy (``parallel='none'|'sharded'|'pmap'``),
  ``steps_per_dispatch`` steps per call under ``lax.scan``;
- pulls metrics to the host only every ``log_every`` steps and writes them to
  ``metrics.jsonl``, TensorBoard and a progress bar (a labeled bar on a
  terminal, a log line every ``progress_seconds`` otherwise);
- evaluates every ``eval_every`` steps and calls the hooks (early stopping,
  performance scheduling, ...) with the results;
- keeps every snapshot asked for (``snapshot_steps``);
- trains a grid of replicas (seeds x hyperparameters, ``state.create_replicas``)
  as one vmapped program when the state has a leading replica axis;
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
import re
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.data import pipeline
from research.train import checkpoints as ckpt_lib
from research.train import flat_state
from research.train import losses
from research.train import metric_writers
from research.train import parallel as parallel_lib
from research.train import precision as precision_lib
from research.train import profiling
from research.train import steps as steps_lib


def default_config() -> ml_collections.ConfigDict:
  """Every Trainer field with its default; studies override what they need.

  ``num_steps``, ``log_every`` and ``snapshot_steps`` are the defaults of
  :meth:`Trainer.fit`'s arguments of the same names (a study passes its own
  and leaves them out of its config, see ``configs.common``); the batch
  size is the loader's.
  """
  return ml_collections.ConfigDict(dict(
      parallel='none',          # 'none' | 'sharded' | 'pmap'
      num_steps=1000,
      eval_batch_size=1000,
      seed=0,
      loss='cross_entropy',     # a name in research.train.losses.LOSSES
      l1=0.0,
      l2=0.0,
      steps_per_dispatch=1,     # k steps per call under lax.scan
      data_on_device=False,     # keep an in-memory training split on the device
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
      progress=True,            # a bar on a terminal, else a log line every
      progress_seconds=30.0,    # progress_seconds
      tensorboard=True,
      precision='float32',      # 'float32' | 'bfloat16' | 'float16' (research.train.precision)
      loss_scaling='auto',      # 'auto' (dynamic under float16) | 'dynamic' | 'none'
      profile_steps='',         # 'a,b': a jax.profiler trace of steps a..b in <workdir>/profile
      flat_params=False,        # params and optimizer state as flat buffers on the devices
      replica_loop='vmap',      # replicated state: 'vmap' | 'map' (one after another,
                                # for optimizers that branch on their state: SOAP)
  ))


RUN_FIELDS = ('num_steps', 'log_every', 'snapshot_steps')


def validate_config(c) -> None:
  """Raises ValueError naming the field; called before any work starts."""
  def need(ok, field, allowed):
    if not ok:
      raise ValueError(f'config.train.{field}={c[field]!r} is invalid; allowed: {allowed}.')
  need(c.parallel in parallel_lib.STRATEGIES, 'parallel', ', '.join(parallel_lib.STRATEGIES))
  need(c.eval_batch_size >= 1, 'eval_batch_size', '>= 1')
  need(c.loss in losses.LOSSES, 'loss', ', '.join(losses.LOSSES))
  need(c.l1 >= 0, 'l1', '>= 0')
  need(c.l2 >= 0, 'l2', '>= 0')
  need(c.steps_per_dispatch >= 1, 'steps_per_dispatch', '>= 1')
  need(c.eval_every >= 0, 'eval_every', '>= 0')
  need(c.checkpoint_every >= 0, 'checkpoint_every', '>= 0')
  need(c.keep_checkpoints >= 1, 'keep_checkpoints', '>= 1')
  need(c.max_nonfinite_in_row >= 1, 'max_nonfinite_in_row', '>= 1')
  need(c.nonfinite_check in steps_lib.NONFINITE_CHECKS, 'nonfinite_check',
       ', '.join(repr(x) for x in steps_lib.NONFINITE_CHECKS))
  need(c.resume in ('auto', 'force', 'never'), 'resume', "'auto', 'force' or 'never'")
  need(c.get('replica_loop', 'vmap') in steps_lib.REPLICA_LOOPS, 'replica_loop',
       ', '.join(repr(x) for x in steps_lib.REPLICA_LOOPS))
  need(c.get('progress_seconds', 30.0) > 0, 'progress_seconds', '> 0')
  need(c.get('precision', 'float32') in precision_lib.POLICIES, 'precision',
       ', '.join(repr(p) for p in precision_lib.POLICIES))
  need(c.get('loss_scaling', 'auto') in precision_lib.LOSS_SCALINGS, 'loss_scaling',
       ', '.join(repr(s) for s in precision_lib.LOSS_SCALINGS))
  precision_lib.uses_loss_scaling(c.get('precision', 'float32'), c.get('loss_scaling', 'auto'))
  profiling.parse_profile_steps(c.get('profile_steps', ''))
  flat_state.check_config(c)
  if 'num_steps' in c:
    need(c.num_steps >= 1, 'num_steps', '>= 1')
  if 'log_every' in c:
    need(c.log_every >= 1, 'log_every', '>= 1')
  if 'snapshot_steps' in c and 'num_steps' in c:
    need(all(1 <= s <= c.num_steps for s in c.snapshot_steps), 'snapshot_steps',
         f'steps in [1, num_steps={c.num_steps}]')
  if c.parallel != 'none':
    parallel_lib.check_batch_size(c.parallel, c.eval_batch_size)


def _run_args(c, num_steps, log_every, snapshot_steps) -> tuple[int, int, tuple]:
  """fit's run length, log interval and snapshot steps: arguments first,
  then the config's defaults."""
  num_steps = c.get('num_steps') if num_steps is None else num_steps
  log_every = c.get('log_every', 100) if log_every is None else log_every
  snapshot_steps = c.get('snapshot_steps', ()) if snapshot_steps is None else snapshot_steps
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f'Trainer.fit: num_steps={num_steps!r} is invalid; allowed: an int >= 1.')
  if not isinstance(log_every, (int, np.integer)) or log_every < 1:
    raise ValueError(f'Trainer.fit: log_every={log_every!r} is invalid; allowed: an int >= 1.')
  snapshot_steps = tuple(int(s) for s in snapshot_steps)
  bad = [s for s in snapshot_steps if not 1 <= s <= num_steps]
  if bad:
    raise ValueError(f'Trainer.fit: snapshot_steps={bad} are invalid; allowed: steps '
                     f'in [1, num_steps={num_steps}].')
  return int(num_steps), int(log_every), snapshot_steps


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


def _check_finite_state(state, step: int, what: str = 'checkpoint') -> None:
  """A checkpoint or snapshot is never written from non-finite params."""
  if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params)):
    raise NonFiniteError(
        f'the params are not finite at step {step}; no {what} was written '
        'and the last good checkpoint is kept. Use nonfinite_check=\'grads\' to skip '
        'such steps, lower the learning rate or add gradient clipping.')


def _config_for_comparison(config_json: dict) -> dict:
  # Through JSON as config.json was written: tuples read back as lists.
  config_json = json.loads(json.dumps(config_json, sort_keys=True, default=str))
  cfg = dict(config_json.get('config', config_json))
  cfg.pop('resume', None)
  if isinstance(cfg.get('train'), dict):
    # flat_params changes the layout on the devices, not what is computed.
    cfg['train'] = {k: v for k, v in cfg['train'].items() if k not in ('resume', 'flat_params')}
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


# Trainer fields that change what a resumed run computes.
IDENTITY_FIELDS = ('l1', 'l2', 'nonfinite_check', 'eval_every', 'precision',
                   'loss_scaling')


def _hyperparams(opt_state) -> dict:
  """The numeric injected hyperparameters (``inject_hyperparams``, ``optim.make``)."""
  found = {}
  is_inject = lambda n: hasattr(n, 'hyperparams') and hasattr(n, 'hyperparams_states')  # noqa: E731
  for node in jax.tree.leaves(opt_state, is_leaf=is_inject):
    if is_inject(node):
      for k, v in node.hyperparams.items():
        if hasattr(v, 'dtype') or isinstance(v, (int, float)):
          found.setdefault(k, np.asarray(v, np.float64).tolist())
  return found


def _update_probe(state) -> Optional[list]:
  """The optimizer's first update of all-ones gradients (one mean per leaf):
  a fingerprint of numbers baked into the optimizer (``sgd(0.1)``)."""
  params = state.params
  if np.ndim(state.step) == 1:
    params = jax.tree.map(lambda x: x[0], params)
  try:
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = state.tx.update(grads, state.tx.init(params), params)
    return [float(np.mean(np.asarray(u, np.float64))) for u in jax.tree.leaves(updates)]
  except Exception:  # an optimizer that needs extra arguments: no fingerprint
    return None


def run_identity(c, state, data, spec) -> dict:
  """What a resume must share with the run it continues (stored in every
  checkpoint's meta): optimizer structure, shapes, injected
  hyperparameters (their initial values), batch size, data seed, loss."""
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  hyper = _hyperparams(state.opt_state)
  out = dict(
      optimizer=re.sub(r' at 0x[0-9a-f]+', '', str(jax.tree.structure(state.opt_state))),
      shapes={jax.tree_util.keystr(p): f'{jnp.dtype(x.dtype)}{list(np.shape(x))}'
              for p, x in leaves},
      hyperparams=hyper,
      update_probe=None if 'learning_rate' in hyper else _update_probe(state),
      batch_size=int(data.batch_size), data_seed=getattr(data, 'seed', None),
      loss=spec.loss if isinstance(spec.loss, str) else getattr(spec.loss, '__qualname__', '?'),
      **{f: c.get(f) for f in IDENTITY_FIELDS})
  return json.loads(json.dumps(out))


def _close(a, b) -> bool:
  try:
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b, rtol=1e-5, atol=0))
  except (TypeError, ValueError):
    return a == b


def identity_differences(saved: dict, mine: dict) -> list[str]:
  """What differs between a checkpoint's run and this one, named."""
  out = []
  for key in sorted(set(saved) | set(mine)):
    a, b = saved.get(key), mine.get(key)
    if key == 'shapes' and a != b:
      names = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
      out.append(f'param shapes ({names[0]}: {(a or {}).get(names[0])} there, '
                 f'{(b or {}).get(names[0])} now)')
    elif key == 'hyperparams':
      for k in sorted(set(a or {}) | set(b or {})):
        if not _close((a or {}).get(k), (b or {}).get(k)):
          out.append(f'{k} ({(a or {}).get(k)} there, {(b or {}).get(k)} now)')
    elif key == 'update_probe':
      if a is not None and b is not None and not _close(a, b):
        out.append('the optimizer\'s first update (another learning rate or setting)')
    elif key == 'optimizer' and a != b:
      out.append('the optimizer (its state has another structure)')
    elif a != b:
      out.append(f'{key} ({a!r} there, {b!r} now)')
  return out


class Trainer:
  """Runs training for a TrainState under one parallel strategy.

  Args:
    config: the train config (:func:`default_config`).
    workdir: where checkpoints, snapshots, metrics.jsonl and TensorBoard go;
      None keeps everything in memory.
    hooks: called after every evaluation (see :data:`Hook`).
    run_config: the whole config of the run, written to ``config.json``; a
      resume into a workdir of another config is refused.
    loss_fn: a custom ``loss_fn(params, batch_stats, batch, rng) -> (loss,
      aux)`` (see ``steps.LossFn``) instead of ``config.loss``.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: Optional[str] = None,
               hooks: Sequence[Hook] = (), run_config: Optional[dict] = None,
               loss_fn: Optional[steps_lib.LossFn] = None):
    validate_config(config)
    self.config = config
    self.workdir = workdir
    self.hooks = list(hooks)
    self.run_config = run_config
    self.should_stop = False
    self.spec = steps_lib.StepSpec(
        loss=config.loss if loss_fn is None else loss_fn,
        l1=0.0 if loss_fn is not None else config.l1,
        l2=0.0 if loss_fn is not None else config.l2,
        grad_norms=config.log_grad_norms, nonfinite_check=config.nonfinite_check,
        replica_loop=config.get('replica_loop', 'vmap'),
        precision=config.get('precision', 'float32'),
        loss_scaling=precision_lib.uses_loss_scaling(
            config.get('precision', 'float32'), config.get('loss_scaling', 'auto')))
    self.profile_steps = profiling.parse_profile_steps(config.get('profile_steps', ''))
    if self.profile_steps and not workdir:
      raise ValueError(f'config.train.profile_steps={config.profile_steps!r} writes a '
                       'trace into the run folder; allowed only with a workdir.')
    self.strategy = flat_state.wrap(parallel_lib.make_strategy(config.parallel, self.spec),
                                    config)

  def _set_replicas(self, replicas: bool) -> None:
    if replicas != self.strategy.spec.replicas:
      self.strategy = flat_state.wrap(parallel_lib.make_strategy(
          self.config.parallel, dataclasses.replace(self.spec, replicas=replicas)), self.config)

  # --- evaluation ---------------------------------------------------------

  def evaluate(self, state, arrays, *, placed: bool = False) -> dict:
    """Loss and accuracy over every example of ``arrays`` exactly once.

    ``state`` is a host state (a FitResult's, or one a user built), or with
    ``placed=True`` one already placed by this Trainer's strategy (under
    pmap its leaves carry a device axis, which is not a replica axis).
    """
    if not placed:
      self._set_replicas(np.ndim(state.step) == 1)
      state = self.strategy.place_state(state)
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

  def _next_event(self, step: int, run) -> int:
    c = self.config
    events = [run.num_steps]
    for every in (run.log_every, c.eval_every, c.checkpoint_every):
      if every:
        events.append((step // every + 1) * every)
    events += [s for s in run.snapshot_steps if s > step]
    events += profiling.dispatch_ends(self.profile_steps, step)
    return min(events)

  def host_state(self, state):
    """A NumPy copy of a (placed) state, e.g. for hooks and checkpoints."""
    return self.strategy.host(state)

  def fit(self, state, data: pipeline.TrainLoader, eval_sets: Optional[dict] = None, *,
          num_steps: Optional[int] = None, log_every: Optional[int] = None,
          snapshot_steps: Optional[Sequence[int]] = None, name: str = '') -> FitResult:
    """Trains ``state`` to step ``num_steps`` (resuming from the workdir's
    latest checkpoint if there is one).

    ``num_steps``, ``log_every`` and ``snapshot_steps`` default to the
    config's fields of the same names; none of them changes the compiled
    step. ``name`` labels the progress bar and log lines. The loader's
    ``prefetch`` (``config.data.prefetch``) host batches are prepared ahead
    on a thread.
    """
    c = self.config
    run = _Run(*_run_args(c, num_steps, log_every, snapshot_steps), name=name)
    replicas = np.ndim(state.step) == 1
    self._set_replicas(replicas)
    # The loss scale is state (restored with the rest); the policy's checks
    # run before anything is written.
    state = precision_lib.prepare_state(state, self.spec.loss_scaling)
    precision_lib.check_state(state, self.spec.precision, self.spec.loss_scaling)
    if replicas and self.hooks:
      raise ValueError(
          'a state with a replica axis cannot be trained with hooks (early '
          'stopping, performance scheduling): they decide for one run.')
    eval_sets = eval_sets or {}
    self.should_stop = False  # one Trainer serves many runs
    parallel_lib.check_batch_size(c.parallel, data.batch_size)
    _check_finite_source(data.source)
    start_time = time.perf_counter()
    checkpoints = lock = None
    meta = dict(nonfinite_steps=0, nonfinite_in_row=0, snapshot_steps=[])
    snapshots = []
    if self.workdir:
      if not os.path.isdir(os.path.join(self.workdir, 'checkpoints')):
        _preflight_data(data, c.data_on_device)  # fails before anything is written
      os.makedirs(self.workdir, exist_ok=True)
      if c.checkpoints:
        check_resume(self.workdir, self.run_config, c.resume)
      lock = ckpt_lib.WorkdirLock(self.workdir).acquire()
      try:
        state, meta, snapshots, checkpoints = self._open_workdir(state, data, meta, name)
      except BaseException:
        lock.release()
        raise
    step = int(np.max(state.step))  # replicas step together
    writer = None
    history, evals = [], []
    if self.workdir:
      if jax.process_index() == 0:  # one writer of metrics and TensorBoard
        writer = metric_writers.MetricWriter(self.workdir, c.tensorboard, resume_step=step)
      if step:  # what the interrupted run logged, so the result is the whole run's
        history, evals = metric_writers.read_history(self.workdir, until=step)

    on_device = None
    if c.data_on_device:
      on_device = self._device_data(data)
      batches = _Closing(data.indices(step))
    else:
      prefetch = getattr(data, 'prefetch', 2)
      batches = (pipeline.Prefetcher(data.batches(step), size=prefetch) if prefetch
                 else _Closing(data.batches(step)))
      first = next(batches)
      _check_finite(first, 'the first training batch')
      batches = _chain_first(first, batches)

    state = self.strategy.place_state(state)
    pending = []
    progress = metric_writers.Progress(run.num_steps, step, c.progress, name,
                                       c.get('progress_seconds', 30.0))
    compile_time, last_log = 0.0, (time.perf_counter(), step)
    profiler = profiling.Profiler(self.profile_steps, self.workdir)
    try:
      while step < run.num_steps and not self.should_stop:
        k = min(c.steps_per_dispatch, self._next_event(step, run) - step)
        logged = np.array([run.logged(t) for t in range(step + 1, step + k + 1)])
        profiler.before(step)
        t0 = time.perf_counter()
        if on_device is not None:
          idx = np.stack([next(batches) for _ in range(k)])
          state, metrics = self.strategy.train_gather(
              state, on_device, self.strategy.place_indices(idx), logged)
        elif k == 1:
          state, metrics = self.strategy.train(
              state, self.strategy.place_batch(next(batches)), logged[0])
        else:
          group = [next(batches) for _ in range(k)]
          stacked = jax.tree.map(lambda *xs: np.stack(xs), *group)
          state, metrics = self.strategy.train_many(
              state, self.strategy.place_batch(stacked, stacked=True), logged)
        if not compile_time:
          jax.block_until_ready(metrics)
          compile_time = time.perf_counter() - t0
        pending.append((step, k, metrics))
        step += k
        profiler.after(step, metrics)

        if run.logged(step):
          row = self._flush(pending, meta, step, last_log, writer, progress, run)
          history.append(row)
          pending, last_log = [], (time.perf_counter(), step)
        if step in run.snapshot_steps:
          snapshots.append((step, self._save_snapshot(state, step, meta)))
        if (c.eval_every and step % c.eval_every == 0) or step == run.num_steps:
          if eval_sets:
            state = self._evaluate_and_hook(state, step, eval_sets, evals, writer)
        if checkpoints and ((c.checkpoint_every and step % c.checkpoint_every == 0)
                            or step == run.num_steps or self.should_stop):
          if pending:  # counters in meta must be current before saving
            history.append(self._flush(pending, meta, step, last_log, writer, progress, run))
            pending = []
          meta['hooks'] = {h.name: h.state_dict() for h in self.hooks
                           if hasattr(h, 'state_dict')}
          host = self.host_state(state)
          _check_finite_state(host, step)
          checkpoints.save(step, ckpt_lib.state_tree(host), meta)
          self._committed(checkpoints)
      if pending:  # stopped by a hook between two logged steps
        history.append(self._flush(pending, meta, step, last_log, writer, progress, run))
      for hook in self.hooks:
        if hasattr(hook, 'finalize'):
          final = hook.finalize(self, state)
          if final is not None:
            state = self.strategy.place_state(final)
    finally:
      profiler.close()
      batches.close()
      progress.close()
      if writer:
        writer.close()
      if checkpoints:
        checkpoints.close()
      if lock:
        lock.release()
    return FitResult(
        state=self.host_state(state), history=history, evals=evals,
        snapshots=snapshots, stopped_early=self.should_stop,
        nonfinite_steps=meta['nonfinite_steps'],
        wall_time=time.perf_counter() - start_time, compile_time=compile_time)

  def _open_workdir(self, state, data, meta, name):
    """Restores the newest usable checkpoint (falling back past unusable
    ones, which are moved aside, never deleted) after checking that it is a
    run of this optimizer, shapes and data; writes config.json."""
    c = self.config
    prefix = f'{name}: ' if name else ''
    identity = run_identity(c, state, data, self.spec) if c.checkpoints else None
    checkpoints, snapshots = None, []
    if c.checkpoints:
      checkpoints = ckpt_lib.Checkpoints(
          os.path.join(self.workdir, 'checkpoints'), c.keep_checkpoints)
      if jax.process_index() == 0:  # the lock holder clears killed saves
        for sub in ('checkpoints', 'snapshots', 'early_stopping_best', ''):
          ckpt_lib.remove_unfinished(os.path.join(self.workdir, sub))
      steps = checkpoints.all_steps()
      if steps and c.resume == 'never':
        raise ValueError(
            f"config.train.resume='never' but {checkpoints.directory} holds the "
            f'checkpoints of a run (steps {steps}); allowed: a new workdir, or '
            "resume='auto' to continue that run.")
      target = ckpt_lib.state_tree(state)

      def attempt(s):
        saved = checkpoints.read_meta(s)
        if c.resume != 'force' and saved.get('trainer'):
          diffs = identity_differences(saved['trainer'], identity)
          if diffs:
            raise ValueError(
                f'{self.workdir} holds a run that differs from this one: '
                f'{"; ".join(diffs)}. Use a new workdir, or '
                "config.train.resume='force' to resume it anyway.")
        restored, saved = checkpoints.restore(s, target)
        resumed = state.replace(**restored)
        snaps = [(t, ckpt_lib.load_params(self._snapshot_dir(t), dict(
            params=resumed.params, batch_stats=resumed.batch_stats)))
                 for t in saved.get('snapshot_steps', [])]
        for hook in self.hooks:
          if hasattr(hook, 'load_state_dict') and hook.name in saved.get('hooks', {}):
            hook.load_state_dict(self, saved['hooks'][hook.name], resumed)
        return resumed, saved, snaps

      found, got = checkpoints.restore_latest(
          attempt, lambda m: logging.warning('%s%s', prefix, m))
      if found is not None:
        state, meta, snapshots = got
        newer = [s for s in steps if s > found]
        if newer:
          moved = checkpoints.move_aside(
              newer, os.path.join(self.workdir, 'unusable_checkpoints'))
          logging.warning('%sunusable checkpoints %s moved to %s', prefix, newer,
                          ', '.join(moved))
        logging.info('%sresumed from step %d (%s)', prefix, found, checkpoints.directory)
      meta['trainer'] = identity
    if self.run_config is not None and (
        c.resume == 'force' or not os.path.exists(os.path.join(self.workdir, 'config.json'))):
      metric_writers.write_run_config(self.workdir, self.run_config)
    return state, meta, snapshots, checkpoints

  def _committed(self, checkpoints) -> None:
    """After a checkpoint: hooks drop files no kept checkpoint refers to."""
    users = [h for h in self.hooks if hasattr(h, 'committed')]
    if not users or jax.process_index() != 0:
      return
    metas = []
    for s in checkpoints.all_steps():
      try:
        metas.append(checkpoints.read_meta(s))
      except ckpt_lib.CheckpointError:
        metas.append({})
    for hook in users:
      hook.committed(self, [m.get('hooks', {}).get(hook.name) for m in metas])

  def _flush(self, pending, meta, step, last_log, writer, progress, run) -> dict:
    """Pulls the pending metrics to the host (the only sync in the loop)."""
    host = self.strategy.host([m for _, _, m in pending])
    per_step = []
    for (start, k, _), m in zip(pending, host):
      if k == 1 and not self.config.data_on_device:
        per_step.append((start + 1, m))
      else:
        per_step.extend((start + i + 1, jax.tree.map(lambda x, i=i: x[i], m))
                        for i in range(k))
    for t, m in per_step:
      bad = bool(np.any(m['nonfinite'] > 0))  # any replica
      meta['nonfinite_steps'] += int(bad)
      meta['nonfinite_in_row'] = meta['nonfinite_in_row'] + 1 if bad else 0
      if bad:
        which = ('loss or a gradient' if self.config.nonfinite_check == 'grads'
                 else 'loss')
        replicas = (f' (replicas {np.flatnonzero(np.asarray(m["nonfinite"]) > 0).tolist()})'
                    if np.ndim(m['nonfinite']) else '')
        logging.warning('%sstep %d: non-finite %s%s (nonfinite_check=%r); step skipped, '
                        '%d in a row', f'{run.name}: ' if run.name else '', t, which,
                        replicas, self.config.nonfinite_check, meta['nonfinite_in_row'])
      if meta['nonfinite_in_row'] >= self.config.max_nonfinite_in_row:
        raise NonFiniteError(
            f'{meta["nonfinite_in_row"]} steps in a row had a non-finite loss or '
            f'gradient (up to step {step}); they were skipped and training '
            'stopped. The last good checkpoint is kept. Lower the learning rate '
            'or add gradient clipping.')
    last = per_step[-1][1]
    elapsed = time.perf_counter() - last_log[0]
    row = dict(last)
    if not run.logged(step):
      # Not a logged step: the step skipped its diagnostics (see steps.py).
      for key in ('accuracy', 'grad_norm', 'layer_grad_norms'):
        row.pop(key, None)
    row['steps_per_second'] = (step - last_log[1]) / max(elapsed, 1e-9)
    row['nonfinite_steps'] = meta['nonfinite_steps']
    if writer:
      writer.write(step, row, prefix='train/')
    progress.update(step, row)
    return dict(step=step, **row)

  def _evaluate_and_hook(self, state, step, eval_sets, evals, writer):
    results = {name: self.evaluate(state, arrays, placed=True)
               for name, arrays in eval_sets.items()}
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
    _check_finite_state(host, step, 'snapshot')
    snap = dict(params=host.params, batch_stats=host.batch_stats)
    if self.workdir:
      ckpt_lib.save_params(self._snapshot_dir(step), snap)
      meta['snapshot_steps'] = sorted(set(meta['snapshot_steps']) | {step})
    return snap


@dataclasses.dataclass(frozen=True)
class _Run:
  """What one call of ``fit`` runs: not part of the compiled step."""
  num_steps: int
  log_every: int
  snapshot_steps: tuple
  name: str = ''

  def logged(self, t: int) -> bool:
    """Step ``t`` (1-based) computes its diagnostics and is logged."""
    return t % self.log_every == 0 or t == self.num_steps


def _preflight_data(data, on_device: bool) -> None:
  """Reads the first batch, so that a data error ends a new run before its
  folder is made."""
  if on_device:
    return
  batches = data.batches(0)
  try:
    _check_finite(next(iter(batches)), 'the first training batch')
  finally:
    close = getattr(batches, 'close', None)
    if close:
      close()


class _Closing:
  """A plain iterator with the ``close`` of a Prefetcher."""

  def __init__(self, it):
    self._it = it

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._it)

  def close(self):
    close = getattr(self._it, 'close', None)
    if close:
      close()


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
