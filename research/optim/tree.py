"""Pytree arithmetic shared by the transformations.

Leaves may be ``None`` (masked-out parameters); the moment helpers keep them
``None``. Complex leaves are supported: squares are ``|g|^2 = conj(g) g``.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

_is_none = lambda x: x is None  # noqa: E731


def abs_sq(x: jax.Array) -> jax.Array:
  """``|x|^2`` for real or complex ``x`` (``x**2`` for real ``x``)."""
  if not isinstance(x, (np.ndarray, jax.Array)):
    raise ValueError(f'abs_sq: expected an array, got {type(x).__name__}.')
  return (x.conj() * x).real


def safe_increment(count: jax.typing.ArrayLike) -> jax.Array:
  """``count + 1``, saturating at the dtype's maximum instead of overflowing."""
  dtype = jnp.asarray(count).dtype
  if jnp.issubdtype(dtype, jnp.integer):
    max_value = jnp.iinfo(dtype).max
  elif jnp.issubdtype(dtype, jnp.floating):
    max_value = jnp.finfo(dtype).max
  else:
    raise ValueError(
        f'safe_increment: count has dtype {dtype}; allowed: integer or float.'
    )
  max_value = jnp.array(max_value, dtype)
  return jnp.where(count < max_value, count + jnp.array(1, dtype), max_value)


safe_int32_increment = safe_increment


def safe_norm(x, min_norm, ord=None, axis=None, keepdims=False):  # pylint: disable=redefined-builtin
  """``max(||x||, min_norm)`` with a zero (not NaN) gradient below ``min_norm``."""
  norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
  x = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
  norm = norm if keepdims else jnp.squeeze(norm, axis=axis)
  masked = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
  return jnp.where(norm <= min_norm, min_norm, masked)


def safe_root_mean_squares(x, min_rms):
  """``max(rms(x), min_rms)`` with a zero (not NaN) gradient below ``min_rms``."""
  rms = jnp.sqrt(jnp.mean(abs_sq(x)))
  x = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
  return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(abs_sq(x))))


def tree_zeros_like(tree: Any, dtype: Optional[jax.typing.DTypeLike] = None):
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: Any, dtype: Optional[jax.typing.DTypeLike] = None):
  return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_full_like(tree: Any, fill_value, dtype=None):
  return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def tree_cast(tree: Any, dtype: Optional[jax.typing.DTypeLike]):
  """Casts every leaf to ``dtype``; ``None`` leaves the tree as it is."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda t: t.astype(dtype), tree)


def tree_cast_like(tree: Any, other: Any):
  """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``other``."""
  return jax.tree.map(lambda t, o: t.astype(o.dtype), tree, other)


def tree_add(x: Any, y: Any, *others: Any):
  return jax.tree.map(lambda a, b, *c: sum(c, a + b), x, y, *others)


def tree_sub(x: Any, y: Any):
  return jax.tree.map(operator.sub, x, y)


def tree_mul(x: Any, y: Any):
  return jax.tree.map(operator.mul, x, y)


def tree_div(x: Any, y: Any):
  return jax.tree.map(operator.truediv, x, y)


def tree_scale(scalar, tree: Any):
  """``scalar * tree``."""
  return jax.tree.map(lambda x: scalar * x, tree)


def tree_add_scale(x: Any, scalar, y: Any):
  """``x + scalar * y``, in the dtype of ``x``."""
  scalar = jnp.asarray(scalar)
  return jax.tree.map(
      lambda a, b: (a + scalar.astype(a.dtype) * b).astype(a.dtype), x, y
  )


def _vdot(a, b):
  a, b = jnp.asarray(a), jnp.asarray(b)
  return jnp.vdot(a, b, precision=jax.lax.Precision.HIGHEST)


def tree_vdot(x: Any, y: Any):
  """``<x, y> = sum_i conj(x_i) y_i`` over all leaves."""
  return jax.tree.reduce(operator.add, jax.tree.map(_vdot, x, y), initializer=0)


def tree_sum(tree: Any):
  return jax.tree.reduce(operator.add, jax.tree.map(jnp.sum, tree), initializer=0)


def tree_max(tree: Any):
  maxes = jax.tree.map(jnp.max, tree)
  return jax.tree.reduce(jnp.maximum, maxes, initializer=jnp.array(-jnp.inf))


def tree_size(tree: Any) -> int:
  return sum(jnp.size(x) for x in jax.tree.leaves(tree))


def _square(x):
  return jnp.square(x.real) + jnp.square(x.imag)


def tree_norm(tree: Any, ord=None, squared: bool = False):  # pylint: disable=redefined-builtin
  """The vector norm of all leaves stacked: ``ord`` in {None/2, 1, inf}."""
  if ord is None or ord == 2:
    sq = tree_sum(jax.tree.map(_square, tree))
    return jnp.array(sq if squared else jnp.sqrt(sq))
  if ord == 1:
    out = tree_sum(jax.tree.map(jnp.abs, tree))
  elif ord in (jnp.inf, 'inf', 'infinity'):
    out = tree_max(jax.tree.map(jnp.abs, tree))
  else:
    raise ValueError(f'tree_norm: ord={ord!r}; allowed: None, 1, 2, inf.')
  return jnp.array(_square(out) if squared else out)


global_norm = tree_norm  # Optax's name for the L2 norm of a whole tree.


def tree_l2_norm(tree: Any, squared: bool = False):
  return tree_norm(tree, squared=squared)


def tree_where(condition, x: Any, y: Any):
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def tree_update_moment(updates, moments, decay, order):
  """EMA of the ``order``-th power: ``m <- (1 - decay) g^order + decay m``."""
  return jax.tree.map(
      lambda g, t: (1 - decay) * (g**order) + decay * t if g is not None else None,
      updates,
      moments,
      is_leaf=_is_none,
  )


def tree_update_moment_per_elem_norm(updates, moments, decay, order):
  """EMA of ``|g|^order`` (the element-wise modulus, for complex ``g`` too)."""

  def orderth_norm(g):
    if jnp.isrealobj(g):
      return g**order
    half_order = order / 2
    if half_order.is_integer():
      half_order = int(half_order)
    return abs_sq(g) ** half_order

  return jax.tree.map(
      lambda g, t: (
          (1 - decay) * orderth_norm(g) + decay * t if g is not None else None
      ),
      updates,
      moments,
      is_leaf=_is_none,
  )


def tree_update_infinity_moment(updates, moments, decay, eps):
  """``u <- max(|g| + eps, decay u)`` (Adamax's infinity norm)."""
  return jax.tree.map(
      lambda g, t: (
          jnp.maximum(jnp.abs(g) + eps, decay * t) if g is not None else None
      ),
      updates,
      moments,
      is_leaf=_is_none,
  )


@functools.partial(jax.jit, inline=True)
def tree_bias_correction(moment, decay, count):
  """``m / (1 - decay^count)``; the division runs in the moment's dtype.

  ``decay^count`` is computed in the count's precision first: in bfloat16 it
  would round to 1 and divide by zero.
  """
  correction = 1 - decay**count
  return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)


bias_correction = tree_bias_correction


def tree_split_key_like(key: jax.Array, tree: Any):
  """One PRNG key per leaf of ``tree``, as a tree of the same structure."""
  treedef = jax.tree.structure(tree)
  keys = jax.random.split(key, treedef.num_leaves)
  return jax.tree.unflatten(treedef, list(keys))
