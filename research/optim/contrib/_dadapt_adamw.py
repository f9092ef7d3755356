"""D-Adaptation for AdamW: the step size estimated from the distance travelled."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = ['DAdaptAdamWState', 'dadapt_adamw']


class DAdaptAdamWState(NamedTuple):
  exp_avg: base.Updates  # m, the first moment of d_k * g
  exp_avg_sq: base.Updates  # v, the second moment of g
  grad_sum: base.Updates  # s, an EMA of d_k * g
  estim_lr: jax.Array  # d_k, the distance estimate (scalar)
  numerator_weighted: jax.Array  # r_k, the EMA of d_k <g, s / sqrt(v)>
  count: jax.Array  # int32, number of updates so far


def dadapt_adamw(
    learning_rate: base.ScalarOrSchedule = 1.0,
    betas: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] = (0.9, 0.999),
    eps: jax.typing.ArrayLike = 1e-8,
    estim_lr0: jax.typing.ArrayLike = 1e-6,
    weight_decay: jax.typing.ArrayLike = 0.0,
) -> base.GradientTransformationExtraArgs:
  r"""AdamW whose learning rate is the D-Adaptation estimate of ``||x_0 - x_*||``.

  With ``gamma_k`` the schedule at step ``k`` (from 0) and
  ``sqrt(beta_2)`` written ``b``:

  .. math::
    \lambda_k = d_k \gamma_k \sqrt{1 - \beta_2^{k+1}} / (1 - \beta_1^{k+1}),
    \quad a_k = \langle g_k, s_k / (\sqrt{v_k} + \epsilon) \rangle, \\
    m_{k+1} = \beta_1 m_k + (1 - \beta_1) \lambda_k g_k, \quad
    v_{k+1} = \beta_2 v_k + (1 - \beta_2) g_k^2, \quad
    s_{k+1} = b s_k + (1 - b) \lambda_k g_k, \\
    r_{k+1} = b r_k + (1 - b) \lambda_k a_k, \quad
    d_{k+1} = \max\big(d_k, r_{k+1} / ((1 - b) \|s_{k+1}\|_1)\big), \\
    u_k = -\lambda_k w\, x_k - m_{k+1} / (\sqrt{v_{k+1}} + \epsilon)

  The learning rate is already inside ``m``: the result is the final update
  (no sign flip follows). Use a schedule that peaks at 1.

  Args:
    learning_rate: ``gamma``, a scalar ``>= 0`` or a schedule (peak 1).
    betas: ``(beta_1, beta_2)``, each in ``[0, 1)``.
    eps: added to the root, ``>= 0``.
    estim_lr0: ``d_0 > 0``, an under-estimate of the distance to a solution.
    weight_decay: ``w >= 0``, decoupled, multiplied by ``lambda_k``.

  References:
    Defazio & Mishchenko, Learning-rate-free learning by D-adaptation, 2023.
  """
  fn = 'dadapt_adamw'
  checks.check_learning_rate(learning_rate, fn)
  if not isinstance(betas, (tuple, list)) or len(betas) != 2:
    raise ValueError(
        f'{fn}: betas={betas!r} is not allowed; allowed: a pair '
        '(beta_1, beta_2).')
  beta1, beta2 = betas
  checks.check_decay('betas[0]', beta1, fn=fn)
  checks.check_decay('betas[1]', beta2, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_positive('estim_lr0', estim_lr0, fn=fn)
  checks.check_non_negative('weight_decay', weight_decay, fn=fn)
  sqrt_beta2 = beta2**0.5

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    return DAdaptAdamWState(
        exp_avg=otu.tree_zeros_like(params),
        exp_avg_sq=otu.tree_zeros_like(params),
        grad_sum=otu.tree_zeros_like(params),
        estim_lr=jnp.asarray(estim_lr0, dtype=dtype),
        numerator_weighted=jnp.zeros([], dtype),
        count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
    count = otu.safe_increment(state.count)
    correction = (1 - beta2**count) ** 0.5 / (1 - beta1**count)
    step = (state.estim_lr * gamma * correction).astype(
        state.numerator_weighted.dtype)
    preconditioned_sum = jax.tree.map(
        lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq)
    alignment = otu.tree_vdot(updates, preconditioned_sum)
    exp_avg = jax.tree.map(
        lambda m, g: beta1 * m + (1 - beta1) * step * g, state.exp_avg, updates)
    exp_avg_sq = jax.tree.map(
        lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
    grad_sum = jax.tree.map(
        lambda s, g: sqrt_beta2 * s + (1 - sqrt_beta2) * step * g,
        state.grad_sum, updates)
    # The l1 norm before the numerator, in Optax's order (the same program).
    grad_sum_l1 = otu.tree_sum(jax.tree.map(jnp.abs, grad_sum))
    numerator = (sqrt_beta2 * state.numerator_weighted
                 + (1 - sqrt_beta2) * step * alignment)
    estim_lr = jnp.maximum(
        state.estim_lr, numerator / ((1 - sqrt_beta2) * grad_sum_l1))
    updates = jax.tree.map(
        lambda m, v, p: -weight_decay * step * p - m / (jnp.sqrt(v) + eps),
        exp_avg, exp_avg_sq, params)
    return updates, DAdaptAdamWState(
        exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum,
        estim_lr=estim_lr, numerator_weighted=numerator, count=count)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
