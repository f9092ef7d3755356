"""Constraints on the params, enforced through the updates.

Each of these goes last in a chain: it sees the final updates ``u`` and the
current params ``p`` and returns ``u'`` such that ``p + u'`` satisfies the
constraint.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim import wrappers

__all__ = [
    'NonNegativeParamsState',
    'ZeroNansState',
    'keep_params_nonnegative',
    'max_norm',
    'zero_nans',
]

NonNegativeParamsState = base.EmptyState


def keep_params_nonnegative() -> base.GradientTransformationExtraArgs:
  r"""Keeps the params non-negative: where ``p + u < 0`` the update is ``-p``.

  .. math::
    u \leftarrow \begin{cases} -p & p + u < 0 \\ u & \text{otherwise} \end{cases}

  Place it last in the chain. Negative params are moved to 0. Needs the params.

  References:
    Lee & Seung, Algorithms for non-negative matrix factorization, 2001.
  """

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'keep_params_nonnegative')
    updates = jax.tree.map(
        lambda p, u: None if p is None else jnp.where((p + u) < 0.0, -p, u),
        params, updates, is_leaf=lambda x: x is None,
    )
    return updates, state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class ZeroNansState(NamedTuple):
  """``found_nan``: per leaf, whether the last updates had a NaN there."""

  found_nan: Any


def zero_nans() -> base.GradientTransformationExtraArgs:
  r"""Replaces NaNs in the updates with zeros: ``u <- where(isnan(u), 0, u)``.

  The state records, per leaf, whether a NaN was found in the last call; the
  transformation itself does not read it.
  """

  def init_fn(params):
    return ZeroNansState(
        found_nan=jax.tree.map(lambda _: jnp.array(False, jnp.bool_), params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del state, params, extra_args
    found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
    updates = jax.tree.map(
        lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates
    )
    return updates, ZeroNansState(found_nan=found)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


Axis = Optional[Union[int, tuple[int, ...]]]


def _kernels_only(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _check_axis(axis):
  axes = axis if isinstance(axis, tuple) else (axis,)
  if axis is not None and not all(isinstance(a, int) for a in axes):
    raise ValueError(
        f'max_norm: axis={axis!r} is not allowed; allowed: an int, a tuple of '
        'ints, or None.'
    )


def max_norm(
    max_value: float,
    axis: Axis = 0,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Max-norm constraint: after the step, each unit's incoming weights have
  L2 norm at most ``max_value``.

  With ``w = p + u`` and the norm taken over ``axis`` (one norm per unit),

  .. math::
    u' = \begin{cases} w \, r / \|w\| - p & \|w\| > r \\ u & \text{otherwise}
    \end{cases}

  so ``p + u'`` is the projection of ``p + u`` onto the ball of radius ``r``;
  units already inside keep their update unchanged. This is Keras'
  ``max_norm`` constraint. For a Dense kernel ``(in, out)`` use ``axis=0``;
  for a conv kernel ``(h, w, in, out)`` use ``axis=(0, 1, 2)``. Place it last
  in the chain; it needs the params. Not in Optax.

  Args:
    max_value: ``r > 0``.
    axis: the axes of one unit's incoming weights (an int, a tuple, or
      ``None`` for the whole leaf).
    mask: which leaves to constrain, as in :func:`masked` (a pytree of bools or
      a function of the params). ``None`` selects the leaves with at least two
      dimensions, so biases and normalization scales are left alone.

  References:
    Srivastava et al., Dropout: a simple way to prevent neural networks from
    overfitting, 2014.
  """
  checks.check_positive('max_value', max_value, fn='max_norm')
  _check_axis(axis)

  def project(u, p):
    w = p + u
    norm = jnp.sqrt(jnp.sum(otu.abs_sq(w), axis=axis, keepdims=True))
    outside = norm > max_value
    # Where inside, divide by 1 instead of the norm: no 0/0 for zero units.
    scale = max_value / jnp.where(outside, norm, 1.0)
    return jnp.where(outside, (w * scale.astype(w.dtype) - p).astype(u.dtype), u)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'max_norm')
    return jax.tree.map(project, updates, params), state

  inner = base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)
  return wrappers.masked(inner, _kernels_only if mask is None else mask)
