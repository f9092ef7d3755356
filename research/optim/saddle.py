"""Saddle-aware methods: perturbed gradient descent, saddle-free Newton, Newton.

No optimizer library ships these. Perturbed gradient descent adds a random
kick when the gradient is small; saddle-free Newton divides each curvature
direction by ``|lambda|`` so that negative curvature repels instead of
attracting; Newton's method (dividing by ``lambda``) is the counter-example,
attracted by every critical point.

The curvature methods need the loss itself, not only its gradient. They read
it, as Optax's line searches do, from the extra keyword argument ``value_fn``
of ``update``: ``update(grads, state, params, value_fn=loss)``, where
``loss(params)`` returns a scalar. An extra argument rather than a constructor
argument because the loss of a network changes with every batch: the caller
closes ``value_fn`` over the current batch. ``grads`` must be the gradient of
that ``value_fn`` at ``params``.

The Krylov kernel (``lanczos_tridiagonal``) lives in :mod:`research.linalg`,
the ground floor that both ``optim`` and ``analysis`` import.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from research import linalg
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'CurvatureState',
    'PerturbedState',
    'newton',
    'perturbed',
    'perturbed_gd',
    'saddle_free_newton',
    'scale_by_newton',
    'scale_by_saddle_free_newton',
]


# --- Perturbed gradient descent. ---------------------------------------------

class PerturbedState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  key: jax.Array  # PRNG key, split at every update
  last_perturbation: jax.Array  # int32, the count of the last kick
  perturbations: jax.Array  # int32, the number of kicks so far
  inner_state: base.OptState


def sample_ball(key: jax.Array, tree: Any, radius) -> Any:
  r"""A point drawn uniformly from the ball of ``radius`` in the space of ``tree``.

  The ball is over the whole parameter vector (all leaves stacked, dimension
  ``d``): direction ``z / ||z||`` with ``z ~ N(0, I)``, length
  ``radius * U^{1/d}`` with ``U ~ U(0, 1)``.
  """
  leaves, treedef = jax.tree.flatten(tree)
  dim = sum(leaf.size for leaf in leaves)
  key_u, *keys = jax.random.split(key, len(leaves) + 1)
  z = [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in z))
  u = jax.random.uniform(key_u, (), jnp.float32)
  length = radius * jnp.exp(jnp.log(u) / dim)
  scale = length / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
  return jax.tree.unflatten(treedef, [(scale * x).astype(x.dtype) for x in z])


def perturbed(
    inner: base.GradientTransformation,
    g_thres: float = 1e-3,
    t_thres: int = 50,
    radius: float = 1e-2,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Adds a uniform kick to ``inner``'s updates when the gradient is small.

  With ``g_t`` the incoming (raw) gradient and ``t_0`` the step of the last
  kick, step ``t`` returns

  .. math::
    u_t = \mathrm{inner}(g_t) + \xi_t, \qquad
    \xi_t \sim \mathcal{U}(B(0, r)) \text{ if } \|g_t\| \le g_{thres}
    \text{ and } t - t_0 > t_{thres}, \text{ else } \xi_t = 0.

  The ball is over the whole parameter vector (see :func:`sample_ball`). Jin et
  al. take the gradient step at the kicked point ``x_t + xi_t``; a
  transformation only sees the gradient at ``x_t``, so here the kick and the
  step are added together (the same rule to first order in ``r``).

  Args:
    inner: the transformation of the raw gradients (e.g. ``sgd(lr)``).
    g_thres: gradient-norm threshold, ``>= 0``.
    t_thres: the least number of steps between two kicks, an int ``>= 0``.
    radius: ``r``, the radius of the ball, ``>= 0``.
    seed: seed of the PRNG key kept in the state.

  References:
    Jin, Ge, Netrapalli, Kakade & Jordan, How to escape saddle points
    efficiently, 2017.
  """
  checks.check_non_negative('g_thres', g_thres, fn='perturbed')
  checks.check_non_negative('t_thres', t_thres, fn='perturbed')
  checks.check_non_negative('radius', radius, fn='perturbed')
  inner = base.with_extra_args_support(inner)

  def init_fn(params):
    return PerturbedState(
        count=jnp.zeros([], jnp.int32),
        key=jax.random.key(seed),
        last_perturbation=-jnp.asarray(t_thres, jnp.int32),
        perturbations=jnp.zeros([], jnp.int32),
        inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    count = otu.safe_increment(state.count)
    stalled = otu.tree_norm(updates) <= g_thres
    kick = jnp.logical_and(stalled, count - state.last_perturbation > t_thres)
    key, sub = jax.random.split(state.key)
    new_updates, inner_state = inner.update(
        updates, state.inner_state, params, **extra_args)
    xi = sample_ball(sub, new_updates, radius)
    new_updates = jax.tree.map(
        lambda u, x: jnp.where(kick, u + x, u), new_updates, xi)
    return new_updates, PerturbedState(
        count=count,
        key=key,
        last_perturbation=jnp.where(kick, count, state.last_perturbation),
        perturbations=state.perturbations + kick.astype(jnp.int32),
        inner_state=inner_state,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def perturbed_gd(
    learning_rate: base.ScalarOrSchedule,
    g_thres: float = 1e-3,
    t_thres: int = 50,
    radius: float = 1e-2,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Perturbed gradient descent: ``x <- x - eta g + xi``, ``xi`` as in :func:`perturbed`.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    g_thres: a kick is allowed when ``||g|| <= g_thres``.
    t_thres: the least number of steps between two kicks.
    radius: the radius of the ball the kick is drawn from.
    seed: seed of the PRNG key kept in the state.

  References:
    Jin, Ge, Netrapalli, Kakade & Jordan, How to escape saddle points
    efficiently, 2017.
  """
  checks.check_learning_rate(learning_rate, 'perturbed_gd')
  return perturbed(
      transform.scale_by_learning_rate(learning_rate),
      g_thres=g_thres, t_thres=t_thres, radius=radius, seed=seed,
  )


# --- Curvature preconditioners: saddle-free Newton and Newton. ---------------

class CurvatureState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  key: jax.Array  # PRNG key for the Lanczos start when the gradient is zero


def _flat_hvp(value_fn, params):
  flat, unravel = ravel_pytree(params)
  grad_flat = lambda x: ravel_pytree(jax.grad(value_fn)(unravel(x)))[0]  # noqa: E731
  return flat, unravel, lambda v: jax.jvp(grad_flat, (flat,), (v,))[1]


def _scale_by_spectral_inverse(fn_name, inverse, damping, order, seed):
  """``u <- f(H) g`` with ``f(lambda) = inverse(lambda, damping)``."""
  checks.check_non_negative('damping', damping, fn=fn_name)
  if order is not None and (not isinstance(order, int) or order < 1):
    raise ValueError(
        f'{fn_name}: order={order!r} is invalid; allowed: None (exact) or an '
        'int >= 1.')

  def init_fn(params):
    del params
    return CurvatureState(count=jnp.zeros([], jnp.int32), key=jax.random.key(seed))

  def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
    del extra_args
    checks.require_params(params, fn_name)
    if value_fn is None:
      raise ValueError(
          f'{fn_name}: needs the loss; call update(grads, state, params, '
          'value_fn=loss) with loss(params) -> scalar.')
    g, unravel_g = ravel_pytree(updates)
    flat, unravel, hvp = _flat_hvp(value_fn, params)
    g = g.astype(flat.dtype)
    key, sub = jax.random.split(state.key)
    if order is None:
      hessian = jax.hessian(lambda x: value_fn(unravel(x)))(flat)
      hessian = (hessian + hessian.T) / 2
      lam, q = jnp.linalg.eigh(hessian)
      step = q @ (inverse(lam, damping) * (q.T @ g))
    else:
      linalg.check_order(order, flat.size, fn=fn_name)
      alphas, betas, basis = linalg.lanczos_tridiagonal(hvp, g, order, sub)
      theta, s = jnp.linalg.eigh(linalg.tridiagonal_matrix(alphas, betas))
      coeff = basis @ g
      step = basis.T @ (s @ (inverse(theta, damping) * (s.T @ coeff)))
      # Directions the Krylov space did not reach are treated as having the
      # largest curvature found: a cautious gradient step, never amplified.
      residual = g - basis.T @ coeff
      step = step + residual / (jnp.max(jnp.abs(theta)) + damping)
    new_updates = unravel_g(step.astype(g.dtype))
    new_updates = jax.tree.map(lambda n, u: n.astype(u.dtype), new_updates, updates)
    return new_updates, CurvatureState(count=otu.safe_increment(state.count), key=key)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _abs_inverse(lam, damping):
  return 1.0 / (jnp.abs(lam) + damping)


def _inverse(lam, damping):
  return 1.0 / (lam + damping)


def scale_by_saddle_free_newton(
    damping: float = 1e-3,
    order: Optional[int] = None,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Preconditions by ``|H|^{-1}``: curvature taken in absolute value.

  With ``H = Q diag(lambda) Q^T`` the Hessian of ``value_fn`` at ``params``:

  .. math::
    u = Q \, \mathrm{diag}\big(1 / (|\lambda| + \delta)\big) \, Q^T g.

  Along a direction of negative curvature the step points downhill (Newton's
  would point uphill, toward the saddle), and its length is the Newton length.

  ``order=None``: the exact rule, from the full Hessian and ``eigh`` (small
  problems: ``O(n^2)`` memory, ``O(n^3)`` time). ``order=k``: Dauphin et al.'s
  Krylov version: ``k`` Lanczos vectors ``V`` from Hessian-vector products,
  started at ``g``; the rule is applied to ``T = V^T H V`` inside the
  subspace. Since ``g`` starts the Krylov space, ``g`` lies in it up to
  round-off (and breakdowns); any part ``r = (I - V V^T) g`` outside it is
  scaled by ``1 / (max |theta| + delta)``, the smallest scale inside, rather
  than by ``1/delta``, which would amplify round-off.

  Args:
    damping: ``delta >= 0``, added to every ``|lambda|``.
    order: ``None`` (exact) or the number ``k`` of Lanczos vectors, in
      ``[1, n]``.
    seed: PRNG seed (Lanczos start when ``g = 0``, breakdowns).

  The update takes the extra keyword argument ``value_fn`` (the loss; see the
  module docstring) and needs ``params``.

  References:
    Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio, Identifying and
    attacking the saddle point problem in high-dimensional non-convex
    optimization, 2014.
  """
  return _scale_by_spectral_inverse(
      'scale_by_saddle_free_newton', _abs_inverse, damping, order, seed)


def scale_by_newton(
    damping: float = 0.0,
    order: Optional[int] = None,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Preconditions by ``(H + delta I)^{-1}``: Newton's method.

  .. math::
    u = Q \, \mathrm{diag}\big(1 / (\lambda + \delta)\big) \, Q^T g.

  Newton's step goes to the critical point of the local quadratic model, so a
  saddle attracts it as much as a minimum does (the counter-example to
  :func:`scale_by_saddle_free_newton`). An eigenvalue ``lambda = -delta``
  makes the step infinite: Newton is only defined where ``H + delta I`` is
  invertible. ``order`` as in :func:`scale_by_saddle_free_newton`.

  Args:
    damping: ``delta >= 0``, added to every eigenvalue.
    order: ``None`` (exact) or the number of Lanczos vectors.
    seed: PRNG seed (Lanczos start when ``g = 0``, breakdowns).

  References:
    Nocedal & Wright, Numerical Optimization, 2006 (chapter 3).
  """
  return _scale_by_spectral_inverse('scale_by_newton', _inverse, damping, order, seed)


def saddle_free_newton(
    learning_rate: base.ScalarOrSchedule = 1.0,
    damping: float = 1e-3,
    order: Optional[int] = None,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Saddle-free Newton: ``x <- x - eta |H|^{-1} g``.

  Call ``update(grads, state, params, value_fn=loss)``. See
  :func:`scale_by_saddle_free_newton`.

  References:
    Dauphin et al., Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization, 2014.
  """
  checks.check_learning_rate(learning_rate, 'saddle_free_newton')
  return base.chain(
      scale_by_saddle_free_newton(damping, order, seed),
      transform.scale_by_learning_rate(learning_rate),
  )


def newton(
    learning_rate: base.ScalarOrSchedule = 1.0,
    damping: float = 0.0,
    order: Optional[int] = None,
    seed: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Newton's method: ``x <- x - eta (H + delta I)^{-1} g``.

  Call ``update(grads, state, params, value_fn=loss)``. See
  :func:`scale_by_newton`.

  References:
    Nocedal & Wright, Numerical Optimization, 2006 (chapter 3).
  """
  checks.check_learning_rate(learning_rate, 'newton')
  return base.chain(
      scale_by_newton(damping, order, seed),
      transform.scale_by_learning_rate(learning_rate),
  )
