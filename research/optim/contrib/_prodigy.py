"""Prodigy: AdamW whose learning rate is estimated from the distance travelled."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = [
    'ProdigyState',
    'prodigy',
]


class ProdigyState(NamedTuple):
  exp_avg: base.Updates  # m, the EMA of d g
  exp_avg_sq: base.Updates  # v, the EMA of (d g)^2
  grad_sum: base.Updates  # s, the beta3-discounted sum of (d^2 lr / d0) g
  params0: base.Updates  # x_0, the initial point
  estim_lr: jax.Array  # d, the estimate of the distance to the solution
  numerator_weighted: jax.Array  # r, the discounted sum of <g, x_0 - x> terms
  count: jax.Array  # int32, updates so far


def prodigy(
    learning_rate: base.ScalarOrSchedule = 1.0,
    betas: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] = (0.9, 0.999),
    beta3: Optional[jax.typing.ArrayLike] = None,
    eps: jax.typing.ArrayLike = 1e-8,
    estim_lr0: jax.typing.ArrayLike = 1e-6,
    estim_lr_coef: jax.typing.ArrayLike = 1.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    safeguard_warmup: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Prodigy: learning-rate-free AdamW.

  With :math:`(\beta_1, \beta_2) =` ``betas``, :math:`\beta_3` (default
  :math:`\sqrt{\beta_2}`), the schedule value :math:`\eta_k`, the distance
  estimate :math:`d_k` (from :math:`d_0 =` ``estim_lr0``) and the step size
  :math:`\delta_k = d_k \eta_k \sqrt{1 - \beta_2^k} / (1 - \beta_1^k)`:

  .. math::
    m_k &= \beta_1 m_{k-1} + (1 - \beta_1) d_k g_k, \qquad
    v_k = \beta_2 v_{k-1} + (1 - \beta_2) d_k^2 g_k^2 \\
    r_k &= \beta_3 r_{k-1} + \frac{d_k}{d_0} \delta_k
      \langle g_k, x_0 - x_k\rangle, \qquad
    s_k = \beta_3 s_{k-1} + \frac{\delta_k}{d_0} d_k g_k \\
    d_{k+1} &= \max\Big(d_k, c\,\frac{r_k}{\|s_k\|_1}\Big), \qquad
    x_{k+1} = x_k - \delta_k \Big(\frac{m_k}{\sqrt{v_k} + d_{k+1}\epsilon}
      + \lambda x_k\Big)

  with :math:`c =` ``estim_lr_coef``. With ``safeguard_warmup`` the factor
  :math:`\delta_k` in :math:`s_k` is replaced by :math:`d_k`, which keeps a
  warm-up schedule (small :math:`\eta_k`) from inflating the estimate. The
  update returned is :math:`x_{k+1} - x_k`: apply it without a learning rate.

  Args:
    learning_rate: the schedule :math:`\eta_k` multiplying the estimate; 1
      (the default) or a schedule peaking at 1.
    betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)``.
    beta3: :math:`\beta_3` in ``[0, 1)``; ``None`` for :math:`\sqrt{\beta_2}`.
    eps: :math:`\epsilon \ge 0`, scaled by the estimate.
    estim_lr0: :math:`d_0 > 0`, an underestimate of the distance.
    estim_lr_coef: :math:`c > 0`, multiplies the estimates.
    weight_decay: :math:`\lambda \ge 0`, decoupled as in AdamW.
    safeguard_warmup: leave the schedule out of the estimate's denominator.

  Returns:
    A transformation whose ``update`` needs ``params``; its state is a
    :class:`ProdigyState`.

  References:
    Mishchenko & Defazio, Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner, 2024.
  """
  fn = 'prodigy'
  checks.check_learning_rate(learning_rate, fn)
  if len(betas) != 2:
    raise ValueError(
        f'{fn}: betas={betas!r} has {len(betas)} entries; allowed: a pair '
        '(beta1, beta2).'
    )
  beta1, beta2 = betas
  checks.check_decay('betas[0]', beta1, fn)
  checks.check_decay('betas[1]', beta2, fn)
  checks.check_decay('beta3', beta3, fn)
  checks.check_non_negative('eps', eps, fn)
  checks.check_positive('estim_lr0', estim_lr0, fn)
  checks.check_positive('estim_lr_coef', estim_lr_coef, fn)
  checks.check_non_negative('weight_decay', weight_decay, fn)
  if beta3 is None:
    beta3 = beta2**0.5

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    return ProdigyState(
        exp_avg=otu.tree_zeros_like(params),
        exp_avg_sq=otu.tree_zeros_like(params),
        grad_sum=otu.tree_zeros_like(params),
        params0=params,
        estim_lr=jnp.asarray(estim_lr0, dtype),
        numerator_weighted=jnp.zeros([], dtype),
        count=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    count = otu.safe_increment(state.count)
    eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
    d = state.estim_lr
    correction = ((1 - beta2**count) ** 0.5) / (1 - beta1**count)
    step = jnp.asarray(d * eta * correction, d.dtype)
    dg = jax.tree.map(lambda g: d * g, updates)
    progress = otu.tree_vdot(
        updates, jax.tree.map(lambda p0, p: p0 - p, state.params0, params))
    exp_avg = jax.tree.map(
        lambda m, x: beta1 * m + (1 - beta1) * x, state.exp_avg, dg)
    exp_avg_sq = jax.tree.map(
        lambda v, x: beta2 * v + (1 - beta2) * x * x, state.exp_avg_sq, dg)
    sum_rate = d if safeguard_warmup else step
    grad_sum = jax.tree.map(
        lambda s, x: beta3 * s + sum_rate * x / estim_lr0, state.grad_sum, dg)
    numerator = beta3 * state.numerator_weighted
    numerator += (d / estim_lr0) * step * progress
    # The l1 norm before the product, in Optax's order (the same program).
    denominator = otu.tree_norm(grad_sum, ord=1)
    estimate = estim_lr_coef * numerator / denominator
    new_d = jnp.maximum(d, estimate)
    new_updates = jax.tree.map(
        lambda m, v, p: -weight_decay * step * p
        - step * m / (jnp.sqrt(v) + new_d * eps),
        exp_avg, exp_avg_sq, params,
    )
    return new_updates, ProdigyState(
        exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, grad_sum=grad_sum,
        params0=state.params0, estim_lr=new_d, numerator_weighted=numerator,
        count=count,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
