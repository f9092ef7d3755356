"""A TrainState with flat params and flat optimizer state (``flat_params``).

On the devices the params are an ``optim.FlatTree`` (one buffer per dtype),
the model reads views of them, their gradient is flat too, and the
optimizer is ``optim.flat(tx)``: for an elementwise optimizer the whole
update is one fused loop over contiguous memory, with no copy. The views are
not free on XLA:CPU: a matrix product does not read a slice in place, so
each kernel view is copied once per step and the gradient concatenated once.
On CPU the flag therefore pays only where the leaves are small and the
update is a large share of a step. Measured with ``train_throughput``
(the Trainer against a hand-written flax + optax jit + scan loop):

- 100 Dense(16) layers (202 leaves of at most 256 entries), batch 1, 1200
  steps per fit: the per-leaf Adam update is 0.42-0.47 of a step and the
  flat one 0.08. The Trainer with ``flat_params`` ran at 1.24-1.30x the hand
  loop (median 1.27 over 5 runs; 1.29-1.32x with ``nonfinite_check='loss'``),
  against 0.79-0.93x per leaf; two copies of the hand loop came out
  0.98-1.04x apart. (Before the state was placed in one compiled call,
  :func:`to_flat` took a tenth of such a fit and flat ran at 1.04-1.31x.)
  At batch 10 the update is 23 % of a step, and flat ran at 0.95x.
- 50 Dense(64) layers (102 leaves of 4096 entries), the benchmark's default:
  the flat update takes 0.7-0.8 of the per-leaf one's time (Adam is three
  passes over each buffer either way) and the update is 6-8 % of a step at
  batch 100, so the copies cost about what it saves: flat ran at 0.90-1.00x
  the hand loop at batch 100 (per leaf 0.96-1.01x; plain SGD, the bound for
  any optimizer, 1.10-1.15x), 0.90x at batch 10 and 0.6x at batch 1.

On the host everything stays per leaf: the
Trainer's ``host_state`` (checkpoints, snapshots, hooks, the fit result)
converts back, so checkpoints on disk are the same with or without the flag
and a run resumes across it.

The conversion happens where the Trainer places a state on the devices and
where it pulls one back (:class:`FlatStrategy` wraps the strategy), so the
pure steps are unchanged.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from absl import logging
import jax
import numpy as np

from research import optim


class FlatApply:
  """``apply_fn`` on flat params: unravels ``variables['params']`` first.

  It presents the wrapped function's ``__self__`` (a Flax module) and
  signature, so the steps call it exactly as they call the model. Equal
  (and hashing equal) for equal model and layout: it is a static field of
  the state, part of the jit cache key.
  """

  def __init__(self, apply_fn, layout):
    self.apply_fn = apply_fn
    self.layout = layout
    module = getattr(apply_fn, '__self__', None)
    if module is not None:
      self.__self__ = module
    try:
      self.__signature__ = inspect.signature(apply_fn)
    except (TypeError, ValueError):
      pass

  def __call__(self, variables, *args, **kwargs):
    params = variables.get('params')
    if isinstance(params, optim.FlatTree):
      variables = dict(variables, params=optim.unravel(params))
    return self.apply_fn(variables, *args, **kwargs)

  def __eq__(self, other):
    return (isinstance(other, FlatApply) and other.apply_fn == self.apply_fn
            and other.layout == self.layout)

  def __hash__(self):
    return hash((self.apply_fn, self.layout))


@functools.lru_cache(maxsize=64)
def flat_tx(tx):
  """One ``optim.flat(tx)`` per optimizer, so that jit's cache sees one object."""
  return optim.flat(tx)


def is_flat(state) -> bool:
  return isinstance(getattr(state, 'params', None), optim.FlatTree)


