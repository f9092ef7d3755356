"""Hessians of a loss: products, full matrices, Lanczos spectra, critical points.

Every function takes the loss as ``fn(params) -> scalar`` on a pytree of
params. Hessian-vector products are forward-over-reverse (``jax.jvp`` of
``jax.grad``): one product costs about as much as two gradients and never
forms the matrix. Spectra of large Hessians come from Lanczos with full
re-orthogonalization (the kernel is ``research.optim.saddle``'s, so that the
optimizer and the analysis agree); the spectral density is stochastic Lanczos
quadrature.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.stats  # noqa: F401  (jax.scipy.stats.norm)
import numpy as np
from jax.flatten_util import ravel_pytree

from research.linalg import check_order
from research.linalg import lanczos_tridiagonal
from research.linalg import tridiagonal_matrix

__all__ = [
    'CRITICAL_POINT_KINDS',
    'CriticalPoint',
    'LanczosResult',
    'SpectralDensity',
    'classify_critical_point',
    'classify_eigenvalues',
    'critical_point_index',
    'density_on_grid',
    'extreme_eigenvalues',
    'full_hessian',
    'hessian_lanczos',
    'hessian_vector_product',
    'hvp_operator',
    'lanczos',
    'num_params',
    'ritz_pairs',
    'spectral_density',
    'tridiagonal_matrix',
]

Loss = Callable[[Any], jax.Array]
CRITICAL_POINT_KINDS = ('minimum', 'maximum', 'saddle', 'degenerate')


def hessian_vector_product(fn: Loss, params: Any, vector: Any) -> Any:
  """``H(params) v`` as a pytree like ``params``, by forward-over-reverse."""
  return jax.jvp(jax.grad(fn), (params,), (vector,))[1]


def num_params(params: Any) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(params))


def hvp_operator(fn: Loss, params: Any) -> tuple[Callable[[jax.Array], jax.Array], int]:
  """``(matvec, n)``: ``v -> H v`` on flat vectors of length ``n``."""
  flat, unravel = ravel_pytree(params)
  grad_flat = lambda x: ravel_pytree(jax.grad(fn)(unravel(x)))[0]  # noqa: E731

  def matvec(v):
    return jax.jvp(grad_flat, (flat,), (v.astype(flat.dtype),))[1]

  return matvec, flat.size


def full_hessian(fn: Loss, params: Any) -> jax.Array:
  """The ``(n, n)`` Hessian over the flattened params (small models only)."""
  flat, unravel = ravel_pytree(params)
  return jax.hessian(lambda x: fn(unravel(x)))(flat)


class LanczosResult(NamedTuple):
  alphas: jax.Array  # (k,) diagonal of T
  betas: jax.Array  # (k,) off-diagonal of T; betas[-1] is the last residual
  vectors: jax.Array  # (k, n) orthonormal Lanczos vectors


def lanczos(
    matvec: Callable[[jax.Array], jax.Array],
    v0: jax.Array,
    order: int,
    key: Optional[jax.Array] = None,
) -> LanczosResult:
  """``order`` steps of Lanczos with full re-orthogonalization (jit-able).

  ``T = tridiagonal_matrix(alphas, betas) = V^T A V``; see
  ``research.linalg.lanczos_tridiagonal``. Raises ``ValueError`` when
  ``order`` is outside ``[1, len(v0)]``.

  References:
    Lanczos, An iteration method for the solution of the eigenvalue problem of
    linear differential and integral operators, 1950.
  """
  return LanczosResult(*lanczos_tridiagonal(matvec, v0, order, key))


def ritz_pairs(result: LanczosResult) -> tuple[jax.Array, jax.Array]:
  """Ritz values ``theta_j`` (ascending) and Gauss weights ``tau_j = s_{1j}^2``.

  ``tau_j`` is the squared first component of ``T``'s j-th eigenvector: the
  weight the quadrature rule of the start vector puts on ``theta_j``.
  """
  theta, s = jnp.linalg.eigh(tridiagonal_matrix(result.alphas, result.betas))
  return theta, jnp.square(s[0])


@functools.partial(jax.jit, static_argnames=('fn', 'order'))
def _hessian_lanczos(fn, params, v0, key, order):
  matvec, _ = hvp_operator(fn, params)
  return lanczos(matvec, v0, order, key)


def hessian_lanczos(
    fn: Loss, params: Any, order: int, key: jax.Array,
    v0: Optional[jax.Array] = None,
) -> LanczosResult:
  """Lanczos on the Hessian of ``fn`` at ``params``, from ``v0`` or a Gaussian start.

  Jitted once per ``(fn, order)``: pass the same ``fn`` object (a loss closed
  over a fixed batch, say) to reuse the compiled program.
  """
  n = num_params(params)
  check_order(order, n, fn='hessian_lanczos')
  flat, _ = ravel_pytree(params)
  key, sub = jax.random.split(key)
  if v0 is None:
    v0 = jax.random.normal(sub, (n,), flat.dtype)
  return _hessian_lanczos(fn, params, v0, key, order)


def extreme_eigenvalues(
    fn: Loss, params: Any, order: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """``(lambda_min, lambda_max)`` of the Hessian, from ``order`` Lanczos steps.

  The extreme Ritz values converge first; they bound the true extremes from
  inside (``theta_min >= lambda_min``, ``theta_max <= lambda_max``).
  """
  theta, _ = ritz_pairs(hessian_lanczos(fn, params, order, key))
  return theta[0], theta[-1]


class SpectralDensity(NamedTuple):
  ritz_values: jax.Array  # (draws, k)
  ritz_weights: jax.Array  # (draws, k), each row sums to 1


def spectral_density(
    fn: Loss, params: Any, order: int, num_draws: int, key: jax.Array
) -> SpectralDensity:
  r"""Stochastic Lanczos quadrature: Ritz values and weights from random starts.

  For a Gaussian start ``v`` and the Lanczos pairs ``(theta_j, tau_j)`` of
  ``v``, ``sum_j tau_j g(theta_j)`` is the Gauss quadrature of
  ``v^T g(H) v / ||v||^2``, whose mean over ``v`` is ``tr g(H) / n``. With
  ``g`` a Gaussian bump this is the smoothed eigenvalue density
  (:func:`density_on_grid`); with ``g`` a step, the fraction of eigenvalues
  below a level (:func:`critical_point_index`).

  References:
    Ghorbani, Krishnan & Xiao, An investigation into neural net optimization
    via Hessian eigenvalue density, 2019; Golub & Meurant, Matrices, Moments
    and Quadrature with Applications, 2010.
  """
  if not isinstance(num_draws, int) or num_draws < 1:
    raise ValueError(f'spectral_density: num_draws={num_draws!r}; allowed: an int >= 1.')
  values, weights = [], []
  for k in jax.random.split(key, num_draws):
    theta, tau = ritz_pairs(hessian_lanczos(fn, params, order, k))
    values.append(theta)
    weights.append(tau)
  return SpectralDensity(jnp.stack(values), jnp.stack(weights))


def density_on_grid(
    density: SpectralDensity, grid: jax.Array, sigma: float
) -> jax.Array:
  r"""``phi(t) = mean_draws sum_j tau_j N(t; theta_j, sigma^2)`` on ``grid``.

  Integrates to 1 over the real line (each row of weights sums to 1).
  """
  grid = jnp.asarray(grid)[:, None, None]
  bumps = jnp.exp(-0.5 * jnp.square((grid - density.ritz_values) / sigma))
  bumps = bumps / (sigma * jnp.sqrt(2 * jnp.pi))
  return jnp.mean(jnp.sum(bumps * density.ritz_weights, axis=-1), axis=-1)


def critical_point_index(
    eigenvalues_or_density, tol: float = 0.0, sigma: float = 0.0
) -> jax.Array:
  r"""The index: the fraction of Hessian eigenvalues below ``-tol``.

  Given eigenvalues (an array), the exact fraction. Given a
  :class:`SpectralDensity`, the stochastic Lanczos quadrature estimate
  ``mean_draws sum_j tau_j P(theta_j < -tol)``: with ``sigma = 0`` a hard
  step (``[theta_j < -tol]``); with ``sigma > 0`` the mass below ``-tol`` of
  the Gaussian-smoothed density, ``sum_j tau_j Phi((-tol - theta_j) / sigma)``.
  A network's spectrum piles up near zero and Lanczos lumps that pile into a
  few Ritz values of either sign, so the hard step is biased by whole pile
  weights; smoothing splits each such weight by where its node sits.

  References:
    Dauphin et al., Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization, 2014; Ghorbani, Krishnan & Xiao,
    An investigation into neural net optimization via Hessian eigenvalue
    density, 2019.
  """
  if isinstance(eigenvalues_or_density, SpectralDensity):
    d = eigenvalues_or_density
    if sigma > 0:
      below = jax.scipy.stats.norm.cdf((-tol - d.ritz_values) / sigma)
    else:
      below = (d.ritz_values < -tol).astype(d.ritz_weights.dtype)
    return jnp.mean(jnp.sum(below * d.ritz_weights, axis=-1))
  lam = jnp.asarray(eigenvalues_or_density)
  return jnp.mean((lam < -tol).astype(jnp.float32))


def classify_eigenvalues(eigenvalues, tol: float = 1e-6) -> str:
  """``minimum`` / ``maximum`` / ``saddle`` / ``degenerate`` from the Hessian's spectrum.

  ``saddle``: some eigenvalue ``< -tol`` and some ``> tol`` (a strict saddle,
  even with zero eigenvalues besides); ``minimum``: all ``> tol``;
  ``maximum``: all ``< -tol``; otherwise (eigenvalues within ``tol`` of zero
  and no pair of opposite signs) the second-order test cannot tell:
  ``degenerate``.
  """
  lam = np.asarray(eigenvalues)
  pos, neg = bool(np.any(lam > tol)), bool(np.any(lam < -tol))
  if pos and neg:
    return 'saddle'
  if np.all(lam > tol):
    return 'minimum'
  if np.all(lam < -tol):
    return 'maximum'
  return 'degenerate'


class CriticalPoint(NamedTuple):
  kind: str  # one of CRITICAL_POINT_KINDS
  index: float  # fraction of negative eigenvalues
  eigenvalues: np.ndarray
  grad_norm: float


def classify_critical_point(
    fn: Loss, params: Any, tol: float = 1e-6, grad_tol: float = 1e-6
) -> CriticalPoint:
  """Classifies a critical point of ``fn`` from its full Hessian (small models).

  Raises ``ValueError`` when ``||grad fn(params)|| > grad_tol``: the point is
  not critical and the second-order test does not apply.
  """
  grad, _ = ravel_pytree(jax.grad(fn)(params))
  grad_norm = float(jnp.linalg.norm(grad))
  if not grad_norm <= grad_tol:
    raise ValueError(
        f'classify_critical_point: params is not a critical point: '
        f'|grad|={grad_norm:.3g} > grad_tol={grad_tol:.3g}.')
  lam = np.asarray(jnp.linalg.eigvalsh(full_hessian(fn, params)))
  return CriticalPoint(
      kind=classify_eigenvalues(lam, tol),
      index=float(np.mean(lam < -tol)),
      eigenvalues=lam,
      grad_norm=grad_norm,
  )
