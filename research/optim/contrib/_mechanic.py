"""Mechanic: learns the scale of any base optimizer's updates online."""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = ['MechanicState', 'mechanize']


class MechanicState(NamedTuple):
  base_optimizer_state: base.OptState
  count: jax.Array  # int32, number of updates so far
  r: jax.Array  # (num_betas,) reward of each bettor
  m: jax.Array  # (num_betas,) running max of |h|
  v: jax.Array  # (num_betas,) discounted sum of h^2
  s: jax.Array  # (num_betas,) scale bet by each bettor; the scale is sum(s)
  x0: base.Updates  # reference point: the params at the first update


def mechanize(
    base_optimizer: Union[base.GradientTransformation,
                          base.GradientTransformationExtraArgs],
    weight_decay: jax.typing.ArrayLike = 1e-2,
    eps: jax.typing.ArrayLike = 1e-8,
    s_init: jax.typing.ArrayLike = 1e-6,
    num_betas: int = 6,
) -> base.GradientTransformationExtraArgs:
  r"""Wraps ``base_optimizer`` so that its updates are rescaled by a learned ``s``.

  Params are kept as ``x_t = x_0 + S \Delta_t`` with ``S = sum_i s_i`` and
  ``Delta_t`` the sum of the base optimizer's updates ``d_t``. Per step, with
  ``beta_i = 1 - 10^{-i}`` for ``i = 1..num_betas``:

  .. math::
    \tilde g_t = g_t + w\, S \frac{\|g_t\|}{\|x_t\| + \epsilon} x_t, \quad
    h_t = \langle \tilde g_t, \Delta_{t-1} \rangle, \quad
    \Delta_{t-1} = (x_0 - x_t) / (S + \epsilon), \\
    m_i = \max(\beta_i m_i, |h_t| + \epsilon), \quad
    v_i = \beta_i^2 v_i + h_t^2, \quad
    r_i = \beta_i r_i + \mathrm{clip}(h_t, \pm m_i^{old})\, s_i, \\
    s_i = \frac{s_{init} m_i / n + \max(r_i, 0)}{\sqrt{v_i} + \epsilon},
    \quad x_{t+1} = x_0 - \big(\textstyle\sum_i s_i\big)(\Delta_{t-1} - d_t)

  and the update is ``x_{t+1} - x_t``. ``x_0`` is taken at the first update,
  not at init, so that params loaded after init are the reference. Sign
  convention: ``Delta`` is the negated sum, as ``d_t`` already carries the
  base optimizer's descent sign.

  Args:
    base_optimizer: the optimizer whose updates are rescaled (its learning
      rate is best set to 1 or a schedule peaking at 1).
    weight_decay: ``w >= 0``, Mechanic's own decay (not the base one's).
    eps: ``> 0`` (at zero, a step without progress gives 0 / 0).
    s_init: ``s_{init} > 0``, the initial scale of each bettor.
    num_betas: ``n >= 1``, the number of bettors (discount factors).

  References:
    Cutkosky, Defazio & Mehta, Mechanic: a learning rate tuner, 2023.
  """
  fn = 'mechanize'
  checks.check_non_negative('weight_decay', weight_decay, fn=fn)
  checks.check_positive('eps', eps, fn=fn)
  checks.check_positive('s_init', s_init, fn=fn)
  if isinstance(num_betas, bool) or not isinstance(num_betas, int) or num_betas < 1:
    raise ValueError(
        f'{fn}: num_betas={num_betas!r} is out of range; allowed: an int >= 1.')
  base_optimizer = base.with_extra_args_support(base_optimizer)

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    zeros = jnp.zeros([num_betas], dtype)
    return MechanicState(
        base_optimizer_state=base_optimizer.init(params),
        count=jnp.zeros([], jnp.int32),
        r=zeros, m=zeros, v=zeros,
        s=jnp.ones([num_betas], dtype) * s_init,
        x0=params,
    )

  def update_fn(updates, state, params=None, **extra_args):
    checks.require_params(params, fn)
    # Operations in Optax's order (the same program): the decay factor is
    # evaluated in each leaf's expression, the count incremented first.
    count = otu.safe_increment(state.count)
    base_updates, base_state = base_optimizer.update(
        updates, state.base_optimizer_state, params, **extra_args)
    x0 = jax.lax.cond(state.count == 0, lambda: params, lambda: state.x0)
    total = jnp.sum(state.s)
    grad_norm = otu.tree_norm(updates)
    param_norm = otu.tree_norm(params)
    updates = jax.tree.map(
        lambda g, p: g + weight_decay * total * grad_norm / (param_norm + eps) * p,
        updates, params)
    delta_prev = jax.tree.map(lambda x, x_0: (x_0 - x) / (total + eps), params, x0)
    delta = jax.tree.map(lambda d, u: d - u, delta_prev, base_updates)
    h = otu.tree_vdot(updates, delta_prev)
    # The clip of h (not in the paper) bounds a single step's reward.
    clipped_h = jax.lax.clamp(-state.m, jnp.ones_like(state.m) * h, state.m)
    betas = jnp.array([1.0 - 0.1**i for i in range(1, num_betas + 1)],
                      dtype=state.s.dtype)
    m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
    v = (betas**2) * state.v + h**2
    r = betas * state.r + clipped_h * state.s
    r_plus = jnp.maximum(0.0, r)
    wealth = (s_init / jnp.size(betas)) * m + r_plus
    s = wealth / (jnp.sqrt(v) + eps)
    new_params = jax.tree.map(lambda x_0, d: x_0 - jnp.sum(s) * d, x0, delta)
    updates = jax.tree.map(lambda new, old: new - old, new_params, params)
    return updates, MechanicState(
        base_optimizer_state=base_state, count=count,
        r=r, m=m, v=v, s=s, x0=x0)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
