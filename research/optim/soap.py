"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

Not in Optax. A leaf of rank ``>= 2`` is seen as a matrix as in
:mod:`research.optim.shampoo` (leading axes merged into rows, the last axis
as columns). For that matrix SOAP keeps Shampoo's statistics ``L`` and ``R``
as moving averages, takes their eigenvectors ``Q_L`` and ``Q_R`` (refreshed
every few steps), and runs Adam on the rotated gradient
``Q_L^T G Q_R``. Sides longer than ``max_precond_dim`` are not rotated;
scalars and vectors run plain Adam.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu
from research.optim.shampoo import (
    as_matrix_shape,
    check_int,
    compute_dtype,
    gram,
    matmul as _mm,
    reject_complex,
    unzip_leaves,
    with_decay_and_learning_rate,
)

__all__ = [
    'ScaleBySoapState',
    'scale_by_soap',
    'soap',
]


class ScaleBySoapState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  mu: base.Updates  # Adam's first moment, in the current eigenbasis
  nu: base.Updates  # Adam's second moment, in the current eigenbasis
  stats: base.Updates  # per leaf: (L, R), None for a side not rotated
  eigvecs: base.Updates  # per leaf: (Q_L, Q_R), None for a side not rotated


def _rotate(x, vecs):
  """``Q_L^T x Q_R`` (a missing side is the identity)."""
  q_l, q_r = vecs
  x = x if q_l is None else _mm(q_l.T, x)
  return x if q_r is None else _mm(x, q_r)


def _rotate_back(x, vecs):
  """``Q_L x Q_R^T``."""
  q_l, q_r = vecs
  x = x if q_l is None else _mm(q_l, x)
  return x if q_r is None else _mm(x, q_r.T)


def _eigenbasis(stats, vecs, mu, nu):
  """The first basis: eigenvectors by decreasing eigenvalue."""
  del vecs
  vecs = tuple(None if s is None else jnp.linalg.eigh(s)[1][:, ::-1] for s in stats)
  return vecs, mu, nu


def _keep(stats, vecs, mu, nu):
  del stats
  return vecs, mu, nu


def _power_qr(stats, vecs, mu, nu):
  """One step of power iteration and QR from the old basis.

  Each side's old eigenvectors are first sorted by their estimated
  eigenvalues ``diag(Q^T S Q)`` (decreasing), and the second moment is
  permuted with them along that axis; the first moment is rotated from the
  old basis into the new one.
  """
  mu = _rotate_back(mu, vecs)
  new_vecs = []
  for axis, (s, q) in enumerate(zip(stats, vecs)):
    if s is None:
      new_vecs.append(None)
      continue
    estimate = jnp.sum(q * _mm(s, q), axis=0)
    order = jnp.argsort(-estimate)
    nu = jnp.take(nu, order, axis=axis)
    new_vecs.append(jnp.linalg.qr(_mm(s, q[:, order]))[0])
  new_vecs = tuple(new_vecs)
  return new_vecs, _rotate(mu, new_vecs), nu


