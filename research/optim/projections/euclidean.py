r"""Euclidean projections of pytrees onto convex sets.

Each function solves

.. math::
  \operatorname{argmin}_{y \in C} \|x - y\|_2^2

for a set ``C``, where the norm is over all leaves of the tree stacked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from research.optim import tree as otu

__all__ = [
    'projection_box',
    'projection_halfspace',
    'projection_hypercube',
    'projection_hyperplane',
    'projection_l1_ball',
    'projection_l1_sphere',
    'projection_l2_ball',
    'projection_l2_sphere',
    'projection_linf_ball',
    'projection_non_negative',
    'projection_simplex',
    'projection_vector',
]


def projection_non_negative(tree: Any) -> Any:
  r"""Projection onto the non-negative orthant ``{y : y >= 0}``: ``max(x, 0)``.

  Args:
    tree: the tree ``x`` to project.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return jax.tree.map(jax.nn.relu, tree)


def _like_tree(bound: Any, tree: Any) -> Any:
  """A bound given as one number applies to every leaf of ``tree``."""
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(bound)):
    return jax.tree.map(lambda _: bound, tree)
  return bound


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
  r"""Projection onto the box ``{y : lower <= y <= upper}``: a clip per element.

  Args:
    tree: the tree ``x`` to project.
    lower: the lower bound, a scalar or a tree with the structure of ``tree``.
    upper: the upper bound, a scalar or a tree with the structure of ``tree``.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return jax.tree.map(
      jnp.clip, tree, _like_tree(lower, tree), _like_tree(upper, tree))


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
  r"""Projection onto the hypercube ``{y : 0 <= y <= scale}``.

  Args:
    tree: the tree ``x`` to project.
    scale: the side of the cube, a scalar or a tree (default: the unit cube).

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return projection_box(tree, lower=0, upper=scale)


@jax.custom_jvp
def _projection_unit_simplex(values: jax.Array) -> jax.Array:
  """``max(v - tau, 0)`` with ``tau`` such that the result sums to 1."""
  n = values.shape[0]
  desc = jnp.sort(values)[::-1]
  partial_sums = jnp.cumsum(desc)
  k = jnp.arange(n) + 1
  # The support size is the largest k with desc_k > (sum_{i<=k} desc_i - 1) / k.
  support = jnp.count_nonzero(1 / k + (desc - partial_sums / k) > 0)
  return jax.nn.relu(1 / support + (values - partial_sums[support - 1] / support))


@_projection_unit_simplex.defjvp
def _projection_unit_simplex_jvp(primals, tangents):
  (values,), (dvalues,) = primals, tangents
  out = _projection_unit_simplex(values)
  # On the support the map is v - mean(v over support); zero elsewhere.
  on = out > 0
  mean_on = jnp.dot(on, dvalues) / jnp.count_nonzero(on)
  return out, on * dvalues - mean_on * on


def projection_simplex(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the simplex ``{y : y >= 0, sum(y) = scale}``.

  .. math::
    y = \max(x - \tau, 0), \qquad \tau \text{ such that } \textstyle\sum y =
    \text{scale},

  with ``tau`` found by sorting (``O(n log n)``); differentiable almost
  everywhere, with the Jacobian of the projection on the support.

  Args:
    tree: the tree ``x`` to project (all leaves together form one vector).
    scale: the sum of the result (default: the probability simplex).

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Duchi et al., Efficient Projections onto the l1-Ball for Learning in High
    Dimensions, 2008.
  """
  values, unravel = ravel_pytree(tree)
  return unravel(scale * _projection_unit_simplex(values / scale))


def projection_l1_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the l1 sphere ``{y : ||y||_1 = scale}``.

  ``sign(x) * projection_simplex(|x|, scale)``.

  Args:
    tree: the tree ``x`` to project.
    scale: the radius.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Duchi et al., Efficient Projections onto the l1-Ball for Learning in High
    Dimensions, 2008.
  """
  magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
  return otu.tree_mul(jax.tree.map(jnp.sign, tree), magnitudes)


def projection_l1_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the l1 ball ``{y : ||y||_1 <= scale}``.

  ``x`` itself if inside, else its projection on the l1 sphere.

  Args:
    tree: the tree ``x`` to project.
    scale: the radius.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Duchi et al., Efficient Projections onto the l1-Ball for Learning in High
    Dimensions, 2008.
  """
  inside = otu.tree_norm(tree, ord=1) <= scale
  return jax.lax.cond(
      inside, lambda t: t, lambda t: projection_l1_sphere(t, scale), tree)


def projection_l2_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the l2 sphere ``{y : ||y||_2 = scale}``: ``scale x / ||x||``.

  Args:
    tree: the tree ``x`` to project (not 0).
    scale: the radius.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return otu.tree_scale(scale / otu.tree_norm(tree), tree)


def projection_l2_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the l2 ball ``{y : ||y||_2 <= scale}``.

  .. math::
    y = \frac{\text{scale}}{\max(\|x\|, \text{scale})} x.

  Args:
    tree: the tree ``x`` to project.
    scale: the radius.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  sq_norm = otu.tree_norm(tree, squared=True)
  return otu.tree_scale(scale / jnp.sqrt(jnp.maximum(sq_norm, scale**2)), tree)


def projection_linf_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
  r"""Projection onto the l-infinity ball ``{y : max |y| <= scale}``: a clip.

  Args:
    tree: the tree ``x`` to project.
    scale: the radius.

  Returns:
    The projection, with the structure of ``tree``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return projection_box(tree, lower=otu.tree_full_like(tree, -scale),
                        upper=otu.tree_full_like(tree, scale))


def projection_vector(x: Any, a: Any) -> Any:
  r"""Projection onto the line spanned by ``a``: ``(<x, a> / <a, a>) a``.

  Args:
    x: the tree to project.
    a: the direction, a tree with the structure of ``x``.

  Returns:
    The projection, with the structure of ``x``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return otu.tree_scale(otu.tree_vdot(x, a) / otu.tree_vdot(a, a), a)


def _step_to_plane(x, a, b):
  """The multiple of ``a`` that takes ``x`` onto ``<a, y> = b``."""
  return (b - otu.tree_vdot(x, a)) / otu.tree_vdot(a, a)


def projection_hyperplane(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
  r"""Projection onto the hyperplane ``{y : <a, y> = b}``.

  .. math::
    y = x + \frac{b - \langle a, x \rangle}{\langle a, a \rangle} a.

  Args:
    x: the tree to project.
    a: the normal of the hyperplane, a tree with the structure of ``x``.
    b: the offset, a scalar.

  Returns:
    The projection, with the structure of ``x``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return otu.tree_add_scale(x, _step_to_plane(x, a, b), a)


def projection_halfspace(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
  r"""Projection onto the halfspace ``{y : <a, y> <= b}``.

  .. math::
    y = x + \min\Big(0, \frac{b - \langle a, x \rangle}{\langle a, a
    \rangle}\Big) a.

  Args:
    x: the tree to project.
    a: the normal of the halfspace, a tree with the structure of ``x``.
    b: the offset, a scalar.

  Returns:
    The projection, with the structure of ``x``.

  References:
    Boyd and Vandenberghe, Convex Optimization, 2004.
  """
  return otu.tree_add_scale(x, jnp.minimum(_step_to_plane(x, a, b), 0), a)
