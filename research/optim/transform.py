"""Preconditioners: the ``scale_by_*`` transformations each optimizer is built from.

Each transform keeps its state NamedTuple beside it. Counts are int32 and
incremented before use, so the first step is ``t = 1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'ScaleByScheduleState',
    'TraceState',
    'scale',
    'scale_by_learning_rate',
    'scale_by_schedule',
    'trace',
]


def scale(step_size: jax.typing.ArrayLike) -> base.GradientTransformationExtraArgs:
  """Scales the updates by a fixed scalar: ``u <- step_size * u``."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: step_size * g, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class ScaleByScheduleState(NamedTuple):
  count: jax.Array  # int32, number of updates so far


def scale_by_schedule(step_size_fn: base.Schedule) -> base.GradientTransformationExtraArgs:
  """Scales by a schedule of the update count: ``u <- step_size_fn(count) * u``.

  The schedule sees ``count = 0`` on the first update.
  """

  def init_fn(params):
    del params
    return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    step_size = step_size_fn(state.count)
    updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, ScaleByScheduleState(count=otu.safe_increment(state.count))

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    *,
    flip_sign: bool = True,
) -> base.GradientTransformationExtraArgs:
  """Scales by ``-learning_rate`` (or ``+learning_rate`` with ``flip_sign=False``).

  ``learning_rate`` is a scalar or a schedule ``count -> scalar``; ``None``
  means no scaling.
  """
  if learning_rate is None:
    return base.identity()
  checks.check_learning_rate(learning_rate, 'scale_by_learning_rate')
  m = -1 if flip_sign else 1
  if callable(learning_rate):
    return scale_by_schedule(lambda count: m * learning_rate(count))
  return scale(m * learning_rate)


class TraceState(NamedTuple):
  trace: base.Params


def trace(
    decay: jax.typing.ArrayLike,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Heavy-ball momentum: a trace of past updates.

  .. math::
    m_t = g_t + \mu m_{t-1}, \qquad u_t = m_t \; (\text{or } g_t + \mu m_t
    \text{ with Nesterov})

  Args:
    decay: the momentum coefficient ``mu``, in ``[0, 1)``.
    nesterov: use Nesterov's look-ahead form.
    accumulator_dtype: dtype of ``m``; ``None`` keeps the params' dtype.

  References:
    Polyak, Some methods of speeding up the convergence of iteration methods,
    1964; Sutskever et al., On the importance of initialization and momentum in
    deep learning, 2013.
  """
  checks.check_decay('decay', decay, fn='trace')
  accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

  def init_fn(params):
    return TraceState(trace=otu.tree_zeros_like(params, dtype=accumulator_dtype))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    f = lambda g, t: g + decay * t  # noqa: E731
    new_trace = jax.tree.map(
        lambda g, t: None if g is None else f(g, t),
        updates,
        state.trace,
        is_leaf=lambda g: g is None,
    )
    updates = jax.tree.map(f, updates, new_trace) if nesterov else new_trace
    new_trace = otu.tree_cast(new_trace, accumulator_dtype)
    return updates, TraceState(trace=new_trace)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
