"""Sharpness: the top Hessian eigenvalue, its preconditioned form, the trace,
and the stability thresholds of the edge of stability.

Every function takes the loss as ``fn(params) -> scalar`` (as
``research.analysis.hessian``) and is traceable: it runs inside ``jit``,
``vmap`` and ``lax.scan``, so a training loop can measure the sharpness every
``k`` steps without leaving the device.

    lam = sharpness(loss, params, order=20, key=key)        # lambda_max(H)
    lam_p = preconditioned_sharpness(loss, params, p, 20, key)  # lambda_max(P^-1 H)
    tr = hutchinson_trace(loss, params, key, num_probes=100)

Gradient descent with step ``eta`` on a quadratic is stable along an
eigenvector iff its eigenvalue is below ``2 / eta``; Cohen et al. (2021)
found that full-batch GD on a network raises the sharpness to that line
and then hovers there (the *edge of stability*). For Adam the line is the
preconditioned sharpness at ``(2 + 2 beta1) / ((1 - beta1) eta)`` (Cohen et
al., 2022).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from research.analysis import hessian
from research.linalg import check_order

__all__ = [
    'STABILITY_THRESHOLDS',
    'adam_preconditioner',
    'edge_of_stability_summary',
    'hutchinson_trace',
    'preconditioned_sharpness',
    'sharpness',
    'stability_threshold',
]


def _top_ritz_value(matvec, n: int, dtype, order: int, key: jax.Array) -> jax.Array:
  check_order(order, n, fn='sharpness')
  start, breakdown = jax.random.split(key)
  v0 = jax.random.normal(start, (n,), dtype)
  result = hessian.lanczos(matvec, v0, order, breakdown)
  theta, _ = hessian.ritz_pairs(result)
  return theta[-1]


def sharpness(fn, params: Any, order: int, key: jax.Array) -> jax.Array:
  """``lambda_max`` of the Hessian of ``fn`` at ``params``: the largest Ritz
  value of ``order`` Lanczos steps from a Gaussian start drawn from ``key``.

  The extreme Ritz value converges first and bounds the true one from below;
  an outlier eigenvalue (as at the edge of stability) is found in a few
  steps. Raises ``ValueError`` when ``order`` exceeds the parameter count.
  """
  matvec, n = hessian.hvp_operator(fn, params)
  return _top_ritz_value(matvec, n, ravel_pytree(params)[0].dtype, order, key)


def preconditioned_sharpness(fn, params: Any, preconditioner: Any, order: int,
                             key: jax.Array) -> jax.Array:
  r"""``lambda_max(P^{-1} H)`` for a positive diagonal preconditioner ``P``
  (a pytree like ``params``).

  ``P^{-1} H`` is similar to the symmetric ``P^{-1/2} H P^{-1/2}``, on which
  Lanczos runs. For an update ``w <- w - eta P^{-1} g`` this is the
  curvature the step size meets (Cohen et al., 2022).
  """
  matvec, n = hessian.hvp_operator(fn, params)
  p_flat, _ = ravel_pytree(preconditioner)
  scale = jax.lax.rsqrt(p_flat)

  def scaled(v):
    return scale * matvec(scale * v)

  return _top_ritz_value(scaled, n, p_flat.dtype, order, key)


def adam_preconditioner(nu: Any, count: jax.Array, b1: float, b2: float,
                        eps: float) -> Any:
  r"""Adam's diagonal preconditioner after ``count`` updates:

  .. math::
    P = (1 - \beta_1^t) \left(\sqrt{\nu_t / (1 - \beta_2^t)} + \epsilon\right),

  so that Adam's step is ``-eta P^{-1} mu_t`` with the raw first moment
  ``mu_t`` (the bias correction of ``mu`` moved into ``P``), as Cohen et al.
  (2022) write it.
  """
  t = jnp.asarray(count, jnp.float32)
  c1 = 1.0 - jnp.power(b1, t)
  c2 = 1.0 - jnp.power(b2, t)
  return jax.tree.map(lambda v: c1 * (jnp.sqrt(v / c2) + eps), nu)


def hutchinson_trace(fn, params: Any, key: jax.Array, num_probes: int) -> jax.Array:
  r"""``tr H ~ mean_i z_i^T H z_i`` over ``num_probes`` Rademacher vectors.

  Unbiased; its variance is ``2 (||H||_F^2 - sum_i H_ii^2) / num_probes``.

  References:
    Hutchinson, A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines, 1990.
  """
  if not isinstance(num_probes, int) or isinstance(num_probes, bool) or num_probes < 1:
    raise ValueError(f'hutchinson_trace: num_probes={num_probes!r}; allowed: an int >= 1.')
  matvec, n = hessian.hvp_operator(fn, params)
  flat, _ = ravel_pytree(params)

  def one(k):
    z = jax.random.rademacher(k, (n,), flat.dtype)
    return jnp.vdot(z, matvec(z))

  return jnp.mean(jax.lax.map(one, jax.random.split(key, num_probes)))


def _gd_threshold(eta: float, beta1: float = 0.0) -> float:
  del beta1
  return 2.0 / eta


def _momentum_threshold(eta: float, beta1: float) -> float:
  return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * eta)


# Optimizer -> the largest stable (preconditioned) sharpness for step eta.
STABILITY_THRESHOLDS = {
    'gd': _gd_threshold,
    'adam': _momentum_threshold,  # EMA momentum beta1 (Cohen et al., 2022)
}


def stability_threshold(optimizer: str, eta: float, beta1: float = 0.9) -> float:
  """``2 / eta`` for GD; ``(2 + 2 beta1) / ((1 - beta1) eta)`` (38 / eta at
  beta1 = 0.9) for Adam's preconditioned sharpness."""
  if optimizer not in STABILITY_THRESHOLDS:
    raise ValueError(f'stability_threshold: optimizer={optimizer!r} is unknown; allowed: '
                     f'{", ".join(STABILITY_THRESHOLDS)}.')
  if not eta > 0:
    raise ValueError(f'stability_threshold: eta={eta!r} is invalid; allowed: > 0.')
  return STABILITY_THRESHOLDS[optimizer](float(eta), float(beta1))


def edge_of_stability_summary(steps: Sequence[int], values: Sequence[float],
                              threshold: float, reach: float = 1.0) -> dict:
  """When a sharpness curve reaches ``reach * threshold``, and where it stays.

  Returns ``first_step`` (the first measured step at or above the line, None
  if never), ``median_ratio`` (the median of ``value / threshold`` from that
  step to the end; None if never reached) and ``max_ratio``.
  """
  steps = np.asarray(steps)
  ratio = np.asarray(values, np.float64) / threshold
  hit = np.flatnonzero(ratio >= reach)
  out = dict(threshold=float(threshold), max_ratio=float(np.max(ratio)) if ratio.size else None,
             first_step=None, median_ratio=None, measurements_after=0)
  if hit.size:
    i = int(hit[0])
    out.update(first_step=int(steps[i]), median_ratio=float(np.median(ratio[i:])),
               measurements_after=int(ratio.size - i))
  return out