def scale_by_soap(
    b1: jax.typing.ArrayLike = 0.95,
    b2: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    shampoo_beta: Optional[jax.typing.ArrayLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adam in the eigenbasis of Shampoo's preconditioner.

  For a leaf's matrix view ``G`` at call ``t`` (``k = t - 1`` Adam steps),
  with ``beta_s = shampoo_beta``:

  .. math::
    G' = Q_L^\top G Q_R, \quad
    m_k = \beta_1 m_{k-1} + (1 - \beta_1) G', \quad
    v_k = \beta_2 v_{k-1} + (1 - \beta_2) G'^2,

  .. math::
    u = Q_L \frac{m_k / (1 - \beta_1^k)}{\sqrt{v_k / (1 - \beta_2^k)}
    + \epsilon} Q_R^\top,

  then, after the step (so the current gradient never rotates itself),

  .. math::
    L \leftarrow \beta_s L + (1 - \beta_s) G G^\top, \qquad
    R \leftarrow \beta_s R + (1 - \beta_s) G^\top G.

  The first call only gathers ``L, R`` and sets ``Q_L, Q_R`` to their
  eigenvectors (``eigh``, decreasing eigenvalues); its update is zero.
  When ``k`` is a multiple of ``precondition_frequency`` the bases are
  refreshed by one step of power iteration and QR,
  ``Q <- qr(S Q)`` (``S`` = ``L`` or ``R``), after sorting the columns of ``Q``
  by ``diag(Q^T S Q)``; ``v`` is permuted with them and ``m`` is rotated into
  the new basis, ``m <- Q_L'^T Q_L m Q_R^T Q_R'``. A side longer than
  ``max_precond_dim`` keeps the identity; scalars and vectors run Adam.

  The refresh is a ``lax.switch`` on the step count. Under ``jax.vmap`` of a
  batched state (a grid of replicas) it becomes a select that computes every
  branch, ``eigh`` and QR of every side, at every step; on the CPU such a
  vmapped SOAP step also hung inside XLA (jax 0.10.2). Run replicas of SOAP
  one after another instead (``lax.map``; the Trainer's
  ``replica_loop='map'``).

  Args:
    b1: Adam's ``beta_1``, in ``[0, 1)``.
    b2: Adam's ``beta_2``, in ``[0, 1)``.
    eps: ``epsilon``, added to the root of the second moment, ``>= 0``.
    precondition_frequency: Adam steps between refreshes of the bases.
    max_precond_dim: sides of a matrix view longer than this are not rotated.
    shampoo_beta: ``beta_s``, in ``[0, 1)``; ``None`` uses ``b2``.

  References:
    Vyas et al., SOAP: Improving and stabilizing Shampoo using Adam, 2024.
  """
  fn = 'scale_by_soap'
  checks.check_decay('b1', b1, fn=fn)
  checks.check_decay('b2', b2, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  check_int('precondition_frequency', precondition_frequency, 1, fn)
  check_int('max_precond_dim', max_precond_dim, 1, fn)
  checks.check_decay('shampoo_beta', shampoo_beta, fn=fn)
  beta_s = b2 if shampoo_beta is None else shampoo_beta

  def sides(shape):
    """Which sides of the matrix view are rotated, or None for plain Adam."""
    if len(shape) < 2:
      return None
    dims = as_matrix_shape(shape)
    use = tuple(d <= max_precond_dim for d in dims)
    return (dims, use) if any(use) else None

  def init_leaf(x):
    plan = sides(x.shape)
    if plan is None:
      return (None, None), (None, None)
    dtype = compute_dtype(x.dtype)
    stats = tuple(jnp.zeros((d, d), dtype) if u else None for d, u in zip(*plan))
    return stats, stats

  def init_fn(params):
    reject_complex(params, fn)
    stats, eigvecs = unzip_leaves(params, jax.tree.map(init_leaf, params), 2)
    return ScaleBySoapState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params),
        nu=otu.tree_zeros_like(params),
        stats=stats,
        eigvecs=eigvecs,
    )

  def update_leaf(g, mu, nu, stats, vecs, count, branch):
    plan = sides(g.shape)
    dtype = compute_dtype(g.dtype)
    view = g.shape if plan is None else plan[0]
    g_m, mu_m, nu_m = (x.astype(dtype).reshape(view) for x in (g, mu, nu))
    first = count == 1
    steps = jnp.maximum(count - 1, 1)
    g_rot = _rotate(g_m, vecs)
    mu_new = b1 * mu_m + (1.0 - b1) * g_rot
    nu_new = b2 * nu_m + (1.0 - b2) * g_rot * g_rot
    mu_hat = mu_new / (1.0 - b1**steps)
    nu_hat = nu_new / (1.0 - b2**steps)
    u = _rotate_back(mu_hat / (jnp.sqrt(nu_hat) + eps), vecs)
    u = jnp.where(first, 0.0, u)
    mu_new = jnp.where(first, mu_m, mu_new)
    nu_new = jnp.where(first, nu_m, nu_new)
    if plan is not None:
      stats = tuple(
          None if s is None else beta_s * s + (1.0 - beta_s) * gg
          for s, gg in zip(stats, gram(g_m))
      )
      vecs, mu_new, nu_new = jax.lax.switch(
          branch, (_keep, _eigenbasis, _power_qr), stats, vecs, mu_new, nu_new
      )
    back = lambda x, like: x.reshape(like.shape).astype(like.dtype)  # noqa: E731
    return back(u, g), back(mu_new, mu), back(nu_new, nu), stats, vecs

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = otu.safe_increment(state.count)
    refresh = (count > 1) & ((count - 1) % precondition_frequency == 0)
    branch = jnp.where(count == 1, 1, jnp.where(refresh, 2, 0))
    results = jax.tree.map(
        lambda g, m, v, s, q: update_leaf(g, m, v, s, q, count, branch),
        updates, state.mu, state.nu, state.stats, state.eigvecs,
    )
    u, mu, nu, stats, eigvecs = unzip_leaves(updates, results, 5)
    return u, ScaleBySoapState(
        count=count, mu=mu, nu=nu, stats=stats, eigvecs=eigvecs
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def soap(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.95,
    b2: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    shampoo_beta: Optional[jax.typing.ArrayLike] = None,
    mask: Any = None,
) -> base.GradientTransformationExtraArgs:
  r"""The SOAP optimizer: :func:`scale_by_soap`, decoupled weight decay and
  the learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})

  The first update is ``-eta lambda theta_0`` alone (:func:`scale_by_soap`
  gives zero then).

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1, b2, eps, precondition_frequency, max_precond_dim, shampoo_beta: as
      :func:`scale_by_soap`.
    weight_decay: ``lambda``, a scalar or a schedule.
    mask: where the decay applies: a tree of booleans or a callable
      ``params -> tree``.

  References:
    Vyas et al., SOAP: Improving and stabilizing Shampoo using Adam, 2024;
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019.
  """
  return with_decay_and_learning_rate(
      'soap',
      scale_by_soap(
          b1=b1, b2=b2, eps=eps, precondition_frequency=precondition_frequency,
          max_precond_dim=max_precond_dim, shampoo_beta=shampoo_beta,
      ),
      learning_rate, weight_decay, mask,
  )
