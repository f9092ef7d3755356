"""The dtype of scalar optimizer state for a tree of params.

Scalars such as a step size estimate live in the lowest dtype of the params,
so that multiplying an update by them does not promote it (a bfloat16 param
stays bfloat16).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp


def _lower(a, b):
  promoted = jnp.promote_types(a, b)
  if promoted == a:
    return b
  if promoted == b:
    return a
  raise ValueError(
      f'params mix dtypes {a} and {b}, neither of which promotes to the '
      'other; allowed: leaves whose dtypes are ordered by promotion.'
  )


def lowest_dtype(tree: Any) -> jnp.dtype:
  """The leaf dtype every other leaf's dtype promotes to, or JAX's default."""
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(tree)]
  if not dtypes:
    return jnp.asarray([]).dtype
  return functools.reduce(_lower, dtypes)
