"""Pytree arithmetic shared by the transformations; Optax's ``optax.tree``.

Leaves may be ``None`` (masked-out parameters); the moment helpers keep them
``None``. Complex leaves are supported: squares are ``|g|^2 = conj(g) g``.

Every helper has its long name (``tree_norm``, used across ``research``) and
Optax 0.2.8's short name (``norm``), so ``research.optim.tree.norm`` works as
``optax.tree.norm``. One long name keeps a stricter behaviour for its callers:
``tree_add_scale`` casts the result to the dtype of ``x``; the short
``add_scale`` (and ``tree_utils.tree_add_scale``) follow Optax and do not.
"""

from __future__ import annotations

import builtins
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
  """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``other``.

  A leaf of ``other`` without a dtype (a Python number) leaves ``tree``'s as is.
  """
  return jax.tree.map(
      lambda t, o: t.astype(o.dtype) if hasattr(o, 'dtype') else t, tree, other
  )


def tree_add(x: Any, y: Any, *others: Any):
  return jax.tree.map(lambda a, b, *c: builtins.sum(c, a + b), x, y, *others)


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


def tree_sum(tree: Any, associative_reduction: bool = False):
  """The sum of all elements of all leaves.

  ``associative_reduction`` sums the leaves' sums as a balanced tree (faster to
  compile for many leaves; the rounding may differ in the last bits).
  """
  sums = jax.tree.map(jnp.sum, tree)
  if associative_reduction:
    return jax.tree.reduce_associative(operator.add, sums, identity=0)
  return jax.tree.reduce(operator.add, sums, initializer=0)


def _reduce_nonempty(reduce_leaf, combine, initial, tree):
  # Empty leaves have no max or min; they are left out of the reduction.
  parts = jax.tree.map(lambda x: None if jnp.size(x) == 0 else reduce_leaf(x), tree)
  return jax.tree.reduce(combine, parts, initializer=initial)


def tree_max(tree: Any):
  """The largest element of all leaves (``-inf`` for a tree without elements)."""
  return _reduce_nonempty(jnp.max, jnp.maximum, -float('inf'), tree)


def tree_min(tree: Any):
  """The smallest element of all leaves (``inf`` for a tree without elements)."""
  return _reduce_nonempty(jnp.min, jnp.minimum, float('inf'), tree)


def tree_size(tree: Any) -> int:
  return builtins.sum(jnp.size(x) for x in jax.tree.leaves(tree))


def tree_conj(tree: Any):
  return jax.tree.map(jnp.conj, tree)


def tree_real(tree: Any):
  return jax.tree.map(jnp.real, tree)


