"""MoMo: SGD with momentum (or Adam) whose step is a truncated Polyak step.

Both methods keep exponential averages of the gradients ``d``, of the loss
values ``f_bar`` and of ``<g, x>`` (``gamma``): together a linear model of
the loss, ``f(x') ~ f_bar - gamma + <d, x'>``. The step along ``d`` is the
smaller of the learning rate and the step that brings this model down to a
known lower bound of the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = [
    'MomoAdamState',
    'MomoState',
    'momo',
    'momo_adam',
]

# Below this squared norm of the averaged direction the step is zero. The
# threshold is float64's machine epsilon in every precision, as in Optax.
_MIN_SQ_NORM = float(jnp.finfo(float).eps)


class MomoState(NamedTuple):
  exp_avg: base.Updates  # d, the EMA of the gradients
  barf: jax.Array  # f_bar, the EMA of the loss values
  gamma: jax.Array  # the EMA of <g_k, x_k>
  lb: jax.Array  # the current lower bound of the loss
  count: jax.Array  # int32, updates so far


class MomoAdamState(NamedTuple):
  exp_avg: base.Updates  # d, the EMA of the gradients
  exp_avg_sq: base.Updates  # v, the EMA of the squared gradients
  barf: jax.Array  # f_bar, the EMA of the loss values
  gamma: jax.Array  # the EMA of <g_k, x_k>
  lb: jax.Array  # the current lower bound of the loss
  count: jax.Array  # int32, updates so far


def _check_momo_args(fn, learning_rate, weight_decay, **betas):
  checks.check_learning_rate(learning_rate, fn)
  checks.check_non_negative('weight_decay', weight_decay, fn)
  for name, value in betas.items():
    checks.check_decay(name, value, fn)


def _init_scalars(params, lower_bound):
  """``f_bar``, ``gamma`` and the lower bound in the params' lowest dtype."""
  dtype = _state_dtype.lowest_dtype(params)
  zero = jnp.zeros([], dtype)
  return zero, zero, jnp.asarray(lower_bound, dtype)


def _require_value(fn, params, value):
  checks.require_params(params, fn)
  if value is None:
    raise ValueError(
        f'{fn}: update needs the loss at the current params, as '
        'update(grads, state, params, value=loss); got no value.'
    )


def _learning_rate_at(learning_rate, state):
  """The step cap; a schedule's value in the state's dtype, so that a float32
  schedule keeps bfloat16 params' state in bfloat16 (Optax's momo fails
  there under jit)."""
  if callable(learning_rate):
    return jnp.asarray(learning_rate(state.count), state.barf.dtype)
  return learning_rate


def _ema(beta, old, new):
  return beta * old + (1 - beta) * new


def _polyak_step(decay_factor, barf, lb, gamma, iprod, sq_norm, max_step,
                 max_step_divisor=None):
  """``min(max_step, max(0, (1 + a lam) (f_bar - lb - gamma) + <d, x>) / n)``,
  zero when the squared norm ``n`` of the direction is (nearly) zero
  (``max_step / max_step_divisor`` is divided last, as in Optax)."""
  step = jnp.maximum(decay_factor * (barf - lb - gamma) + iprod, 0.0) / sq_norm
  step = jnp.where(sq_norm <= _MIN_SQ_NORM, 0.0, step)
  if max_step_divisor is not None:
    max_step = max_step / max_step_divisor
  return jnp.minimum(max_step, step)


def _decayed_step(alpha, weight_decay, tau, exp_avg, params, denom=None):
  """``-(a lam / (1 + a lam)) x - tau d [/ D]``, leaf by leaf (the factor
  in each leaf's expression, as Optax writes it: the same program)."""
  if denom is None:
    return jax.tree.map(
        lambda d, p: -(alpha * weight_decay) / (1 + alpha * weight_decay) * p
        - tau * d, exp_avg, params)
  return jax.tree.map(
      lambda d, s, p: -(alpha * weight_decay) / (1 + alpha * weight_decay) * p
      - tau * d / s, exp_avg, denom, params)


