"""Hyperparameters as state: change them between steps, schedule them, log them.

``inject_hyperparams(factory)(**kwargs)`` builds ``factory(**kwargs)`` anew at
every update from hyperparameters kept in the optimizer state, so that they
are ordinary arrays to ``jit``: changing one does not recompile, and the
state shows the value each update actually used.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from typing import Any, Callable, Iterable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from research.optim import base
from research.optim import tree as otu

__all__ = [
    'InjectHyperparamsState',
    'InjectStatefulHyperparamsState',
    'StatefulSchedule',
    'WrappedSchedule',
    'WrappedScheduleState',
    'inject_hyperparams',
    'inject_stateful_hyperparams',
    'set_hyperparams',
]


class InjectHyperparamsState(NamedTuple):
  """The state of Optax's older ``inject_hyperparams``, kept for its name.

  :func:`inject_hyperparams` returns :class:`InjectStatefulHyperparamsState`,
  as Optax 0.2.8 does; both have ``count``, ``hyperparams``, ``inner_state``.
  """

  count: jax.Array
  hyperparams: dict[str, jax.Array]
  inner_state: base.OptState


class InjectStatefulHyperparamsState(NamedTuple):
  count: jax.Array  # int32, updates so far
  hyperparams: dict[str, jax.Array]  # values used by the latest update
  hyperparams_states: dict[str, Any]  # the states of the scheduled ones
  inner_state: base.OptState


class StatefulSchedule(Protocol):
  """A schedule with its own state, which may read the update's extra args.

  ``inject_hyperparams`` calls ``value = schedule(state, **extra_args)`` and
  then ``state = schedule.update(state, **extra_args)`` at every update.
  """

  def init(self) -> Any:
    """The initial schedule state."""

  def update(self, state: Any, **extra_args: Any) -> Any:
    """The schedule state after one update."""

  def __call__(self, state: Any, **extra_args: Any) -> jax.typing.ArrayLike:
    """The value for the current update."""


class WrappedScheduleState(NamedTuple):
  count: jax.Array  # int32


class WrappedSchedule:
  """A schedule ``count -> value`` seen as a stateful schedule.

  Stateful schedules have ``init() -> s``, ``update(s, **extra_args) -> s``
  and ``__call__(s, **extra_args) -> value``; this one's state is the count.
  """

  def __init__(self, schedule_fn: base.Schedule):
    self.schedule_fn = schedule_fn

  def init(self) -> WrappedScheduleState:
    return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

  def update(self, state: WrappedScheduleState, **extra_args) -> WrappedScheduleState:
    del extra_args
    return WrappedScheduleState(count=otu.safe_increment(state.count))

  def __call__(self, state: WrappedScheduleState, **extra_args):
    del extra_args
    return self.schedule_fn(state.count)


def _is_stateful_schedule(x) -> bool:
  return callable(x) and callable(getattr(x, 'init', None)) and callable(
      getattr(x, 'update', None))


def _is_static(value) -> bool:
  # Python ints stay static (unlike Optax, which injects them): they are
  # sizes, periods and counts that shapes or Python control flow depend on.
  return value is None or isinstance(
      value, (bool, np.bool_, str, numbers.Integral))


def _is_numeric(value) -> bool:
  return isinstance(value, (numbers.Real, jax.Array, np.ndarray, np.generic))


def _highest_float_dtype(tree):
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(tree)]
  dtypes = [jnp.finfo(d).dtype for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
  if not dtypes:
    return jnp.asarray(0.0).dtype
  return max(dtypes, key=lambda d: jnp.finfo(d).bits)


def _cast_float(x, dtype, force=False):
  """Casts float values to ``dtype``; other values pass through.

  Unless ``force``, strongly typed JAX arrays keep their dtype: the user
  chose it.
  """
  if not force and isinstance(x, jax.Array) and not getattr(x, 'weak_type', False):
    return x
  if jnp.issubdtype(getattr(x, 'dtype', type(x)), jnp.floating):
    return jnp.asarray(x, dtype=dtype)
  return x


def inject_hyperparams(
    inner_factory: Callable[..., base.GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[jnp.dtype] = None,
) -> Callable[..., base.GradientTransformationExtraArgs]:
  r"""Makes the numeric hyperparameters of ``inner_factory`` part of the state.

  ``inject_hyperparams(f)(*args, **kwargs)`` returns a transformation that at
  update ``t`` (``t = state.count``) runs

  .. math::
    h_t = \{k: s_k(t) \text{ for scheduled } k;\; \text{state.hyperparams}[k]
    \text{ otherwise}\}, \qquad
    (u, \text{inner}) = f(\text{static}, h_t).\text{update}(g, \text{inner})

  and stores ``h_t`` in ``state.hyperparams``: after an update it holds the
  values that update used (the learning rate actually applied), after
  ``init`` the values for the first update.

  The arguments are sorted by kind:

  - *static*: those named in ``static_args``, and every ``bool``, ``str``,
    ``None`` and Python ``int`` (Optax injects ints; we keep them static, as
    they are sizes and periods; write ``1.0`` to inject a whole number);
  - *scheduled*: callables ``count -> value``, or stateful schedules with
    ``init``/``update``/``__call__``; re-evaluated at every update, so
    setting them by hand has no effect;
  - *numeric*: Python floats, NumPy and JAX arrays; stored as arrays, they can
    be changed between updates with :func:`set_hyperparams` (or by assigning
    ``state.hyperparams[name]`` an array of the same dtype) without
    recompiling a jitted step.

  Float values are cast to ``hyperparam_dtype``, by default the highest
  float dtype of the params (their real dtype for complex params; Optax
  would make them complex). Without ``hyperparam_dtype``, a strongly typed
  JAX array given as a value keeps its dtype, as in Optax. Schedule outputs
  are always cast (Optax keeps a schedule's float32 output with bfloat16
  params, and the float32 learning rate then promotes the updates).

  Args:
    inner_factory: a function returning a gradient transformation.
    static_args: names of arguments never injected, e.g. callables that are
      not schedules.
    hyperparam_dtype: the dtype of the injected float hyperparameters.

  Returns:
    A factory with ``inner_factory``'s signature returning a
    :class:`~research.optim.base.GradientTransformationExtraArgs` whose state
    is an :class:`InjectStatefulHyperparamsState`.
  """
  forced = hyperparam_dtype is not None
  static_args = {static_args} if isinstance(static_args, str) else set(static_args)
  signature = inspect.signature(inner_factory)
  unknown = static_args - set(signature.parameters)
  if unknown:
    raise ValueError(
        f'inject_hyperparams: static_args={sorted(static_args)!r} names '
        f'{sorted(unknown)!r}, which {inner_factory.__name__} does not take; '
        f'allowed: {sorted(signature.parameters)!r}.'
    )

  @functools.wraps(inner_factory)
  def wrapped(*args, **kwargs) -> base.GradientTransformationExtraArgs:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    static, numeric, scheduled = {}, {}, {}
    for name, value in bound.arguments.items():
      if name in static_args or _is_static(value):
        static[name] = value
      elif _is_stateful_schedule(value):
        scheduled[name] = value
      elif callable(value):
        scheduled[name] = WrappedSchedule(value)
      elif _is_numeric(value):
        numeric[name] = value
      else:
        static[name] = value

    def dtype_for(params, stored):
      if hyperparam_dtype is not None:
        return hyperparam_dtype
      if params is not None:
        return _highest_float_dtype(params)
      # No params: keep the dtype chosen at init, so the state stays stable.
      stored_dtype = getattr(stored, 'dtype', None)
      if stored_dtype is not None and jnp.issubdtype(stored_dtype, jnp.floating):
        return stored_dtype
      return jnp.asarray(0.0).dtype

    def init_fn(params):
      dtype = dtype_for(params, None)
      schedule_states = {k: s.init() for k, s in scheduled.items()}
      hyperparams = {k: jnp.asarray(_cast_float(v, dtype, forced))
                     for k, v in numeric.items()}
      hyperparams.update({
          k: _cast_float(s(schedule_states[k]), dtype, True)
          for k, s in scheduled.items()
      })
      inner = inner_factory(**static, **hyperparams)
      return InjectStatefulHyperparamsState(
          count=jnp.zeros([], jnp.int32),
          hyperparams=hyperparams,
          hyperparams_states=schedule_states,
          inner_state=inner.init(params),
      )

    def update_fn(updates, state, params=None, **extra_args):
      stored = state.hyperparams
      hyperparams = {
          k: _cast_float(v, dtype_for(params, v), forced)
          for k, v in stored.items()
      }
      for k, s in scheduled.items():
        value = s(state.hyperparams_states[k], **extra_args)
        hyperparams[k] = _cast_float(value, dtype_for(params, stored.get(k)), True)
      schedule_states = {
          k: s.update(state.hyperparams_states[k], **extra_args)
          for k, s in scheduled.items()
      }
      inner = base.with_extra_args_support(inner_factory(**static, **hyperparams))
      updates, inner_state = inner.update(
          updates, state.inner_state, params, **extra_args
      )
      return updates, InjectStatefulHyperparamsState(
          count=otu.safe_increment(state.count),
          hyperparams=hyperparams,
          hyperparams_states=schedule_states,
          inner_state=inner_state,
      )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)

  return wrapped


def inject_stateful_hyperparams(
    inner_factory: Callable[..., base.GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[jnp.dtype] = None,
) -> Callable[..., base.GradientTransformationExtraArgs]:
  """Deprecated in Optax 0.1.9: the same as :func:`inject_hyperparams`."""
  warnings.warn(
      'inject_stateful_hyperparams is deprecated; use inject_hyperparams, '
      'which accepts stateful schedules too.',
      DeprecationWarning,
      stacklevel=2,
  )
  return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)


def set_hyperparams(
    state: InjectStatefulHyperparamsState, **values: Any
) -> InjectStatefulHyperparamsState:
  """Returns ``state`` with numeric hyperparameters replaced.

  Each new value is cast to the dtype and shape of the value it replaces, so
  that a jitted update sees the same abstract state and does not recompile.

  Raises:
    ValueError: for a name that is not an injected numeric hyperparameter
      (static ones are not in the state; scheduled ones are recomputed at
      every update, so setting them would be silently ignored), or a value
      whose shape differs.
  """
  fn = 'set_hyperparams'
  hyperparams = dict(state.hyperparams)
  for name, value in values.items():
    if name in state.hyperparams_states:
      raise ValueError(
          f'{fn}: {name!r} is scheduled, and a schedule is re-evaluated at '
          'every update; allowed: the numeric hyperparameters '
          f'{sorted(set(hyperparams) - set(state.hyperparams_states))!r}.'
      )
    if name not in hyperparams:
      raise ValueError(
          f'{fn}: {name!r} is not an injected hyperparameter; allowed: '
          f'{sorted(set(hyperparams) - set(state.hyperparams_states))!r}.'
      )
    old = jnp.asarray(hyperparams[name])
    new = jnp.asarray(value, dtype=old.dtype)
    if new.shape != old.shape:
      raise ValueError(
          f'{fn}: {name} has shape {old.shape}; got a value of shape '
          f'{new.shape}.'
      )
    hyperparams[name] = new
  return state._replace(hyperparams=hyperparams)
