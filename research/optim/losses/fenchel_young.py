"""Fenchel-Young losses built from a regularized max function."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

__all__ = ['make_fenchel_young_loss']


def make_fenchel_young_loss(max_fun: Callable[..., Any]):
  r"""The Fenchel-Young loss of a regularized max function ``max_fun``.

  .. math::
    \ell(\theta, y) = \mathrm{max\_fun}(\theta) - \langle y, \theta \rangle.

  When ``max_fun`` is the convex conjugate ``Omega^*`` of a regularizer
  ``Omega`` (``logsumexp`` for the Shannon negentropy), this is the
  Fenchel-Young loss ``Omega^*(theta) + Omega(y) - <y, theta>`` less the
  constant ``Omega(y)``; its gradient is ``grad max_fun(theta) - y``.

  Args:
    max_fun: ``scores [n] -> scalar`` (extra positional and keyword arguments
      are passed through).

  Returns:
    ``loss(scores, targets, *args, **kwargs)``, over the last axis of
    ``scores`` and ``targets`` with any leading axes (each vector separately,
    not flattened).

  References:
    Blondel, Martins and Niculae, Learning with Fenchel-Young Losses, 2020.
  """
  max_last_axis = jnp.vectorize(max_fun, signature='(n)->()')
  dot_last_axis = jnp.vectorize(jnp.vdot, signature='(n),(n)->()')

  def fenchel_young_loss(scores, targets, *args, **kwargs):
    return max_last_axis(scores, *args, **kwargs) - dot_last_axis(targets, scores)

  return fenchel_young_loss
