"""Hooks the Trainer calls after every evaluation.

A hook is ``hook(trainer, state, evals) -> Optional[host_state]``: ``evals``
maps each evaluation set to its metrics (``{'validation': {'loss': ...}}``).
Returning a state (a host copy, see ``trainer.host_state``) replaces the
training state. A hook with a ``name`` and ``state_dict()`` / ``load_state_dict()``
has its counters saved with every checkpoint, so a resumed run decides exactly
as the uninterrupted one would; a hook with ``finalize(trainer, state)`` is
called once at the end of training.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from research import optim
from research.train import checkpoints as ckpt_lib


def _metric(evals: dict, key: str) -> float:
  """``'validation/loss'`` -> ``evals['validation']['loss']``."""
  name, _, metric = key.partition('/')
  if name not in evals or metric not in evals[name]:
    known = [f'{n}/{m}' for n, ms in evals.items() for m in ms]
    raise ValueError(f'monitor={key!r} is not an evaluated metric; known: {known}.')
  return float(evals[name][metric])


def _check_mode(mode: str) -> None:
  if mode not in ('min', 'max'):
    raise ValueError(f"mode={mode!r} is unknown; allowed: 'min', 'max'.")


class EarlyStopping:
  """Stops after ``patience`` evaluations without improvement; restores the best.

  Improvement: ``value < best - min_delta`` (mode 'min') or
  ``value > best + min_delta`` (mode 'max'). At the end of training the params
  and BatchNorm statistics of the best evaluation replace the final ones.
  """

  name = 'early_stopping'

  def __init__(self, monitor: str = 'validation/loss', patience: int = 5,
               mode: str = 'min', min_delta: float = 0.0):
    _check_mode(mode)
    if patience < 1:
      raise ValueError(f'patience={patience} must be >= 1.')
    if min_delta < 0:
      raise ValueError(f'min_delta={min_delta} must be >= 0.')
    self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
    self.best = np.inf if mode == 'min' else -np.inf
    self.best_step = None
    self.wait = 0
    self._best_vars = None

  def _better(self, value: float) -> bool:
    if self.mode == 'min':
      return value < self.best - self.min_delta
    return value > self.best + self.min_delta

  def __call__(self, trainer, state, evals):
    value = _metric(evals, self.monitor)
    if self._better(value):
      self.best, self.wait = value, 0
      host = trainer.host_state(state)
      self.best_step = int(host.step)
      self._best_vars = dict(params=host.params, batch_stats=host.batch_stats)
      if trainer.workdir:  # a new folder per best; see ``committed``
        ckpt_lib.save_params(self._dir(trainer, self.best_step), self._best_vars)
    else:
      self.wait += 1
      if self.wait >= self.patience:
        trainer.should_stop = True
    return None

  def finalize(self, trainer, state):
    if self._best_vars is None:
      return None
    host = trainer.host_state(state)
    return host.replace(params=self._best_vars['params'],
                        batch_stats=self._best_vars['batch_stats'])

  def _dir(self, trainer, step: Optional[int] = None) -> str:
    root = os.path.join(trainer.workdir, 'early_stopping_best')
    return root if step is None else os.path.join(root, f'step_{int(step):08d}')

  def committed(self, trainer, kept: list) -> None:
    """Called after a checkpoint is committed with this hook's state in each
    kept checkpoint: deletes the best-params folders none of them needs."""
    root = self._dir(trainer)
    if not trainer.workdir or not os.path.isdir(root) or jax.process_index() != 0:
      return
    needed = {self.best_step} | {d.get('best_step') for d in kept if d}
    for name in os.listdir(root):
      if name.startswith('step_') and int(name[5:]) not in needed:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)

  def state_dict(self) -> dict:
    best = None if np.isinf(self.best) else self.best
    return dict(best=best, best_step=self.best_step, wait=self.wait)

  def load_state_dict(self, trainer, d: dict, target) -> None:
    # Every field is set: a fallback to an older checkpoint loads again.
    self.best = d['best'] if d.get('best') is not None else (
        np.inf if self.mode == 'min' else -np.inf)
    self.best_step, self.wait = d.get('best_step'), d.get('wait', 0)
    self._best_vars = None
    if self.best_step is not None and trainer.workdir:
      self._best_vars = ckpt_lib.load_params(  # CheckpointError if unusable
          self._dir(trainer, self.best_step),
          dict(params=target.params, batch_stats=target.batch_stats))


def _is_inject_state(node) -> bool:
  return hasattr(node, 'hyperparams_states') and hasattr(node, 'hyperparams')


def _inject_states(opt_state) -> list:
  return [n for n in jax.tree.leaves(opt_state, is_leaf=_is_inject_state)
          if _is_inject_state(n)]


def _replace_hyperparam(opt_state, name: str, value):
  """Sets an injected hyperparameter wherever the inject state sits in the tree."""
  return jax.tree.map(
      lambda n: optim.set_hyperparams(n, **{name: value})
      if _is_inject_state(n) and name in n.hyperparams else n,
      opt_state, is_leaf=_is_inject_state)


def _read_hyperparam(opt_state, name: str) -> Optional[float]:
  for n in _inject_states(opt_state):
    if name in n.hyperparams:
      return float(np.asarray(n.hyperparams[name]))
  return None


class PerformanceScheduling:
  """Feeds a validation metric to ``reduce_on_plateau`` after every evaluation.

  The plateau transform decides the scale (Keras' ReduceLROnPlateau); the
  learning rate of an ``inject_hyperparams`` optimizer is set to
  ``base * scale`` in the optimizer state, so nothing is recompiled. Each
  evaluation is one observation, as an epoch is in Keras.
  """

  name = 'performance_scheduling'

  def __init__(self, monitor: str = 'validation/loss', factor: float = 0.1,
               patience: int = 10, cooldown: int = 0, min_scale: float = 0.0,
               rtol: float = 1e-4, atol: float = 0.0, mode: str = 'min',
               hyperparam: str = 'learning_rate'):
    self.monitor, self.hyperparam = monitor, hyperparam
    self.plateau = optim.reduce_on_plateau(
        factor=factor, patience=patience, cooldown=cooldown, min_scale=min_scale,
        rtol=rtol, atol=atol, mode=mode)
    self.pstate = self.plateau.init(jnp.zeros(()))
    self.base = None

  @property
  def scale(self) -> float:
    return float(self.pstate.scale)

  def __call__(self, trainer, state, evals):
    value = _metric(evals, self.monitor)
    _, self.pstate = self.plateau.update(jnp.zeros(()), self.pstate, value=jnp.asarray(value))
    host = trainer.host_state(state)
    if self.base is None:
      self.base = _read_hyperparam(host.opt_state, self.hyperparam)
    if self.base is None:
      raise ValueError(
          'performance scheduling needs the optimizer built with inject_hyperparams '
          f'and a numeric {self.hyperparam!r}; none was found in the optimizer state.')
    new_lr = self.base * self.scale
    return host.replace(opt_state=_replace_hyperparam(host.opt_state, self.hyperparam, new_lr))

  def state_dict(self) -> dict:
    return dict(base=self.base, plateau={k: np.asarray(v).tolist()
                                         for k, v in self.pstate._asdict().items()})

  def load_state_dict(self, trainer, d: dict, target) -> None:
    del trainer, target
    self.base = d.get('base')
    if 'plateau' in d:
      self.pstate = type(self.pstate)(**{
          k: jnp.asarray(v, dtype=getattr(self.pstate, k).dtype)
          for k, v in d['plateau'].items()})
