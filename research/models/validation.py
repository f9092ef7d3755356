"""Checks of model hyperparameters given in a config.

Models know nothing of ``research.optim`` (see DESIGN.md), so the few checks
they need live here. Each error names the config field, the bad value and what
is allowed.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable


def _where(fn: str) -> str:
  return f'{fn}: ' if fn else ''


def check_positive_int(name: str, value: Any, fn: str = '') -> None:
  """``value`` is an integer ``>= 1``."""
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  if not ok or value < 1:
    raise ValueError(
        f'{_where(fn)}{name}={value!r} is not allowed; allowed: an integer >= 1.'
    )


def check_positive(name: str, value: Any, fn: str = '') -> None:
  """``value`` is a real number ``> 0``."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if not ok or not value > 0:
    raise ValueError(
        f'{_where(fn)}{name}={value!r} is out of range; allowed: (0, inf).'
    )


def check_rate(name: str, value: Any, fn: str = '') -> None:
  """A dropout rate: ``0 <= value < 1``."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if not ok or not 0.0 <= value < 1.0:
    raise ValueError(
        f'{_where(fn)}{name}={value!r} is out of range; allowed: [0, 1).'
    )


def check_choice(name: str, value: Any, allowed: Iterable[Any], fn: str = ''):
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(
        f'{_where(fn)}{name}={value!r} is not allowed; allowed: '
        f'{", ".join(repr(a) for a in allowed)}.'
    )
