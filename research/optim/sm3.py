"""SM3: Adagrad with one accumulator per slice instead of per entry.

For a leaf of shape ``(n_1, ..., n_k)`` SM3 keeps ``k`` vectors, one per axis
(``sum n_i`` numbers instead of ``prod n_i``). Each entry's squared-gradient
sum is bounded by the minimum over the slices that contain it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'ScaleBySM3State',
    'scale_by_sm3',
    'sm3',
]


class ScaleBySM3State(NamedTuple):
  mu: base.Updates  # per leaf: a list of per-axis accumulators
  nu: base.Updates  # the momentum of the preconditioned gradients


def _axis_accumulators(p: jax.Array) -> list[jax.Array]:
  """Zeros for each axis of ``p``; a vector or scalar keeps one full copy."""
  if p.ndim < 2:
    return [jnp.zeros_like(p)]
  return [jnp.zeros((n,), p.dtype) for n in p.shape]


def _axis_slices(g: jax.Array, acc: list[jax.Array]) -> list[jax.Array]:
  """Each axis accumulator reshaped to broadcast against ``g``."""
  if g.ndim < 2:
    return list(acc)
  return [
      jnp.reshape(a, [n if j == i else 1 for j, n in enumerate(g.shape)])
      for i, a in enumerate(acc)
  ]


def _cover_bound(slices: list[jax.Array]) -> jax.Array:
  """``min_r mu(r)`` over the slices through each entry."""
  return functools.reduce(jnp.minimum, slices)


def _slice_maxima(accum: jax.Array) -> list[jax.Array]:
  """The new per-axis accumulators: the max of ``accum`` over each slice."""
  if accum.ndim < 2:
    return [accum]
  axes = range(accum.ndim)
  return [
      jnp.max(accum, axis=tuple(j for j in axes if j != i)) for i in axes
  ]


def _new_sum_weight(b2):
  # b2 = 1 is a plain sum (SM3 proper); b2 < 1 an exponential moving average.
  if checks.is_concrete_number(b2):
    return 1.0 if b2 == 1.0 else 1.0 - b2
  return jnp.where(b2 == 1.0, 1.0, 1.0 - b2)


def _reject_complex(params, fn):
  if any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params)):
    raise ValueError(f'{fn}: complex params are not supported.')


def scale_by_sm3(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-8,
) -> base.GradientTransformationExtraArgs:
  r"""SM3-II preconditioning with momentum.

  For a leaf with axes ``i = 1..k`` and accumulators ``mu_i`` (one entry per
  slice along axis ``i``):

  .. math::
    \nu_t = c\, g_t^2 + \beta_2 \min_i \mu_{i, t-1}, \qquad
    \mu_{i, t} = \max_{\text{slice along } i} \nu_t,

  .. math::
    m_t = (1 - \beta_1) \frac{g_t}{\sqrt{\nu_t + \epsilon}} + \beta_1 m_{t-1},
    \qquad u_t = m_t,

  with ``c = 1`` if ``beta_2 = 1`` else ``1 - beta_2``, and ``0`` where
  ``nu_t = 0``. Vectors (and scalars, an extension: Optax fails on them) keep
  a full per-entry accumulator, i.e. Adagrad.

  Args:
    b1: ``beta_1``, the momentum decay, in ``[0, 1)``.
    b2: ``beta_2``, the accumulator decay, in ``[0, 1]`` (``1``: a sum).
    eps: ``epsilon``, added under the square root, ``>= 0``.

  References:
    Anil et al., Memory-efficient adaptive optimization, 2019.
  """
  fn = 'scale_by_sm3'
  checks.check_decay('b1', b1, fn=fn)
  checks.check_range('b2', b2, 0.0, 1.0, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)

  def init_fn(params):
    _reject_complex(params, fn)
    return ScaleBySM3State(
        mu=jax.tree.map(_axis_accumulators, params),
        nu=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    weight = _new_sum_weight(b2)
    # One tree-wide pass per stage (reshape, accumulate, invert, scale), in
    # the order that makes the jitted step lower to the same program as
    # Optax's.
    slices = jax.tree.map(_axis_slices, updates, state.mu)
    accum = jax.tree.map(
        lambda g, s: weight * g**2 + b2 * _cover_bound(s), updates, slices
    )
    inv_sqrt = jax.tree.map(
        lambda a: jnp.where(a > 0, jax.lax.rsqrt(a + eps), 0.0), accum
    )
    preconditioned = jax.tree.map(lambda g, r: g * r, updates, inv_sqrt)
    nu = otu.tree_update_moment(preconditioned, state.nu, b1, 1)
    mu = jax.tree.map(_slice_maxima, accum)
    return nu, ScaleBySM3State(mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def sm3(
    learning_rate: base.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike = 0.9,
) -> base.GradientTransformationExtraArgs:
  r"""The SM3 optimizer: :func:`scale_by_sm3` with ``b1 = momentum``.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t m_t

  Args:
    learning_rate: ``eta``; a scalar or (an extension: Optax takes only a
      scalar) a schedule of the step count.
    momentum: the momentum decay ``beta_1``, in ``[0, 1)``.

  References:
    Anil et al., Memory-efficient adaptive optimization, 2019.
  """
  checks.check_learning_rate(learning_rate, 'sm3')
  checks.check_decay('momentum', momentum, fn='sm3')
  return base.chain(
      scale_by_sm3(momentum),
      transform.scale_by_learning_rate(learning_rate),
  )
