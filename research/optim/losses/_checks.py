"""Input checks shared by the losses: each error names the argument and its value.

Optax raises ``TypeError`` for a wrong dtype and ``ValueError`` for a wrong
shape or rank; so do these.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _check_kind(fn: str, name: str, x: Any, kind, allowed: str) -> None:
  dtype = jax.dtypes.result_type(x)
  if not jnp.issubdtype(dtype, kind):
    raise TypeError(f'{fn}: {name} has dtype {dtype}; allowed: {allowed}.')


def check_floating(fn: str, name: str, x: Any) -> None:
  _check_kind(fn, name, x, jnp.floating, 'a floating dtype')


def check_integer(fn: str, name: str, x: Any) -> None:
  _check_kind(fn, name, x, jnp.integer, 'an integer dtype')


def check_same_shape(fn: str, name_a: str, a: Any, name_b: str, b: Any) -> None:
  if _shape(a) != _shape(b):
    raise ValueError(
        f'{fn}: {name_a} has shape {_shape(a)} and {name_b} has shape '
        f'{_shape(b)}; they must be equal.'
    )


def check_rank(fn: str, name: str, x: Any, rank: int) -> None:
  if len(_shape(x)) != rank:
    raise ValueError(
        f'{fn}: {name} has shape {_shape(x)} (rank {len(_shape(x))}); '
        f'allowed: rank {rank}.'
    )
