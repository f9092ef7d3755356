"""Validation of hyperparameters given as Python numbers.

Hyperparameters may also arrive as traced arrays (inside ``jit`` or
``inject_hyperparams``) or as schedules; those are not checked, because their
values are not known when the transformation is built.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Optional

import jax
import numpy as np


def is_concrete_number(x: Any) -> bool:
  """True for Python and NumPy real scalars (not bools, arrays or tracers)."""
  if isinstance(x, bool):
    return False
  return isinstance(x, (numbers.Real, np.integer, np.floating)) or (
      isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in 'if'
  )


def _interval(low, high, low_inclusive, high_inclusive) -> str:
  left = '[' if low_inclusive and low is not None else '('
  right = ']' if high_inclusive and high is not None else ')'
  low = '-inf' if low is None else low
  high = 'inf' if high is None else high
  return f'{left}{low}, {high}{right}'


def _is_numeric(x: Any) -> bool:
  """Numbers, bools, numeric NumPy values and JAX arrays (tracers included)."""
  if isinstance(x, (numbers.Number, jax.Array)):
    return True
  return isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in 'biufc'


def check_number(
    name: str, value: Any, fn: str = '', *, allow_callable: bool = False
) -> None:
  """Raises TypeError unless ``value`` is ``None``, a number or a numeric
  array (or, with ``allow_callable``, a schedule): a string such as
  ``'1e-3'`` fails here, when the transformation is built."""
  if value is None or _is_numeric(value) or (allow_callable and callable(value)):
    return
  where = f'{fn}: ' if fn else ''
  allowed = 'a number, an array' + (' or a schedule' if allow_callable else '')
  raise TypeError(
      f'{where}{name}={value!r} has type {type(value).__name__}; allowed: '
      f'{allowed}.'
  )


def check_range(
    name: str,
    value: Any,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    fn: str = '',
) -> None:
  """Raises ValueError if a concrete ``value`` lies outside the interval, and
  TypeError if it is not a number, an array or a schedule at all."""
  check_number(name, value, fn, allow_callable=True)
  if value is None or not is_concrete_number(value):
    return
  v = float(value)
  ok = not np.isnan(v)
  if low is not None:
    ok &= v >= low if low_inclusive else v > low
  if high is not None:
    ok &= v <= high if high_inclusive else v < high
  if not ok:
    where = f'{fn}: ' if fn else ''
    raise ValueError(
        f'{where}{name}={value!r} is out of range; allowed: '
        f'{_interval(low, high, low_inclusive, high_inclusive)}.'
    )


def check_positive(name: str, value: Any, fn: str = '') -> None:
  """``value > 0``."""
  check_range(name, value, 0.0, None, low_inclusive=False, fn=fn)


def check_non_negative(name: str, value: Any, fn: str = '') -> None:
  """``value >= 0``."""
  check_range(name, value, 0.0, None, fn=fn)


def check_decay(name: str, value: Any, fn: str = '') -> None:
  """A decay rate or beta: ``0 <= value < 1``."""
  check_range(name, value, 0.0, 1.0, high_inclusive=False, fn=fn)


def check_learning_rate(value: Any, fn: str = '', name: str = 'learning_rate'):
  """A learning rate must not be negative; schedules and arrays pass."""
  check_number(name, value, fn, allow_callable=True)
  if callable(value):
    return
  check_non_negative(name, value, fn=fn)


def check_numbers(fn: str, **values: Any) -> None:
  """:func:`check_number` (schedules allowed) for each ``name=value``."""
  for name, value in values.items():
    check_number(name, value, fn, allow_callable=True)


def check_choice(name: str, value: Any, allowed: Iterable[Any], fn: str = ''):
  allowed = tuple(allowed)
  if value not in allowed:
    where = f'{fn}: ' if fn else ''
    raise ValueError(
        f'{where}{name}={value!r} is not allowed; allowed: '
        f'{", ".join(repr(a) for a in allowed)}.'
    )


def require_params(params: Any, fn: str) -> None:
  """Raises ValueError when a transform that needs params is given none."""
  if params is None:
    raise ValueError(
        f'{fn}: this transformation needs the current params; call '
        'update(updates, state, params).'
    )
