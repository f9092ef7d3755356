"""Linear algebra used by optimizers: power iteration, inverse p-th roots, NNLS.

Names, signatures and iterations follow Optax 0.2.8 (``optax.power_iteration``,
``optax.matrix_inverse_pth_root``, ``optax.nnls``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import jax
from jax import lax
import jax.numpy as jnp

from research.optim import tree as otu

__all__ = ['matrix_inverse_pth_root', 'nnls', 'power_iteration']


def _normalized(v):
  return otu.tree_scale(1.0 / otu.tree_norm(v), v)


def power_iteration(
    matrix: Union[jax.typing.ArrayLike, Callable[[Any], Any]],
    *,
    v0: Optional[Any] = None,
    num_iters: jax.typing.ArrayLike = 100,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: Optional[jax.Array] = None,
) -> tuple[jax.Array, Any]:
  r"""The dominant eigenvalue and eigenvector of a matrix, by power iteration.

  .. math::
    v_{k+1} = A v_k / \|A v_k\|, \qquad \lambda_k = \langle v_k, A v_k \rangle

  stopping after ``num_iters`` steps or once ``\|A v_k - \lambda_k v_k\| <
  tol |\lambda_k|``.

  Args:
    matrix: a square array, or a function ``v -> A v`` on pytrees.
    v0: the starting vector (a pytree for a function ``matrix``, where it is
      required); by default uniform in ``[-1, 1]`` drawn with ``key``.
    num_iters: the most iterations.
    error_tolerance: the relative residual at which to stop.
    precision: of the matrix-vector products with an array ``matrix``.
    key: for the default ``v0`` (``jax.random.PRNGKey(0)`` when ``None``).

  Returns:
    ``(eigenvalue, unit eigenvector)``.

  References:
    von Mises & Pollaczek-Geiringer, Praktische Verfahren der
    Gleichungsaufloesung, 1929.
  """
  if callable(matrix):
    mvp = matrix
    if v0 is None:
      raise ValueError(
          'power_iteration: v0 must be given when matrix is a callable (its '
          'input structure is unknown).'
      )
  else:
    mvp = lambda v: jnp.matmul(matrix, v, precision=precision)  # noqa: E731
    if v0 is None:
      key = jax.random.PRNGKey(0) if key is None else key
      v0 = jax.random.uniform(
          key, matrix.shape[-1:], matrix.dtype, minval=-1.0, maxval=1.0
      )
  v0 = _normalized(v0)

  def not_done(carry):
    v, av, eig, i = carry
    residual = otu.tree_norm(otu.tree_sub(av, otu.tree_scale(eig, v)))
    return ~(jnp.abs(residual / eig) < error_tolerance) & (i < num_iters)

  def step(carry):
    _, av, _, i = carry
    v = _normalized(av)
    av = mvp(v)
    return v, av, otu.tree_vdot(v, av), i + 1

  carry = (v0, mvp(v0), jnp.asarray(0.0), jnp.asarray(0))
  _, av, eig, _ = lax.while_loop(not_done, step, carry)
  return eig, _normalized(av)


def _matrix_power(m, p, precision):
  """``m^p`` for ``p`` in {1, 2, 4, 8}, by repeated squaring, chosen at run time."""
  square = lambda x: jnp.matmul(x, x, precision=precision)  # noqa: E731
  branches = [lambda x, n=n: functools.reduce(lambda y, _: square(y), range(n), x)
              for n in range(4)]
  return lax.switch(jnp.asarray(jnp.round(jnp.log2(p)), jnp.int32), branches, m)


def matrix_inverse_pth_root(
    matrix: jax.typing.ArrayLike,
    p: jax.typing.ArrayLike,
    num_iters: jax.typing.ArrayLike = 100,
    ridge_epsilon: jax.typing.ArrayLike = 1e-6,
    error_tolerance: jax.typing.ArrayLike = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
):
  r"""``(A + \epsilon \lambda_{max} I)^{-1/p}`` of a symmetric PSD matrix.

  Coupled Newton iteration, with ``\alpha = -1/p``:

  .. math::
    M_0 = z A_\epsilon,\ H_0 = z^{1/p} I,\ z = \frac{1 + p}{2 \|A_\epsilon\|_F};
    \quad T_k = (1 - \alpha) I + \alpha M_k,\ M_{k+1} = T_k^p M_k,\
    H_{k+1} = H_k T_k

  until ``max |M_k - I| <= error_tolerance``; if the error grows by more than
  1.2x in a step, the previous ``H`` is returned. ``p`` must be 1, 2, 4 or 8.

  Args:
    matrix: the symmetric PSD matrix ``A``.
    p: the root.
    num_iters: the most Newton steps.
    ridge_epsilon: ``epsilon``, relative to the largest eigenvalue (found by
      :func:`power_iteration`).
    error_tolerance: the stopping error.
    precision: of the matrix products.

  Returns:
    ``(A_eps^{-1/p}, error)``.

  References:
    Higham, Functions of matrices: theory and computation, 2008 (eq. 7.18).
  """
  n = matrix.shape[0]
  alpha = jnp.asarray(-1.0 / p, jnp.float32)
  eye = jnp.eye(n, dtype=jnp.float32)
  max_ev, _ = power_iteration(
      matrix=matrix, num_iters=100, error_tolerance=1e-6, precision=precision
  )
  ridge_epsilon = ridge_epsilon * jnp.maximum(max_ev, 1e-16)
  if n == 1:
    return (matrix + ridge_epsilon) ** alpha, 0

  def not_done(carry):
    i, _, _, _, error, improving = carry
    return (i < num_iters) & (error > error_tolerance) & improving

  def step(carry):
    i, m, h, _, error, _ = carry
    t = (1 - alpha) * eye + alpha * m
    new_m = jnp.matmul(_matrix_power(t, p, precision), m, precision=precision)
    new_h = jnp.matmul(h, t, precision=precision)
    new_error = jnp.max(jnp.abs(new_m - eye))
    # The error may rise for a step before it falls; 1.2 bounds the rise.
    return i + 1, new_m, new_h, h, new_error, new_error < error * 1.2

  damped = matrix + ridge_epsilon * eye
  z = (1 + p) / (2 * jnp.linalg.norm(damped))
  m0 = damped * z
  h0 = eye * jnp.power(z, 1.0 / p)
  carry = (0, m0, h0, h0, jnp.max(jnp.abs(m0 - eye)), True)
  _, m, h, old_h, _, improving = lax.while_loop(not_done, step, carry)
  error = jnp.max(jnp.abs(m - eye))
  improving = jnp.asarray(improving, old_h.dtype)
  result = improving * h + (1 - improving) * old_h
  return jnp.asarray(result, matrix.dtype), error


def _spectral_radius_bound(matrix):
  frobenius = jnp.linalg.matrix_norm(matrix, ord='fro')
  one_norm = jnp.linalg.matrix_norm(matrix, ord=1) if matrix.size else 0
  return jnp.minimum(frobenius, one_norm)


def nnls(
    A: jax.Array,  # pylint: disable=invalid-name
    b: jax.Array,
    iters: int,
    unroll: Union[int, bool] = 1,
    L: Optional[jax.typing.ArrayLike] = None,  # pylint: disable=invalid-name
) -> jax.Array:
  r"""Non-negative least squares: ``argmin_{x >= 0} ||A x - b||_2``.

  Fast projected gradient with Nesterov-style extrapolation on ``Q = A^T A``,
  ``q = A^T b``:

  .. math::
    c_{k+1} = \tfrac{1 + \sqrt{1 + 4 c_k^2}}{2},\
    x_{k+1} = \max(0, p_k - (Q p_k - q) / L),\
    p_{k+1} = x_{k+1} + \tfrac{c_k - 1}{c_{k+1}} (x_{k+1} - x_k)

  Args:
    A: ``(M, N)``.
    b: ``(M,)`` or ``(M, K)``.
    iters: the number of iterations.
    unroll: passed to ``lax.scan``.
    L: an upper bound of the spectral radius of ``Q`` (default: the smaller
      of its Frobenius and 1-norms).

  Returns:
    ``x`` of shape ``(N,)`` or ``(N, K)``.

  References:
    Polyak, Projected gradient method for non-negative least square, 2015.
  """
  if A.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
    raise ValueError(
        f'nnls: A must be (M, N) and b (M,) or (M, K); got A {A.shape}, '
        f'b {b.shape}.'
    )
  q_mat = A.mT @ A
  q_vec = A.mT @ b
  L = _spectral_radius_bound(q_mat) if L is None else L  # noqa: N806
  L = jnp.where(L == 0, 1, L)  # noqa: N806

  def step(carry, _):
    x, p, c = carry
    c_next = (1 + jnp.sqrt(1 + 4 * c**2)) / 2
    x_next = (p - (q_mat @ p - q_vec) / L).clip(0)
    p_next = x_next + (c - 1) / c_next * (x_next - x)
    return (x_next, p_next, c_next), None

  x0 = jnp.zeros_like(b, shape=A.shape[-1:] + b.shape[1:])
  (x, _, _), _ = lax.scan(step, (x0, x0, 0.0), length=iters, unroll=unroll)
  return x
