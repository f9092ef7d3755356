"""Shampoo: one Kronecker-factored full-matrix preconditioner per layer.

Not in Optax. A leaf of rank ``>= 2`` is seen as the matrix
``reshape(prod(shape[:-1]), shape[-1])``: a Dense kernel ``(in, out)`` stays
as it is and a conv kernel ``(h, w, c_in, c_out)`` becomes
``(h w c_in, c_out)``, rows indexed by the receptive field and columns by the
output channel. For that matrix ``G`` Shampoo keeps ``L = sum G G^T`` (rows x
rows) and ``R = sum G^T G`` (columns x columns) and steps along
``L^{-1/4} G R^{-1/4}``.

The practical form of Anil et al. is what is built here: the statistics may
be exponential moving averages, the inverse roots are recomputed every few
steps and cached, large matrices are cut into blocks with their own
statistics, the step length of each layer is grafted from a diagonal method,
and leaves Shampoo cannot precondition (scalars, vectors, matrices with a
side above ``max_precond_dim``) take the grafted direction.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu
# Imported by name: the package re-exports the function ``sm3`` under the
# module's name.
from research.optim.sm3 import _new_sum_weight  # pylint: disable=g-bad-import-order

__all__ = [
    'ScaleByShampooState',
    'scale_by_shampoo',
    'shampoo',
]

GRAFTS = ('adagrad', 'rmsprop', 'sgd', 'none')


class ScaleByShampooState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  mu: base.Updates  # the momentum of the grafted Shampoo directions
  nu: base.Updates  # the grafted method's diagonal accumulator (None for sgd)
  stats: base.Updates  # per leaf: a tuple of (L, R) per block; () if none
  preconds: base.Updates  # per leaf: the cached (L^{-1/p}, R^{-1/p}) per block


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` in full float32 precision (TPUs and GPUs default to less)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def as_matrix_shape(shape) -> tuple[int, int]:
  """The matrix a leaf of rank ``>= 2`` is seen as: all leading axes merged
  into rows, the last axis (output features) as columns."""
  rows = 1
  for d in shape[:-1]:
    rows *= d
  return rows, shape[-1]


def compute_dtype(dtype) -> jnp.dtype:
  """The dtype statistics are kept and factored in: at least float32 (eigh
  has no bfloat16 kernel)."""
  return jnp.promote_types(dtype, jnp.float32)


def check_int(name: str, value: Any, low: int, fn: str) -> None:
  """A structural integer (a size or a step count): a Python int ``>= low``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(
        f'{fn}: {name}={value!r} is not allowed; allowed: an int >= {low}.'
    )


def reject_complex(params, fn: str) -> None:
  if any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params)):
    raise ValueError(f'{fn}: complex params are not supported.')


def unzip_leaves(like, results, n: int) -> tuple:
  """``n`` trees with the structure of ``like`` from a tree of per-leaf
  ``n``-tuples (whose items may themselves be subtrees)."""
  return tuple(jax.tree.map(lambda _, r: r[i], like, results) for i in range(n))