def to_flat(state):
  """A per-leaf TrainState -> the flat one (params, opt_state, apply_fn, tx)."""
  if is_flat(state) or not hasattr(state, 'tx'):
    return state
  if np.ndim(state.step) != 0:
    raise ValueError('config.train.flat_params=True cannot train a state with a replica '
                     'axis (state.create_replicas); allowed: flat_params=False for grids.')
  tx = flat_tx(state.tx)
  needs_tree = optim.classify(state.tx)
  if needs_tree:
    logging.warning('flat_params: the optimizer\'s %r needs the tree structure and runs on '
                    'segment views (equal values, per-leaf state, an update no faster than '
                    'per leaf); only elementwise optimizers get a fused flat update.', needs_tree)
  layout = optim.layout_of(state.params)
  if _one_device(state.params, state.opt_state) and all(k[1] is None for k in layout.keys):
    params, opt_state = _flatten_compiled(tx, layout, state.params, state.opt_state)
  else:  # sharded or spread over devices: leaf by leaf, as placed
    params = optim.ravel(state.params, layout)
    opt_state = optim.state_to_flat(tx, state.opt_state, state.params)
  return state.replace(params=params, opt_state=opt_state,
                       apply_fn=FlatApply(state.apply_fn, params.layout), tx=tx)


def _one_device(*trees) -> bool:
  """Every leaf is a host array or a jax.Array, and those on one device."""
  devices = set()
  for x in jax.tree.leaves(trees):
    if isinstance(x, jax.Array):
      devices |= x.sharding.device_set
    elif not isinstance(x, (np.ndarray, np.generic, int, float, bool)):
      return False
  return len(devices) <= 1


@functools.partial(jax.jit, static_argnums=(0, 1))
def _flatten_compiled(tx, layout, params, opt_state):
  """:func:`to_flat`'s conversion as one program, compiled once per
  optimizer and layout. Eagerly each leaf's reshape and each concatenation
  is a dispatch of its own and the state's template a trace: :func:`to_flat`
  took 11.5 ms per fit on train_throughput's 100 x Dense(16) (202 leaves and
  their Adam moments), a tenth of a 1200-step fit at batch 1; 1.3 ms so."""
  return optim.ravel(params, layout), optim.state_to_flat(tx, opt_state, params)


def to_tree(state):
  """A flat TrainState (device or host copy) -> the per-leaf one."""
  if not is_flat(state):
    return state
  apply_fn = state.apply_fn.apply_fn if isinstance(state.apply_fn, FlatApply) else state.apply_fn
  return state.replace(params=optim.unravel(state.params),
                       opt_state=optim.state_to_tree(state.opt_state),
                       apply_fn=apply_fn, tx=optim.flat_inner(state.tx) or state.tx)


class FlatStrategy:
  """A parallel strategy whose states are flat on the devices, per leaf on
  the host; every other call goes to the wrapped strategy."""

  def __init__(self, strategy):
    self._strategy = strategy

  def __getattr__(self, name) -> Any:
    return getattr(self._strategy, name)

  def place_state(self, state):
    return self._strategy.place_state(to_flat(state))

  def host(self, tree):
    return to_tree(self._strategy.host(tree))


def check_config(c) -> None:
  """``flat_params`` is a bool and not combined with what needs the tree."""
  flag = c.get('flat_params', False)
  if not isinstance(flag, (bool, np.bool_)):
    raise ValueError(f'config.train.flat_params={flag!r} is invalid; allowed: True, False.')
  if not flag:
    return
  for field in ('l1', 'l2'):
    if c.get(field, 0.0):
      raise ValueError(
          f'config.train.{field}={c[field]!r} with flat_params=True: the penalty picks '
          f'kernels by path; allowed: {field}=0 with flat params (use weight decay).')
  if c.get('log_grad_norms', False):
    raise ValueError('config.train.log_grad_norms=True with flat_params=True: the '
                     'gradient is one buffer per dtype; allowed: log_grad_norms=False.')


def wrap(strategy, config):
  """``strategy`` itself, or a :class:`FlatStrategy` under ``flat_params``."""
  return FlatStrategy(strategy) if config.get('flat_params', False) else strategy