def momo(
    learning_rate: base.ScalarOrSchedule = 1.0,
    beta: jax.typing.ArrayLike = 0.9,
    lower_bound: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    adapt_lower_bound: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""MoMo: SGD with momentum and a Polyak-type adaptive step size.

  With loss values :math:`f_k`, gradients :math:`g_k` at :math:`x_k` and
  :math:`\beta_k = \beta` except :math:`\beta_0 = 0` (the averages start at the
  first observation):

  .. math::
    d_k &= \beta_k d_{k-1} + (1 - \beta_k) g_k, \quad
    \bar f_k = \beta_k \bar f_{k-1} + (1 - \beta_k) f_k, \quad
    \gamma_k = \beta_k \gamma_{k-1} + (1 - \beta_k) \langle g_k, x_k\rangle \\
    \tau_k &= \min\Big(\alpha_k, \frac{\big((1 + \alpha_k\lambda)(\bar f_k -
      \ell_k - \gamma_k) + \langle d_k, x_k\rangle\big)_+}{\|d_k\|^2}\Big) \\
    x_{k+1} &= \frac{x_k}{1 + \alpha_k \lambda} - \tau_k d_k

  where :math:`\ell` is the lower bound of the loss (no step when
  :math:`\|d_k\|^2` is below float64's machine epsilon). The update returned is
  :math:`x_{k+1} - x_k`, so apply it without a learning rate. With
  ``adapt_lower_bound`` the bound is re-estimated from the model each step
  (never below ``lower_bound``).

  Args:
    learning_rate: the largest step :math:`\alpha_k`, a scalar or a schedule
      of the update count; large values (1) are the intended use.
    beta: the averaging rate :math:`\beta`, in ``[0, 1)``.
    lower_bound: :math:`\ell`, a lower bound of the loss (0 for most losses).
    weight_decay: :math:`\lambda \ge 0`.
    adapt_lower_bound: estimate the lower bound on the fly.

  Returns:
    A transformation whose ``update`` needs ``params`` and ``value=loss``; its
    state is a :class:`MomoState`.

  References:
    Schaipp, Ohana, Eickenberg, Defazio & Gower, MoMo: Momentum Models for
    Adaptive Learning Rates, 2024.
  """
  fn = 'momo'
  _check_momo_args(fn, learning_rate, weight_decay, beta=beta)

  def init_fn(params):
    barf, gamma, lb = _init_scalars(params, lower_bound)
    return MomoState(
        exp_avg=otu.tree_zeros_like(params), barf=barf, gamma=gamma, lb=lb,
        count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    _require_value(fn, params, value)
    b = jnp.where(state.count == 0, 0.0, beta)
    barf = _ema(b, state.barf, jnp.asarray(value, state.barf.dtype))
    exp_avg = jax.tree.map(lambda d, g: _ema(b, d, g), state.exp_avg, updates)
    # Written out (not _ema) so that Optax's operation order is kept.
    gamma = b * state.gamma + (1 - b) * otu.tree_vdot(updates, params)
    sq_norm = otu.tree_norm(exp_avg, squared=True)
    iprod = otu.tree_vdot(exp_avg, params)
    alpha = _learning_rate_at(learning_rate, state)
    decay_factor = 1 + alpha * weight_decay
    lb = state.lb
    if adapt_lower_bound:
      cap = decay_factor * (barf - gamma) + iprod
      lb = jnp.where(cap < decay_factor * lb,
                     jnp.maximum(cap / (2 * decay_factor), lower_bound), lb)
    tau = _polyak_step(decay_factor, barf, lb, gamma, iprod, sq_norm, alpha)
    new_updates = _decayed_step(alpha, weight_decay, tau, exp_avg, params)
    if adapt_lower_bound:
      new_lb = jnp.maximum(barf + iprod - gamma - 0.5 * tau * sq_norm,
                           lower_bound)
    else:
      new_lb = state.lb
    return new_updates, MomoState(
        exp_avg=exp_avg, barf=barf, gamma=gamma, lb=new_lb,
        count=otu.safe_increment(state.count),
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def momo_adam(
    learning_rate: base.ScalarOrSchedule = 1e-2,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    lower_bound: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    adapt_lower_bound: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""MoMo-Adam: Adam(W) with a Polyak-type adaptive step size.

  The averages of :func:`momo` with rate :math:`b_1` from zero (no special
  first step), Adam's second moment :math:`v_k` with rate :math:`b_2`, and
  with the bias corrections :math:`c_1 = 1 - b_1^k`, :math:`c_2 = 1 - b_2^k`:

  .. math::
    D_k &= \epsilon + \sqrt{v_k / c_2}, \qquad
    n_k = \langle d_k, d_k / D_k\rangle \\
    \tau_k &= \min\Big(\frac{\alpha_k}{c_1}, \frac{\big((1 + \alpha_k\lambda)
      (\bar f_k - c_1 \ell_k - \gamma_k) + \langle d_k, x_k\rangle\big)_+}
      {n_k}\Big) \\
    x_{k+1} &= \frac{x_k}{1 + \alpha_k \lambda} - \tau_k \frac{d_k}{D_k}

  The update returned is :math:`x_{k+1} - x_k`.

  Args:
    learning_rate: the largest step :math:`\alpha_k`, a scalar or a schedule.
    b1: the rate of the first moment and of the loss averages, in ``[0, 1)``.
    b2: the rate of the second moment, in ``[0, 1)``.
    eps: :math:`\epsilon \ge 0`, added outside the square root.
    lower_bound: :math:`\ell`, a lower bound of the loss.
    weight_decay: :math:`\lambda \ge 0`, decoupled as in AdamW.
    adapt_lower_bound: estimate the lower bound on the fly.

  Returns:
    A transformation whose ``update`` needs ``params`` and ``value=loss``; its
    state is a :class:`MomoAdamState`.

  References:
    Schaipp, Ohana, Eickenberg, Defazio & Gower, MoMo: Momentum Models for
    Adaptive Learning Rates, 2024.
  """
  fn = 'momo_adam'
  _check_momo_args(fn, learning_rate, weight_decay, b1=b1, b2=b2)
  checks.check_non_negative('eps', eps, fn)

  def init_fn(params):
    barf, gamma, lb = _init_scalars(params, lower_bound)
    return MomoAdamState(
        exp_avg=otu.tree_zeros_like(params),
        exp_avg_sq=otu.tree_zeros_like(params), barf=barf, gamma=gamma, lb=lb,
        count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    _require_value(fn, params, value)
    count = otu.safe_increment(state.count)
    barf = _ema(b1, state.barf, jnp.asarray(value, state.barf.dtype))
    exp_avg = jax.tree.map(lambda d, g: _ema(b1, d, g), state.exp_avg, updates)
    # b2 v + ((1 - b2) g) g, in Optax's association.
    exp_avg_sq = jax.tree.map(
        lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, updates)
    c2 = jnp.asarray(1 - b2**count, barf.dtype)
    denom = jax.tree.map(lambda v: eps + jnp.sqrt(v / c2), exp_avg_sq)
    sq_norm = otu.tree_vdot(
        exp_avg, jax.tree.map(lambda d, s: d / s, exp_avg, denom))
    gamma = b1 * state.gamma + (1 - b1) * otu.tree_vdot(updates, params)
    iprod = otu.tree_vdot(exp_avg, params)
    alpha = _learning_rate_at(learning_rate, state)
    c1 = jnp.asarray(1 - b1**count, barf.dtype)
    decay_factor = 1 + alpha * weight_decay
    lb = state.lb
    if adapt_lower_bound:
      cap = decay_factor * (barf - gamma) + iprod
      lb = jnp.where(cap < decay_factor * c1 * lb,
                     jnp.maximum(cap / (2 * c1 * decay_factor), lower_bound), lb)
    tau = _polyak_step(decay_factor, barf, c1 * lb, gamma, iprod, sq_norm,
                       alpha, c1)
    new_updates = _decayed_step(alpha, weight_decay, tau, exp_avg, params,
                                denom)
    if adapt_lower_bound:
      new_lb = jnp.maximum(
          (barf + iprod - gamma - 0.5 * tau * sq_norm) / c1, lower_bound)
    else:
      new_lb = state.lb
    return new_updates, MomoAdamState(
        exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, barf=barf, gamma=gamma,
        lb=new_lb, count=count,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
