"""MADGRAD: momentumised, adaptive dual averaging."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = ['MadgradState', 'madgrad', 'scale_by_madgrad']


class MadgradState(NamedTuple):
  count: jax.Array  # int32, k, number of updates so far
  grad_sum_sq: base.Updates  # v_k = sum_i lambda_i g_i^2
  s: base.Updates  # s_k = sum_i lambda_i g_i
  x0: base.Params  # the params at init


def _check_args(fn, learning_rate, momentum, eps):
  checks.check_learning_rate(learning_rate, fn)
  checks.check_decay('momentum', momentum, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)


def scale_by_madgrad(
    learning_rate: base.ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
) -> base.GradientTransformationExtraArgs:
  r"""MADGRAD's step: a dual average with a cube-root preconditioner, then momentum.

  With ``k`` the number of previous updates and ``gamma_k`` the learning rate:

  .. math::
    \lambda_k = (\gamma_k + \epsilon) \sqrt{k + 1}, \quad
    s_{k+1} = s_k + \lambda_k g_k, \quad
    v_{k+1} = v_k + \lambda_k g_k^2, \\
    z_{k+1} = x_0 - s_{k+1} / (v_{k+1}^{1/3} + \epsilon), \quad
    x_{k+1} = (1 - c) z_{k+1} + c\, x_k, \quad u_k = x_{k+1} - x_k

  The learning rate is part of the rule (it weights the averages), so the
  result is the final update; it needs ``params``.

  Args:
    learning_rate: ``gamma >= 0``, a scalar or a schedule.
    momentum: ``c`` in ``[0, 1)``.
    eps: ``>= 0``, added to the learning rate and to the cube root.

  References:
    Defazio & Jelassi, Adaptivity without compromise: a momentumized,
    adaptive, dual averaged gradient method for stochastic optimization, 2021.
  """
  fn = 'scale_by_madgrad'
  _check_args(fn, learning_rate, momentum, eps)

  def init_fn(params):
    return MadgradState(
        count=jnp.zeros([], jnp.int32),
        grad_sum_sq=otu.tree_zeros_like(params),
        s=otu.tree_zeros_like(params),
        x0=jax.tree.map(lambda p: p, params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
    weight = (gamma + eps) * jnp.sqrt(state.count + 1)
    # The products are cast to the gradients' dtype: no promotion of the sums.
    grad_sum_sq = jax.tree.map(
        lambda v, g: v + (weight * g**2).astype(g.dtype), state.grad_sum_sq, updates)
    s = jax.tree.map(
        lambda s, g: s + (weight * g).astype(g.dtype), state.s, updates)
    # One stage at a time over the tree, as Optax does (the same program).
    sigma = jax.tree.map(lambda v: jnp.cbrt(v) + eps, grad_sum_sq)
    z = jax.tree.map(lambda x0, s, sig: x0 - s / sig, state.x0, s, sigma)
    x_new = jax.tree.map(
        lambda z, x: (1 - momentum) * z + momentum * x, z, params)
    updates = jax.tree.map(jnp.subtract, x_new, params)
    return updates, MadgradState(
        count=otu.safe_increment(state.count), grad_sum_sq=grad_sum_sq, s=s,
        x0=state.x0)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def madgrad(
    learning_rate: base.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> base.GradientTransformationExtraArgs:
  r"""MADGRAD: an L2 penalty on the gradients, then :func:`scale_by_madgrad`.

  .. math::
    g_k \leftarrow g_k + w\, x_k, \qquad
    x_{k+1} = (1 - c)\big(x_0 - s_{k+1} / (v_{k+1}^{1/3} + \epsilon)\big)
    + c\, x_k

  Args:
    learning_rate: ``gamma >= 0``, a scalar or a schedule.
    momentum: ``c`` in ``[0, 1)``.
    weight_decay: ``w >= 0``, added to the gradients (not decoupled).
    eps: ``>= 0``.

  References:
    Defazio & Jelassi, Adaptivity without compromise: a momentumized,
    adaptive, dual averaged gradient method for stochastic optimization, 2021.
  """
  _check_args('madgrad', learning_rate, momentum, eps)
  checks.check_non_negative('weight_decay', weight_decay, fn='madgrad')
  return base.chain(
      adding.add_decayed_weights(weight_decay),
      scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps),
  )
