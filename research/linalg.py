"""Linear algebra that both ``research.optim`` and ``research.analysis`` use.

The ground floor of the package: it imports nothing of ours, so the
optimizers (saddle-free Newton) and the analysis tools (Hessian spectra)
share one Lanczos without depending on each other.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

__all__ = ['check_order', 'lanczos_tridiagonal', 'tridiagonal_matrix']


def check_order(order: int, dim: int, fn: str = 'lanczos') -> None:
  """``order`` (the number of Lanczos vectors) must lie in ``[1, dim]``."""
  if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= dim:
    raise ValueError(
        f'{fn}: order={order!r} is out of range; allowed: an int in [1, {dim}] '
        f'(the number of parameters is {dim}).'
    )


def lanczos_tridiagonal(
    matvec: Callable[[jax.Array], jax.Array],
    v0: jax.Array,
    order: int,
    key: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Lanczos with full re-orthogonalization, in a ``lax.fori_loop``.

  From ``v_1 = v0 / ||v0||`` it builds an orthonormal basis ``V`` of the Krylov
  space ``span(v0, A v0, ..., A^{k-1} v0)`` and the tridiagonal
  ``T = V^T A V`` (diagonal ``alphas``, off-diagonal ``betas[:-1]``):

  .. math::
    w = A v_i, \quad \alpha_i = v_i^T w, \quad
    w \leftarrow (I - V V^T)^2 w, \quad \beta_i = \|w\|, \quad
    v_{i+1} = w / \beta_i.

  Re-orthogonalizing against every previous vector (twice, classical
  Gram-Schmidt) keeps ``V`` orthonormal in floating point, so no ghost
  eigenvalues appear. On breakdown (``beta_i`` at round-off level: the
  Krylov space is invariant) the next vector is a random one orthogonal to
  ``V`` and ``beta_i`` is set to 0, so ``T`` stays exact.

  Args:
    matvec: ``v -> A v`` on flat vectors, ``A`` symmetric.
    v0: the starting vector (flat); a zero vector is replaced by a random one.
    order: ``k``, the number of Lanczos vectors, in ``[1, len(v0)]``.
    key: PRNG key for breakdowns and a zero ``v0``; default ``key(0)``.

  Returns:
    ``(alphas, betas, vectors)``: shapes ``(k,)``, ``(k,)`` and ``(k, n)``;
    ``betas[k - 1]`` is the norm of the residual after the last step.

  References:
    Lanczos, An iteration method for the solution of the eigenvalue problem
    of linear differential and integral operators, 1950; Parlett, The
    Symmetric Eigenvalue Problem, 1998.
  """
  dim = v0.shape[0]
  check_order(order, dim)
  dtype = v0.dtype
  key = jax.random.key(0) if key is None else key
  tiny = jnp.finfo(dtype).tiny
  # Random vectors for a zero start and for breakdowns, drawn once.
  spare = jax.random.normal(key, (order + 1, dim), dtype)
  norm0 = jnp.linalg.norm(v0)
  v0 = jnp.where(norm0 > tiny, v0, spare[order])
  v0 = v0 / jnp.linalg.norm(v0)
  hi = jax.lax.Precision.HIGHEST

  def orthogonalize(basis, w):
    for _ in range(2):
      w = w - jnp.dot(basis.T, jnp.dot(basis, w, precision=hi), precision=hi)
    return w

  def body(i, carry):
    basis, alphas, betas, anorm = carry
    v = basis[i]
    w = matvec(v)
    alpha = jnp.vdot(v, w, precision=hi)
    w = orthogonalize(basis, w)
    beta = jnp.linalg.norm(w)
    beta_prev = jnp.where(i > 0, betas[jnp.maximum(i - 1, 0)], 0)
    anorm = jnp.maximum(anorm, jnp.abs(alpha) + beta + beta_prev)
    breakdown = beta <= 100 * jnp.finfo(dtype).eps * anorm
    r = orthogonalize(basis, spare[i])
    nxt = jnp.where(breakdown, r / jnp.maximum(jnp.linalg.norm(r), tiny),
                    w / jnp.maximum(beta, tiny))
    beta = jnp.where(breakdown, jnp.zeros_like(beta), beta)
    return (basis.at[i + 1].set(nxt), alphas.at[i].set(alpha),
            betas.at[i].set(beta), anorm)

  basis = jnp.zeros((order + 1, dim), dtype).at[0].set(v0)
  init = (basis, jnp.zeros(order, dtype), jnp.zeros(order, dtype),
          jnp.zeros([], dtype))
  basis, alphas, betas, _ = jax.lax.fori_loop(0, order, body, init)
  return alphas, betas, basis[:order]


def tridiagonal_matrix(alphas: jax.Array, betas: jax.Array) -> jax.Array:
  """The symmetric tridiagonal ``T`` from ``lanczos_tridiagonal``'s output."""
  off = betas[:-1]
  return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
