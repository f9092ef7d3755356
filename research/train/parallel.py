"""How a step runs on the devices: ``none``, ``sharded`` or ``pmap``.

- ``none``: ``jax.jit`` on the default device, the state donated.
- ``sharded``: ``jax.jit`` over a ``jax.make_mesh`` data axis; batches are
  split across devices with ``NamedSharding``, the state is replicated, and
  BatchNorm sees the global batch (jit's global semantics).
- ``pmap``: the per-device program with ``axis_name='batch'``; the step
  averages gradients, metrics and BatchNorm statistics with ``lax.pmean``.

The same global batch gives the same result in all three, up to float
reassociation. With several processes every strategy spans all devices of all
processes; each process passes only its own part of each batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from research.train import steps

AXIS = 'batch'
STRATEGIES = ('none', 'sharded', 'pmap')


def _stack_step(step_fn: Callable) -> Callable:
  """``k`` steps in one call: ``lax.scan`` over batches stacked on axis 0."""

  def multi(state, batches):
    return jax.lax.scan(step_fn, state, batches)

  return multi


def _gather_step(step_fn: Callable) -> Callable:
  """``k`` steps over device-resident data: ``idx[i]`` selects batch ``i``."""

  def multi(state, data, idx):
    def body(state, rows):
      return step_fn(state, jax.tree.map(lambda v: v[rows], data))
    return jax.lax.scan(body, state, idx)

  return multi


def check_batch_size(parallel: str, batch_size: int) -> None:
  if parallel not in STRATEGIES:
    raise ValueError(f'parallel={parallel!r} is unknown; allowed: {", ".join(STRATEGIES)}.')
  n = jax.device_count() if parallel != 'none' else 1
  if batch_size % n:
    raise ValueError(
        f'batch_size={batch_size} is not divisible by the {n} devices of '
        f'parallel={parallel!r}; use a multiple of {n}.')


class Strategy:
  """Places state and batches and runs compiled steps for one strategy.

  Subclasses compile ``_train``, ``_train_many`` and ``_eval`` and define
  place_state and place_batch.
  """

  def host(self, tree):
    """Device values -> NumPy, for logging and checkpoints."""
    return jax.device_get(tree)

  def train(self, state, batch):
    return self._train(state, batch)

  def train_many(self, state, batches):
    return self._train_many(state, batches)

  def train_gather(self, state, data, idx):
    """Steps on device-resident ``data`` (see :meth:`place_data`); ``idx`` is
    a placed ``(k, batch)`` index matrix."""
    return self._train_gather(state, data, idx)

  def evaluate(self, state, batch):
    return self._eval(state, batch)


class Single(Strategy):
  """parallel='none'."""

  def __init__(self, train_step, eval_step):
    self._train = jax.jit(train_step, donate_argnums=0)
    self._train_many = jax.jit(_stack_step(train_step), donate_argnums=0)
    self._train_gather = jax.jit(_gather_step(train_step), donate_argnums=0)
    self._eval = jax.jit(eval_step)

  def place_state(self, state):
    # A copy: the steps donate the state, which must not delete the caller's
    # arrays (e.g. the variables a second run starts from).
    return jax.tree.map(jnp.copy, jax.device_put(state))

  def place_data(self, data):
    return jax.device_put(data)

  def place_indices(self, idx):
    return jax.device_put(idx)

  def place_batch(self, batch, stacked=False):
    del stacked
    return jax.device_put(batch)


class Sharded(Strategy):

  def __init__(self, train_step, eval_step):
    # Auto axes: XLA propagates shardings (the batch's 'data' split flows
    # through the model, gathers and reductions) without annotations.
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    self.stacked_data = NamedSharding(self.mesh, P(None, 'data'))
    rep = self.replicated
    self._train = jax.jit(train_step, donate_argnums=0, out_shardings=rep)
    self._train_many = jax.jit(_stack_step(train_step), donate_argnums=0,
                               out_shardings=rep)
    self._train_gather = jax.jit(_gather_step(train_step), donate_argnums=0,
                                 out_shardings=rep)
    self._eval = jax.jit(eval_step, out_shardings=rep)

  def place_state(self, state):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)),
        state)

  def place_data(self, data):
    """The whole split, replicated: every device gathers its own rows."""
    return self.place_state(data)

  def place_indices(self, idx):
    return self.place_batch(idx, stacked=True)

  def place_batch(self, batch, stacked=False):
    sharding = self.stacked_data if stacked else self.data
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

  def host(self, tree):
    if jax.process_count() > 1:  # replicated: every process holds a full copy
      return jax.tree.map(
          lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
          else np.asarray(x), tree)
    return jax.device_get(tree)


class PMap(Strategy):

  def __init__(self, train_step, eval_step):
    self.devices = jax.local_devices()
    self._train = jax.pmap(train_step, axis_name=AXIS, donate_argnums=0)
    self._train_many = jax.pmap(_stack_step(train_step), axis_name=AXIS,
                                donate_argnums=0)
    self._train_gather = jax.pmap(_gather_step(train_step), axis_name=AXIS,
                                  donate_argnums=0)
    self._eval = jax.pmap(eval_step, axis_name=AXIS)

  def place_data(self, data):
    return self.place_state(data)

  def place_indices(self, idx):
    return self.place_batch(idx, stacked=True)

  def place_state(self, state):
    n = len(self.devices)
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)
    return jax.pmap(lambda x: x, devices=self.devices)(stacked)

  def _split(self, x, stacked):
    n = len(self.devices)
    x = np.asarray(x)
    if stacked:  # (k, b, ...) -> (devices, k, b / devices, ...)
      k, b = x.shape[:2]
      return np.swapaxes(x.reshape((k, n, b // n) + x.shape[2:]), 0, 1)
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  def place_batch(self, batch, stacked=False):
    return jax.tree.map(lambda x: self._split(x, stacked), batch)

  def host(self, tree):
    """The copy on the first local device (all copies are equal after pmean)."""
    def first(x):
      if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])
      return np.asarray(x)[0]
    return jax.tree.map(first, tree)


def make_strategy(parallel: str, loss: str = 'cross_entropy', l1: float = 0.0,
                  l2: float = 0.0, grad_norms: bool = False, num_replicas: int = 1,
                  **step_options):
  """The strategy with its compiled train and eval steps.

  With ``num_replicas > 1`` the state carries a leading replica axis (see
  ``state.create_replicas``) and every step is vmapped over it: N models with
  different seeds train on the same batches in one program. ``step_options``
  go to ``steps.make_train_step`` (log_every, num_steps, nonfinite_check).
  """
  if parallel not in STRATEGIES:
    raise ValueError(f'parallel={parallel!r} is unknown; allowed: {", ".join(STRATEGIES)}.')
  axis = AXIS if parallel == 'pmap' else None
  train_step = steps.make_train_step(loss, l1, l2, axis_name=axis, grad_norms=grad_norms,
                                     **step_options)
  eval_step = steps.make_eval_step(loss, axis_name=axis)
  if num_replicas > 1:
    train_step = jax.vmap(train_step, in_axes=(0, None))
    eval_step = jax.vmap(eval_step, in_axes=(0, None))
  cls = dict(none=Single, sharded=Sharded, pmap=PMap)[parallel]
  return cls(train_step, eval_step)
