"""GaLore: a base optimizer run on gradients projected to a low-rank subspace."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'GaLoreDimensionNumbers',
    'GaLoreState',
    'galore',
    'scale_by_galore',
]


class GaLoreDimensionNumbers(NamedTuple):
  """Which axes of a weight form the rows and the columns of its matrix.

  A weight stored with more than two axes (e.g. attention as ``(embed, heads,
  head_dim)``) is projected as the matrix of shape ``(prod rows, prod
  cols)``; e.g. ``reduction_axis=0, output_axis=(1, 2)``. Every axis must be
  in exactly one of the two.
  """

  reduction_axis: Union[Sequence[int], int] = 0
  output_axis: Union[Sequence[int], int] = 1


GaLoreDimNumsOrFn = Union[
    GaLoreDimensionNumbers, base.Params,
    Callable[[base.Params], Optional[base.Params]],
]


def _is_spec(x):
  return x is None or isinstance(x, GaLoreDimensionNumbers)


def _axes(axis, ndim):
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  return tuple(a % ndim for a in axes)


def _matrix_view(x, spec: GaLoreDimensionNumbers):
  """``(to_matrix, from_matrix)`` for ``x`` seen as a (rows, cols) matrix."""
  if x.ndim < 2:
    raise ValueError(
        f'galore: a projected weight needs rank >= 2; got shape {x.shape} '
        f'with {spec}.')
  rows, cols = _axes(spec.reduction_axis, x.ndim), _axes(spec.output_axis, x.ndim)
  if set(rows) & set(cols) or len(set(rows) | set(cols)) != x.ndim:
    raise ValueError(
        f'galore: {spec} for shape {x.shape} gives rows {rows} and columns '
        f'{cols}; allowed: disjoint axes that together cover all '
        f'{x.ndim} axes.')
  order = rows + cols
  inverse = tuple(sorted(range(x.ndim), key=order.__getitem__))
  permuted_shape = tuple(x.shape[a] for a in order)
  shape_2d = (math.prod(permuted_shape[:len(rows)]),
              math.prod(permuted_shape[len(rows):]))
  to_matrix = lambda y: y.transpose(order).reshape(shape_2d)  # noqa: E731
  from_matrix = lambda y: y.reshape(permuted_shape).transpose(inverse)  # noqa: E731
  return to_matrix, from_matrix


def _projector_layout(shape_2d, rank):
  """``(left, r)``: project rows (``P^T G``) when the matrix is tall."""
  m, n = shape_2d
  return m >= n, min(rank, m, n)


def _pair_split(tree, pairs):
  """A tree of pairs (at ``tree``'s leaves) as a pair of trees."""
  if not jax.tree.leaves(tree):  # e.g. the placeholder of tree_map_params
    return tree, tree
  return jax.tree.transpose(
      jax.tree.structure(tree), jax.tree.structure((0, 0)), pairs)


class GaLoreState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  base_optimizer_state: base.OptState  # on low-rank (and unprojected) shapes
  projector: base.Updates  # P per weight; an empty (0, 0) array if unprojected


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[base.GradientTransformation] = None,
    weight_dimension_numbers: Optional[GaLoreDimNumsOrFn] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Runs ``base_optimizer`` on low-rank projections of the weight gradients.

  For a weight whose gradient is the ``m x n`` matrix ``G_t`` and ``r =
  min(rank, m, n)``: every ``update_proj_gap`` steps (from the first), the
  projector ``P`` is refreshed from the SVD ``G_t = U S V^T`` (in float32),
  ``P = U_{:, :r}`` if ``m >= n`` else ``P = V_{:, :r}``. Then

  .. math::
    R_t = P^T G_t \;\; (\text{or } G_t P), \qquad
    \tilde R_t = \mathrm{base}(R_t), \qquad
    u_t = s\, P \tilde R_t \;\; (\text{or } s\, \tilde R_t P^T)

  Leaves that are not projected go through ``base_optimizer`` as they are
  (without ``s``). ``base_optimizer`` sees no params (its inputs have the
  low-rank shapes), so it must not need them: use e.g. ``scale_by_adam``,
  and :func:`galore`'s ``weight_decay`` for decay.

  Args:
    rank: the projection rank, an int ``> 0``.
    update_proj_gap: steps between refreshes of ``P``, an int ``>= 1``.
    scale: ``s``, multiplies the projected-back updates.
    base_optimizer: the transformation in the subspace; default
      ``scale_by_adam()``.
    weight_dimension_numbers: which leaves are projected and how: ``None``
      (every 2-D leaf, as ``(rows, cols)``), one
      :class:`GaLoreDimensionNumbers` (every leaf of rank >= 2), a tree of
      them with ``None`` for leaves to skip, or a callable ``params -> such a
      tree``.

  References:
    Zhao et al., GaLore: memory-efficient LLM training by gradient low-rank
    projection, 2024.
  """
  fn = 'scale_by_galore'
  if isinstance(rank, bool) or not isinstance(rank, int):
    raise TypeError(f'{fn}: rank={rank!r} must be an int > 0.')
  if rank <= 0:
    raise ValueError(f'{fn}: rank={rank} is out of range; allowed: an int > 0.')
  if (isinstance(update_proj_gap, bool) or not isinstance(update_proj_gap, int)
      or update_proj_gap < 1):
    raise ValueError(
        f'{fn}: update_proj_gap={update_proj_gap!r} is out of range; allowed: '
        'an int >= 1.')
  if base_optimizer is None:
    base_optimizer = transform.scale_by_adam()
  base_optimizer = base.with_extra_args_support(base_optimizer)

  def specs_for(tree):
    spec = weight_dimension_numbers
    if spec is None:
      return jax.tree.map(
          lambda x: GaLoreDimensionNumbers() if x.ndim == 2 else None, tree)
    if isinstance(spec, GaLoreDimensionNumbers):
      return jax.tree.map(lambda x: spec if x.ndim >= 2 else None, tree)
    if callable(spec):
      return spec(tree)
    return spec

  def map_specs(f, tree, *rest):
    return jax.tree.map(f, tree, *rest, specs_for(tree), is_leaf=_is_spec)

  def shapes(p, spec):
    """(zero projector, zero low-rank proxy) for the base optimizer's init."""
    if spec is None:
      return jnp.zeros((0, 0), p.dtype), jnp.zeros_like(p)
    to_matrix, _ = _matrix_view(p, spec)
    (m, n) = to_matrix(p).shape
    left, r = _projector_layout((m, n), rank)
    projector, proxy = ((m, r), (r, n)) if left else ((n, r), (m, r))
    return jnp.zeros(projector, p.dtype), jnp.zeros(proxy, p.dtype)

  def init_fn(params):
    projectors, proxies = _pair_split(params, map_specs(shapes, params))
    return GaLoreState(count=jnp.zeros([], jnp.int32),
                       base_optimizer_state=base_optimizer.init(proxies),
                       projector=projectors)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = otu.safe_increment(state.count)  # first, as in Optax's program
    refresh = state.count % update_proj_gap == 0

    def project(g, old, spec):
      if spec is None:
        return g, old
      to_matrix, _ = _matrix_view(g, spec)
      g2 = to_matrix(g)
      left, r = _projector_layout(g2.shape, rank)

      def from_svd():
        u, _, vt = jnp.linalg.svd(g2.astype(jnp.float32), full_matrices=False)
        p = u[:, :r] if left else vt[:r, :].T
        return p.astype(g.dtype)

      projector = jax.lax.cond(refresh, from_svd, lambda: old)
      return (projector.T @ g2 if left else g2 @ projector), projector

    def project_back(low, projector, g, spec):
      if spec is None:
        return low
      to_matrix, from_matrix = _matrix_view(g, spec)
      left, _ = _projector_layout(to_matrix(g).shape, rank)
      full = projector @ low if left else low @ projector.T
      return (scale * from_matrix(full)).astype(g.dtype)

    low_rank, projectors = _pair_split(
        updates, map_specs(project, updates, state.projector))
    low_updates, base_state = base_optimizer.update(
        low_rank, state.base_optimizer_state, None)
    updates = map_specs(
        lambda g, low, p, spec: project_back(low, p, g, spec),
        updates, low_updates, projectors)
    return updates, GaLoreState(count=count,
                                base_optimizer_state=base_state,
                                projector=projectors)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def galore(
    learning_rate: base.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[base.GradientTransformation] = None,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
    weight_dimension_numbers: Optional[GaLoreDimNumsOrFn] = None,
) -> base.GradientTransformationExtraArgs:
  r"""GaLore: :func:`scale_by_galore`, decoupled weight decay, learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \big(s\, P\, \mathrm{base}(P^T G_t)
    + \lambda \theta_{t-1}\big)

  The optimizer state of a projected ``m x n`` weight is that of an ``r x n``
  (or ``m x r``) matrix. If ``base_optimizer`` has its own learning rate,
  set ``learning_rate=1``.

  Args:
    learning_rate: ``eta >= 0``, a scalar or a schedule.
    rank: the projection rank, an int ``> 0``.
    update_proj_gap: steps between refreshes of the projector, ``>= 1``.
    scale: ``s``, multiplies the projected-back updates.
    base_optimizer: a params-free transformation; default ``scale_by_adam()``.
    weight_decay: ``lambda >= 0``, applied in the full space.
    mask: where weight decay applies (a tree of booleans or a callable).
    weight_dimension_numbers: see :func:`scale_by_galore`.

  References:
    Zhao et al., GaLore: memory-efficient LLM training by gradient low-rank
    projection, 2024.
  """
  checks.check_learning_rate(learning_rate, 'galore')
  checks.check_non_negative('weight_decay', weight_decay, fn='galore')
  return base.chain(
      scale_by_galore(rank=rank, update_proj_gap=update_proj_gap, scale=scale,
                      base_optimizer=base_optimizer,
                      weight_dimension_numbers=weight_dimension_numbers),
      adding.add_decayed_weights(weight_decay, mask),
      transform.scale_by_learning_rate(learning_rate),
  )