def tree_clip(tree: Any, min_value=None, max_value=None):
  """Every leaf clipped to ``[min_value, max_value]`` (``None``: no bound)."""
  return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def tree_batch_shape(tree: Any, shape: tuple[int, ...] = ()):
  """Every leaf broadcast to ``shape + leaf.shape`` (leading batch axes)."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def tree_allclose(a: Any, b: Any, rtol=1e-05, atol=1e-08, equal_nan: bool = False):
  """``jnp.allclose`` leaf by leaf, and-ed over the tree (``True`` if empty)."""
  close = jax.tree.map(
      lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan),
      a, b,
  )
  return functools.reduce(operator.and_, jax.tree.leaves(close), True)


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


def _add_scale(x: Any, scalar, y: Any):
  """``x + scalar * y`` with Optax's semantics: ``None`` leaves of ``x`` stay
  ``None`` and the result takes the promoted dtype."""
  scalar = jnp.asarray(scalar)
  return jax.tree.map(
      lambda a, b: None if a is None else a + scalar * b, x, y, is_leaf=_is_none
  )


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


def tree_random_like(key: jax.Array, target_tree: Any, sampler=jax.random.normal,
                     dtype: Optional[jax.typing.DTypeLike] = None):
  """A tree like ``target_tree`` of draws ``sampler(key_i, shape, dtype)``.

  Each leaf gets its own key (:func:`tree_split_key_like`); ``dtype=None``
  uses each leaf's dtype.
  """
  keys = tree_split_key_like(key, target_tree)
  return jax.tree.map(
      lambda leaf, k: sampler(k, jnp.shape(leaf), dtype or leaf.dtype),
      target_tree, keys,
  )


def tree_unwrap_random_key_data(tree: Any):
  """Typed PRNG keys replaced by their raw ``key_data`` (to compare them)."""

  def unwrap(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    ):
      return jax.random.key_data(x)
    return x

  return jax.tree.map(unwrap, tree)


def _promotes_to(low, high) -> bool:
  return jnp.promote_types(low, high) == high


def _lower(a, b):
  if _promotes_to(a, b):
    return a
  if _promotes_to(b, a):
    return b
  raise ValueError(
      f'tree_dtype: {a} and {b} cannot be ordered: neither promotes to the '
      'other.'
  )


def _higher(a, b):
  return b if _lower(a, b) == a else a


_DTYPE_HANDLERS = {
    'promote': jnp.promote_types,
    'highest': _higher,
    'lowest': _lower,
}


def tree_dtype(tree: Any, mixed_dtype_handler: Optional[str] = None):
  """The dtype of the leaves.

  Args:
    tree: a pytree of arrays; an empty tree gives JAX's default float dtype.
    mixed_dtype_handler: ``None`` (all leaves must share one dtype, else
      ``ValueError``), ``'promote'`` (the common promoted dtype), ``'highest'``
      or ``'lowest'`` (along the promotion order; ``ValueError`` for dtypes
      that neither promote to the other).
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.asarray(leaves).dtype
  dtypes = [jnp.asarray(x).dtype for x in leaves]
  if mixed_dtype_handler is None:
    bad = [
        f'Expected dtype={dtypes[0]} for {jax.tree_util.keystr(path)} but got '
        f'{jnp.asarray(x).dtype}.'
        for path, x in jax.tree_util.tree_leaves_with_path(tree)
        if jnp.asarray(x).dtype != dtypes[0]
    ]
    if bad:
      raise ValueError('\n'.join(bad))
    return dtypes[0]
  if mixed_dtype_handler not in _DTYPE_HANDLERS:
    raise ValueError(
        f'tree_dtype: mixed_dtype_handler={mixed_dtype_handler!r}; allowed: '
        "None, 'promote', 'highest', 'lowest'."
    )
  return functools.reduce(_DTYPE_HANDLERS[mixed_dtype_handler], dtypes)


# Searching and editing optimizer states by field name (Optax's tree.get/set).
from research.optim.tree_state import (  # noqa: E402
    NamedTupleKey,
    tree_get,
    tree_get_all_with_path,
    tree_map_params,
    tree_set,
)

# Optax 0.2.8's ``optax.tree`` names. Defined last: ``max``, ``min``, ``sum``
# and ``set`` shadow the builtins in this module (the code above uses
# ``builtins`` where it needs them).
add = tree_add
add_scale = _add_scale
allclose = tree_allclose
batch_shape = tree_batch_shape
# bias_correction is defined above, as Optax's top-level name.
cast = tree_cast
cast_like = tree_cast_like
clip = tree_clip
conj = tree_conj
div = tree_div
dtype = tree_dtype
full_like = tree_full_like
get = tree_get
get_all_with_path = tree_get_all_with_path
map_params = tree_map_params
max = tree_max  # pylint: disable=redefined-builtin
min = tree_min  # pylint: disable=redefined-builtin
mul = tree_mul
norm = tree_norm
ones_like = tree_ones_like
random_like = tree_random_like
real = tree_real
scale = tree_scale
set = tree_set  # pylint: disable=redefined-builtin
size = tree_size
split_key_like = tree_split_key_like
sub = tree_sub
sum = tree_sum  # pylint: disable=redefined-builtin
unwrap_random_key_data = tree_unwrap_random_key_data
update_infinity_moment = tree_update_infinity_moment
update_moment = tree_update_moment
update_moment_per_elem_norm = tree_update_moment_per_elem_norm
vdot = tree_vdot
where = tree_where
zeros_like = tree_zeros_like
