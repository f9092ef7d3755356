"""Kullback-Leibler divergences between a target and a predicted distribution.

Predictions always come as log-probabilities, to avoid underflow; targets as
probabilities or, for ``kl_divergence_with_log_targets``, log-probabilities.
"""

from __future__ import annotations

import warnings
from typing import Optional, Union

import jax
import jax.numpy as jnp

from research.optim.losses import _checks

__all__ = [
    'convex_kl_divergence',
    'generalized_kl_divergence',
    'kl_divergence',
    'kl_divergence_with_log_targets',
]

Axis = Union[int, tuple[int, ...], None]


def kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""KL divergence of the predicted distribution ``q`` from the target ``p``.

  .. math::
    KL(p \| q) = \sum_k p_k (\log p_k - \log q_k), \qquad 0 \log 0 = 0.

  Args:
    log_predictions: ``log q``, floating, ``[..., dim]``.
    targets: ``p``, floating, ``[..., dim]``.
    axis: the axis or axes of the distributions.
    where: optional mask of the entries that take part.

  Returns:
    The divergences, with ``axis`` reduced away.

  References:
    Kullback and Leibler, On Information and Sufficiency, 1951.
  """
  _checks.check_floating('kl_divergence', 'log_predictions', log_predictions)
  _checks.check_floating('kl_divergence', 'targets', targets)
  log_targets = jnp.where(targets == 0, 0, jnp.log(targets))
  return jnp.sum(targets * (log_targets - log_predictions), axis=axis, where=where)


def kl_divergence_with_log_targets(
    log_predictions: jax.typing.ArrayLike,
    log_targets: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""KL divergence with the target also given as log-probabilities.

  .. math::
    KL(p \| q) = \sum_k e^{\log p_k} (\log p_k - \log q_k).

  Args:
    log_predictions: ``log q``, floating, ``[..., dim]``.
    log_targets: ``log p``, floating, ``[..., dim]``.
    axis: the axis or axes of the distributions.
    where: optional mask of the entries that take part.

  Returns:
    The divergences, with ``axis`` reduced away.

  References:
    Kullback and Leibler, On Information and Sufficiency, 1951.
  """
  fn = 'kl_divergence_with_log_targets'
  _checks.check_floating(fn, 'log_predictions', log_predictions)
  _checks.check_floating(fn, 'log_targets', log_targets)
  terms = jnp.exp(log_targets) * (log_targets - log_predictions)
  return jnp.sum(terms, axis=axis, where=where)


def generalized_kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""KL divergence extended to unnormalized non-negative measures.

  .. math::
    D(p \| q) = \sum_k p_k (\log p_k - \log q_k) + q_k - p_k,

  the Bregman divergence of ``f(x) = x log x - x``; equal to the KL
  divergence when both sum to 1.

  Args:
    log_predictions: ``log q``, floating, ``[..., dim]``.
    targets: ``p``, floating, ``[..., dim]``.
    axis: the axis or axes of the measures.
    where: optional mask of the entries that take part.

  Returns:
    The divergences, with ``axis`` reduced away.

  References:
    Bregman, The Relaxation Method of Finding the Common Point of Convex Sets
    and its Application to the Solution of Problems in Convex Programming,
    1967.
  """
  kl = kl_divergence(log_predictions, targets, axis=axis, where=where)
  mass = jnp.sum(jnp.exp(log_predictions) - targets, axis=axis, where=where)
  return kl + mass


def convex_kl_divergence(
    log_predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  """Deprecated (as in Optax): :func:`generalized_kl_divergence`, which see.

  References:
    Bregman, The Relaxation Method of Finding the Common Point of Convex Sets
    and its Application to the Solution of Problems in Convex Programming,
    1967.
  """
  warnings.warn(
      'convex_kl_divergence is deprecated; use generalized_kl_divergence.',
      DeprecationWarning, stacklevel=2)
  return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
