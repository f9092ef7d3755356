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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from research.train import steps

AXIS = 'batch'
STRATEGIES = ('none', 'sharded', 'pmap')


def _scan(state, batches, logged, spec):
  """``k`` steps in one call: ``lax.scan`` over batches stacked on axis 0;
  ``logged`` is a ``(k,)`` bool vector."""
  def body(state, xs):
    batch, log = xs
    return steps.train_step(state, batch, log, spec)
  return jax.lax.scan(body, state, (batches, logged))


def _gather(state, data, idx, logged, spec):
  """``k`` steps over device-resident ``data``: ``idx[i]`` selects batch ``i``."""
  def body(state, xs):
    rows, log = xs
    return steps.train_step(state, jax.tree.map(lambda v: v[rows], data), log, spec)
  return jax.lax.scan(body, state, (idx, logged))


# One jitted function per kind of call, created once: JAX's jit cache keys
# them on the model and optimizer (static fields of the state), the spec and
# the shapes, so every Trainer with those shares the compilation.
_SINGLE = dict(
    train=jax.jit(steps.train_step, static_argnames='spec', donate_argnums=0),
    train_many=jax.jit(_scan, static_argnames='spec', donate_argnums=0),
    train_gather=jax.jit(_gather, static_argnames='spec', donate_argnums=0),
    evaluate=jax.jit(steps.eval_step, static_argnames='spec'),
)
_PMAP = dict(
    train=jax.pmap(steps.train_step, axis_name=AXIS, in_axes=(0, 0, None),
                   static_broadcasted_argnums=3, donate_argnums=0),
    train_many=jax.pmap(_scan, axis_name=AXIS, in_axes=(0, 0, None),
                        static_broadcasted_argnums=3, donate_argnums=0),
    train_gather=jax.pmap(_gather, axis_name=AXIS, in_axes=(0, 0, 0, None),
                          static_broadcasted_argnums=4, donate_argnums=0),
    evaluate=jax.pmap(steps.eval_step, axis_name=AXIS, static_broadcasted_argnums=2),
)


# A fresh copy of every leaf, on the leaves' device (host arrays go to the
# default one), in one dispatch.
_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def check_batch_size(parallel: str, batch_size: int) -> None:
  if parallel not in STRATEGIES:
    raise ValueError(f'parallel={parallel!r} is unknown; allowed: {", ".join(STRATEGIES)}.')
  n = jax.device_count() if parallel != 'none' else 1
  if batch_size % n:
    raise ValueError(
        f'batch_size={batch_size} is not divisible by the {n} devices of '
        f'parallel={parallel!r}; use a multiple of {n}.')


class Strategy:
  """Places state and batches and runs the compiled steps for one strategy.

  ``spec`` (:class:`research.train.steps.StepSpec`) is what the step depends
  on besides model and optimizer; ``logged`` says which steps compute their
  diagnostics (a bool, or a ``(k,)`` vector for ``k`` steps per call).
  Subclasses set ``_fns`` (the jitted calls) and define place_state and
  place_batch.
  """

  spec: steps.StepSpec

  def host(self, tree):
    """Device values -> NumPy, for logging and checkpoints."""
    return jax.device_get(tree)

  def train(self, state, batch, logged=True):
    return self._fns['train'](state, batch, np.asarray(logged), spec=self.spec)

  def train_many(self, state, batches, logged):
    return self._fns['train_many'](state, batches, np.asarray(logged), spec=self.spec)

  def train_gather(self, state, data, idx, logged):
    """Steps on device-resident ``data`` (see :meth:`place_data`); ``idx`` is
    a placed ``(k, batch)`` index matrix."""
    return self._fns['train_gather'](state, data, idx, np.asarray(logged), spec=self.spec)

  def evaluate(self, state, batch):
    return self._fns['evaluate'](state, batch, spec=self.spec)


class Single(Strategy):
  """parallel='none'."""

  def __init__(self, spec):
    self.spec = spec
    self._fns = _SINGLE

  def place_state(self, state):
    # A copy: the steps donate the state, which must not delete the caller's
    # arrays (e.g. the variables a second run starts from). One compiled
    # call: a jnp.copy per leaf was one dispatch each (23 ms per fit for
    # Adam on train_throughput's deep_mlp, 102 leaves), and
    # jax.device_put(state, may_alias=False) still 7.5 ms on its 100 x
    # Dense(16) variant (609 leaves with the Adam moments), against 1.3 ms.
    return _copy(state)

  def place_data(self, data):
    return jax.device_put(data)

  def place_indices(self, idx):
    return jax.device_put(idx)

  def place_batch(self, batch, stacked=False):
    del stacked
    return jax.device_put(batch)


class Sharded(Strategy):

  def __init__(self, spec):
    self.spec = spec
    # Auto axes: XLA propagates shardings (the batch's 'data' split flows
    # through the model, gathers and reductions) without annotations.
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    self.stacked_data = NamedSharding(self.mesh, P(None, 'data'))
    self._fns = _sharded_fns(self.replicated)

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

  def __init__(self, spec):
    self.spec = dataclasses.replace(spec, axis_name=AXIS)
    self.devices = jax.local_devices()
    self._fns = _PMAP

  def train(self, state, batch, logged=True):
    return self._fns['train'](state, batch, np.asarray(logged), self.spec)

  def train_many(self, state, batches, logged):
    return self._fns['train_many'](state, batches, np.asarray(logged), self.spec)

  def train_gather(self, state, data, idx, logged):
    return self._fns['train_gather'](state, data, idx, np.asarray(logged), self.spec)

  def evaluate(self, state, batch):
    return self._fns['evaluate'](state, batch, self.spec)

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


@functools.lru_cache(maxsize=None)
def _sharded_fns(replicated):
  # The same underlying functions as _SINGLE, with replicated outputs: jit
  # objects with equal options share their traces.
  return dict(
      train=jax.jit(steps.train_step, static_argnames='spec', donate_argnums=0,
                    out_shardings=replicated),
      train_many=jax.jit(_scan, static_argnames='spec', donate_argnums=0,
                         out_shardings=replicated),
      train_gather=jax.jit(_gather, static_argnames='spec', donate_argnums=0,
                           out_shardings=replicated),
      evaluate=jax.jit(steps.eval_step, static_argnames='spec', out_shardings=replicated),
  )


def make_strategy(parallel: str, spec: steps.StepSpec = steps.StepSpec()) -> Strategy:
  """The strategy that runs steps of ``spec``.

  With ``spec.replicas`` the state carries a leading replica axis (see
  ``state.create_replicas``) and every step is vmapped over it: N models
  (seeds, hyperparameters) train on the same batches in one program.
  """
  if parallel not in STRATEGIES:
    raise ValueError(f'parallel={parallel!r} is unknown; allowed: {", ".join(STRATEGIES)}.')
  cls = dict(none=Single, sharded=Sharded, pmap=PMap)[parallel]
  return cls(spec)