def gram(g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(G G^T, G^T G)``."""
  return matmul(g, g.T), matmul(g.T, g)


def _block_bounds(n: int, size: Optional[int]) -> list[tuple[int, int]]:
  if size is None or n <= size:
    return [(0, n)]
  return [(s, min(s + size, n)) for s in range(0, n, size)]


def _split(x, row_bounds, col_bounds):
  return [x[r0:r1, c0:c1] for r0, r1 in row_bounds for c0, c1 in col_bounds]


def _merge(blocks, row_bounds, col_bounds):
  k = len(col_bounds)
  return jnp.concatenate(
      [jnp.concatenate(blocks[i * k:(i + 1) * k], axis=1)
       for i in range(len(row_bounds))],
      axis=0,
  )


def inverse_root(stat: jax.Array, p: int, eps) -> jax.Array:
  """``(A + eps lambda_max(A) I)^{-1/p}`` of a symmetric PSD ``A``; the
  identity while ``A = 0`` (no statistics yet)."""
  lam, q = jnp.linalg.eigh(stat)
  lam = jnp.maximum(lam, 0.0)
  top = jnp.max(lam)
  scaled = q * (lam + eps * top) ** (-1.0 / p)
  root = matmul(scaled, q.T)
  return jnp.where(top > 0, root, jnp.eye(stat.shape[0], dtype=stat.dtype))


def _graft_direction(graft, g, nu, b2, eps):
  """The grafted method's direction and its new accumulator."""
  if graft == 'sgd':
    return g, nu
  if graft == 'adagrad':
    nu = nu + g * g
  else:  # rmsprop
    nu = b2 * nu + (1.0 - b2) * g * g
  return g / (jnp.sqrt(nu) + eps), nu


def _graft_norm(direction, graft_dir):
  """``direction`` rescaled to the Frobenius norm of ``graft_dir``."""
  norm = jnp.linalg.norm(direction)
  ratio = jnp.linalg.norm(graft_dir) / jnp.where(norm > 0, norm, 1.0)
  return direction * ratio


def scale_by_shampoo(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-8,
    matrix_eps: jax.typing.ArrayLike = 1e-6,
    graft: str = 'adagrad',
    block_size: Optional[int] = 256,
    max_precond_dim: int = 4096,
    precondition_frequency: int = 10,
    start_preconditioning_step: int = 1,
    exponent_override: Optional[int] = None,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Shampoo's Kronecker-factored preconditioning, grafted and blocked.

  For each block ``G`` of a leaf's matrix view (see the module docstring)
  at step ``t``:

  .. math::
    L_t = \beta_2 L_{t-1} + c\, G G^\top, \qquad
    R_t = \beta_2 R_{t-1} + c\, G^\top G,

  with ``c = 1`` if ``beta_2 = 1`` (a sum, Gupta et al.) else
  ``1 - beta_2`` (a moving average, Anil et al.). At steps
  ``t = 1, 1 + f, 1 + 2f, ...`` (``f = precondition_frequency``) the roots

  .. math::
    P_L = (L_t + \epsilon_M \lambda_{\max}(L_t) I)^{-1/p}, \qquad
    P_R = (R_t + \epsilon_M \lambda_{\max}(R_t) I)^{-1/p}

  are recomputed by an eigendecomposition and cached (``p = 4``, or
  ``exponent_override``); other steps reuse them. The Shampoo direction
  ``S = P_L G P_R`` of all blocks is put back together, and (``graft`` not
  ``'none'``) the leaf's direction is grafted, ``D = S ||A|| / ||S||``
  (Frobenius norms over the whole leaf), where ``A`` is the grafted method's
  direction:

  - ``'adagrad'``: ``a_t = a_{t-1} + g^2``, ``A = g / (sqrt(a_t) + eps)``;
  - ``'rmsprop'``: ``a_t = beta_2 a_{t-1} + (1 - beta_2) g^2``, same ``A``;
  - ``'sgd'``: ``A = g``.

  Before ``start_preconditioning_step``, and for leaves that are not
  preconditioned (rank below 2, or a side of the matrix view above
  ``max_precond_dim``), ``D = A`` (Adagrad's ``A`` when ``graft='none'``).
  Finally, heavy-ball momentum:

  .. math::
    m_t = \beta_1 m_{t-1} + D_t, \qquad u_t = m_t \;
    (\text{Nesterov: } u_t = \beta_1 m_t + D_t).

  Args:
    b1: ``beta_1``, the momentum, in ``[0, 1)`` (``0``: none).
    b2: ``beta_2``, the decay of the statistics and of RMSprop's second
      moment, in ``(0, 1]`` (``1``: sums; not allowed with ``'rmsprop'``).
    eps: added to the grafted method's root, ``>= 0``.
    matrix_eps: ``epsilon_M``, the ridge relative to the largest eigenvalue,
      ``> 0``.
    graft: ``'adagrad'``, ``'rmsprop'``, ``'sgd'`` or ``'none'``.
    block_size: sides of the matrix view longer than this are cut into
      blocks of this many rows (columns), each with its own ``L`` and ``R``;
      ``None``: no blocks.
    max_precond_dim: a leaf whose matrix view has a side longer than this
      is not preconditioned.
    precondition_frequency: ``f``, steps between recomputations of the roots.
    start_preconditioning_step: the first step that uses the Shampoo
      direction (the statistics are gathered from step 1).
    exponent_override: ``p``, the root taken of each factor (default 4, the
      ``2k`` of Gupta et al. for an order-``k = 2`` tensor).
    nesterov: Nesterov's form of the momentum.

  References:
    Gupta, Koren & Singer, Shampoo: Preconditioned stochastic tensor
    optimization, 2018; Anil et al., Scalable second order optimization for
    deep learning, 2020.
  """
  fn = 'scale_by_shampoo'
  checks.check_decay('b1', b1, fn=fn)
  checks.check_range('b2', b2, 0.0, 1.0, low_inclusive=False, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_positive('matrix_eps', matrix_eps, fn=fn)
  checks.check_choice('graft', graft, GRAFTS, fn=fn)
  if block_size is not None:
    check_int('block_size', block_size, 1, fn)
  check_int('max_precond_dim', max_precond_dim, 1, fn)
  check_int('precondition_frequency', precondition_frequency, 1, fn)
  check_int('start_preconditioning_step', start_preconditioning_step, 1, fn)
  if exponent_override is not None:
    check_int('exponent_override', exponent_override, 1, fn)
  if graft == 'rmsprop' and checks.is_concrete_number(b2) and b2 == 1.0:
    raise ValueError(
        f"{fn}: b2=1.0 is not allowed with graft='rmsprop' (its second "
        'moment would never change); allowed: b2 in (0, 1).'
    )
  p = exponent_override or 4
  # The direction used where Shampoo's is not: the graft, or Adagrad's.
  fallback = 'adagrad' if graft == 'none' else graft

  def plan(shape):
    """Block bounds of a preconditioned leaf, or None."""
    if len(shape) < 2:
      return None
    m, n = as_matrix_shape(shape)
    if max(m, n) > max_precond_dim:
      return None
    return _block_bounds(m, block_size), _block_bounds(n, block_size)

  def init_leaf(x):
    bounds = plan(x.shape)
    if bounds is None:
      return (), ()
    dtype = compute_dtype(x.dtype)
    blocks = [(r1 - r0, c1 - c0) for r0, r1 in bounds[0] for c0, c1 in bounds[1]]
    stats = tuple((jnp.zeros((r, r), dtype), jnp.zeros((c, c), dtype))
                  for r, c in blocks)
    eyes = tuple((jnp.eye(r, dtype=dtype), jnp.eye(c, dtype=dtype))
                 for r, c in blocks)
    return stats, eyes

  def init_fn(params):
    reject_complex(params, fn)
    stats, preconds = unzip_leaves(params, jax.tree.map(init_leaf, params), 2)
    nu = None if fallback == 'sgd' else otu.tree_zeros_like(params)
    return ScaleByShampooState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params),
        nu=nu,
        stats=stats,
        preconds=preconds,
    )

  def shampoo_direction(g, stats, preconds, refresh):
    bounds = plan(g.shape)
    row_bounds, col_bounds = bounds
    blocks = _split(g.reshape(as_matrix_shape(g.shape)), row_bounds, col_bounds)
    weight = _new_sum_weight(b2)
    stats = tuple(
        (b2 * s_l + weight * gl, b2 * s_r + weight * gr)
        for (s_l, s_r), (gl, gr) in zip(stats, map(gram, blocks))
    )
    preconds = jax.lax.cond(
        refresh,
        lambda s, _: jax.tree.map(lambda a: inverse_root(a, p, matrix_eps), s),
        lambda _, old: old,
        stats,
        preconds,
    )
    blocks = [matmul(matmul(pl, b), pr) for b, (pl, pr) in zip(blocks, preconds)]
    return _merge(blocks, row_bounds, col_bounds).reshape(g.shape), stats, preconds

  def update_leaf(g, mu, nu, stats, preconds, count, refresh):
    out_dtype = g.dtype
    g = g.astype(compute_dtype(g.dtype))
    graft_dir, nu_new = _graft_direction(
        fallback, g, None if nu is None else nu.astype(g.dtype), b2, eps)
    if plan(g.shape) is None:
      direction = graft_dir
    else:
      direction, stats, preconds = shampoo_direction(g, stats, preconds, refresh)
      if graft != 'none':
        direction = _graft_norm(direction, graft_dir)
      direction = jnp.where(count >= start_preconditioning_step, direction, graft_dir)
    mu_new = b1 * mu.astype(g.dtype) + direction
    u = b1 * mu_new + direction if nesterov else mu_new
    nu_new = None if nu is None else nu_new.astype(nu.dtype)
    return u.astype(out_dtype), mu_new.astype(mu.dtype), nu_new, stats, preconds

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = otu.safe_increment(state.count)
    refresh = (count - 1) % precondition_frequency == 0
    nu = state.nu if state.nu is not None else jax.tree.map(lambda _: None, updates)
    results = jax.tree.map(
        lambda g, m, v, s, pc: update_leaf(g, m, v, s, pc, count, refresh),
        updates, state.mu, nu, state.stats, state.preconds,
        is_leaf=lambda x: x is None,
    )
    u, mu, nu, stats, preconds = unzip_leaves(updates, results, 5)
    return u, ScaleByShampooState(
        count=count,
        mu=mu,
        nu=None if state.nu is None else nu,
        stats=stats,
        preconds=preconds,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def shampoo(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-8,
    matrix_eps: jax.typing.ArrayLike = 1e-6,
    graft: str = 'adagrad',
    block_size: Optional[int] = 256,
    max_precond_dim: int = 4096,
    precondition_frequency: int = 10,
    start_preconditioning_step: int = 1,
    exponent_override: Optional[int] = None,
    nesterov: bool = False,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> base.GradientTransformationExtraArgs:
  r"""The Shampoo optimizer: :func:`scale_by_shampoo`, decoupled weight decay
  and the learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t (u_t + \lambda \theta_{t-1})

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1, b2, eps, matrix_eps, graft, block_size, max_precond_dim,
      precondition_frequency, start_preconditioning_step,
      exponent_override, nesterov: as :func:`scale_by_shampoo`.
    weight_decay: ``lambda``, a scalar or a schedule (``0``: none).
    mask: where the decay applies: a tree of booleans or a callable
      ``params -> tree``.

  References:
    Gupta, Koren & Singer, Shampoo: Preconditioned stochastic tensor
    optimization, 2018; Anil et al., Scalable second order optimization for
    deep learning, 2020; Loshchilov & Hutter, Decoupled weight decay
    regularization, 2019.
  """
  return with_decay_and_learning_rate(
      'shampoo',
      scale_by_shampoo(
          b1=b1, b2=b2, eps=eps, matrix_eps=matrix_eps, graft=graft,
          block_size=block_size, max_precond_dim=max_precond_dim,
          precondition_frequency=precondition_frequency,
          start_preconditioning_step=start_preconditioning_step,
          exponent_override=exponent_override, nesterov=nesterov,
      ),
      learning_rate, weight_decay, mask,
  )


def with_decay_and_learning_rate(fn, scaler, learning_rate, weight_decay, mask):
  """``chain(scaler, add_decayed_weights(weight_decay, mask),
  scale_by_learning_rate(learning_rate))``."""
  checks.check_learning_rate(learning_rate, fn)
  checks.check_learning_rate(weight_decay, fn, name='weight_decay')
  return base.chain(
      scaler,
      adding.add_decayed_weights(weight_decay, mask),
      transform.scale_by_learning_rate(learning_rate),
  )
