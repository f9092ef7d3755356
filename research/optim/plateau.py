"""Performance scheduling: scale the updates down when a metric stops improving.

The transform reads the monitored metric from ``update(..., value=metric)``;
its state's ``scale`` is the factor applied to the updates, for logging.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'ReduceLROnPlateauState',
    'reduce_on_plateau',
]


class ReduceLROnPlateauState(NamedTuple):
  scale: jax.Array  # the factor applied to the updates; starts at 1
  best_value: jax.Array  # best evaluated metric so far (+inf / -inf at first)
  plateau_count: jax.Array  # int32, evaluations without improvement
  cooldown_count: jax.Array  # int32, evaluations left in the cooldown
  count: jax.Array  # int32, values accumulated towards the next evaluation
  avg_value: jax.Array  # running mean of those values


def _extreme_dtype(tree, pick):
  """The highest (``max``) or lowest (``min``) float dtype among the leaves."""
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(tree)]
  dtypes = [d for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
  if not dtypes:
    return jnp.asarray(0.0).dtype
  return pick(dtypes, key=lambda d: jnp.finfo(d).bits)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
    mode: str = 'min',
) -> base.GradientTransformationExtraArgs:
  r"""Multiplies the updates by a scale that drops by ``factor`` on plateaus.

  Every ``accumulation_size`` updates the mean ``v`` of the ``value``\ s
  passed since the last evaluation is evaluated against the best value so
  far, ``b``. With mode ``'min'`` it is an improvement when

  .. math::
    v < b - \max(\text{atol}, \text{rtol}\,|b|)

  (mode ``'max'``: ``v > b + max(atol, rtol |b|)``); the first finite value
  always improves. The margin is measured on ``|b|``, so the test works for
  metrics of any sign, zero included. (Optax's ``v < (1 - rtol) b - atol``
  puts the threshold *above* a negative ``b`` when ``atol < rtol |b|``: a
  loss that stagnates, or even worsens a little, counts as improving and the
  scale never drops.)

  An improvement sets ``b = v`` and resets the plateau count. During a
  cooldown (the ``cooldown`` evaluations after a reduction) the plateau count
  stays at 0. Otherwise each evaluation without improvement adds one to it,
  and when it reaches ``patience`` the scale becomes
  ``max(scale * factor, min_scale)`` (if it is above ``min_scale``), the
  plateau count is reset and the cooldown starts. The updates are multiplied
  by the scale after this evaluation.

  This is Keras' ``ReduceLROnPlateau(factor, patience, min_delta, cooldown,
  min_lr, mode)`` on a scale instead of the learning rate, with two
  differences: ``min_delta`` becomes ``max(atol, rtol |b|)``, and a cooldown
  of ``c`` ignores exactly ``c`` evaluations (Keras' code resumes counting
  on the ``c``-th, so its ``cooldown=1`` does nothing). It differs from
  ``optax.contrib.reduce_on_plateau`` (same argument names) in the
  improvement test above, in ``patience=0`` (reduce on every evaluation
  without improvement; Optax never reduces), in allowing ``rtol = atol = 0``
  (strict improvement), in counters that keep running once the scale is at
  ``min_scale`` (as Keras), and in ``mode``.

  To monitor a validation metric measured once per epoch, pass its latest
  value at every update and set ``accumulation_size`` to the updates per
  epoch; or pass the training loss of each batch to average it.

  Args:
    factor: the scale's multiplier on a plateau, in ``(0, 1)``.
    patience: evaluations without improvement before a reduction, ``>= 0``.
    rtol: relative improvement margin, in ``[0, 1]``.
    atol: absolute improvement margin, ``>= 0``.
    cooldown: evaluations ignored after a reduction, ``>= 0``.
    accumulation_size: updates averaged into one evaluation, ``>= 1``.
    min_scale: the scale never drops below this, ``>= 0``.
    mode: ``'min'`` for a loss, ``'max'`` for an accuracy.

  Returns:
    A transformation whose ``update`` needs ``value=``; its state is a
    :class:`ReduceLROnPlateauState`.

  References:
    Géron, Hands-On Machine Learning with Scikit-Learn, Keras and TensorFlow,
    ch. 11, 2019 (performance scheduling); Keras, ReduceLROnPlateau.
  """
  fn = 'reduce_on_plateau'
  checks.check_range('factor', factor, 0.0, 1.0, low_inclusive=False,
                     high_inclusive=False, fn=fn)
  checks.check_non_negative('patience', patience, fn)
  checks.check_range('rtol', rtol, 0.0, 1.0, fn=fn)
  checks.check_non_negative('atol', atol, fn)
  checks.check_non_negative('cooldown', cooldown, fn)
  checks.check_range('accumulation_size', accumulation_size, 1, None, fn=fn)
  checks.check_non_negative('min_scale', min_scale, fn)
  checks.check_choice('mode', mode, ('min', 'max'), fn)
  sign = 1.0 if mode == 'min' else -1.0

  def init_fn(params):
    metric_dtype = _extreme_dtype(params, max)
    return ReduceLROnPlateauState(
        scale=jnp.ones([], _extreme_dtype(params, min)),
        best_value=jnp.asarray(sign * jnp.inf, metric_dtype),
        plateau_count=jnp.zeros([], jnp.int32),
        cooldown_count=jnp.zeros([], jnp.int32),
        count=jnp.zeros([], jnp.int32),
        avg_value=jnp.zeros([], metric_dtype),
    )

  def evaluate(state):
    value, best = state.avg_value, state.best_value
    margin = jnp.maximum(atol, rtol * jnp.abs(best))
    improved = jnp.where(
        jnp.isfinite(best),
        sign * value < sign * best - margin,
        sign * value < jnp.inf,  # the first finite value (not NaN) improves
    )
    best = jnp.where(improved, value, best)
    in_cooldown = state.cooldown_count > 0
    plateau = jnp.where(
        improved | in_cooldown, 0, otu.safe_increment(state.plateau_count)
    )
    reduce = (plateau >= patience) & ~improved & ~in_cooldown
    reduce &= state.scale > min_scale
    scale = jnp.where(
        reduce, jnp.maximum(state.scale * factor, min_scale), state.scale
    ).astype(state.scale.dtype)
    cooldown_count = jnp.where(
        reduce, cooldown, jnp.maximum(state.cooldown_count - 1, 0)
    ).astype(jnp.int32)
    return ReduceLROnPlateauState(
        scale=scale,
        best_value=best,
        plateau_count=jnp.where(reduce, 0, plateau).astype(jnp.int32),
        cooldown_count=cooldown_count,
        count=jnp.zeros([], jnp.int32),
        avg_value=jnp.zeros_like(state.avg_value),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del params, extra_args
    if value is None:
      raise ValueError(
          f'{fn}: update needs the monitored metric, as '
          'update(updates, state, params, value=metric); got no value.'
      )
    new_count = otu.safe_increment(state.count)
    total = state.count * state.avg_value + jnp.asarray(value).astype(
        state.avg_value.dtype)
    state = state._replace(
        count=new_count,
        avg_value=(total / new_count).astype(state.avg_value.dtype),
    )
    # A select rather than lax.cond: a few scalar ops, cheap also eagerly.
    due = new_count >= accumulation_size
    state = jax.tree.map(
        lambda new, old: jnp.where(due, new, old), evaluate(state), state
    )
    updates = jax.tree.map(
        lambda g: None if g is None else (state.scale * g).astype(g.dtype),
        updates,
        is_leaf=lambda g: g is None,
    )
    return updates, state

  return base.GradientTransformationExtraArgs(init_fn, update_fn)

