"""Ranking losses over the last axis (the list of items); leading axes are lists.

A ranking loss scores the ranking that item ``logits`` induce against the
relevance ``labels``; ``where`` marks the valid items of each list.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from research.optim.losses import _checks

__all__ = ['ranking_softmax_loss']


def _reduce(losses, where, reduce_fn):
  """Applies ``reduce_fn`` to the valid lists without making up ``nan``.

  A mean over no valid list is 0, not ``nan`` (unless a loss is ``nan``
  itself); with no ``reduce_fn`` the invalid lists are set to 0, so that
  summing the result equals ``reduce_fn=jnp.sum``.
  """
  if reduce_fn is None:
    return losses if where is None else jnp.where(where, losses, 0.0)
  out = reduce_fn(losses, where=where)
  if reduce_fn is jnp.mean:
    made_up_nan = jnp.isnan(out) & ~jnp.any(jnp.isnan(losses))
    out = jnp.where(made_up_nan, 0.0, out)
  return out


def ranking_softmax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: Optional[jax.typing.ArrayLike] = None,
    weights: Optional[jax.typing.ArrayLike] = None,
    reduce_fn: Optional[Callable[..., jax.typing.ArrayLike]] = jnp.mean,
) -> jax.Array:
  r"""Listwise softmax cross entropy of the item scores against relevance.

  .. math::
    \ell(s, y) = -\sum_i w_i y_i \log \frac{e^{s_i}}{\sum_j e^{s_j}},

  over the valid items of each list, then ``reduce_fn`` over the lists that
  have a valid item.

  Args:
    logits: ``[..., list_size]`` item scores, floating.
    labels: ``[..., list_size]`` relevance labels.
    where: optional ``[..., list_size]`` mask of the valid items.
    weights: optional ``[..., list_size]`` item weights.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (no reduction).

  Returns:
    The reduced loss, or the ``[...]`` per-list losses for ``reduce_fn=None``.

  References:
    Cao et al., Learning to Rank: From Pairwise Approach to Listwise
    Approach, 2007.
  """
  _checks.check_floating('ranking_softmax_loss', 'logits', logits)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels).astype(logits.dtype)
  if where is not None:
    labels = jnp.where(where, labels, jnp.zeros_like(labels))
    logits = jnp.where(where, logits, -jnp.ones_like(logits) * jnp.inf)
  if weights is not None:
    labels = labels * weights
  per_item = labels * jax.nn.log_softmax(logits, axis=-1)
  losses = -jnp.sum(per_item, axis=-1, where=where)
  list_valid = None if where is None else jnp.any(where, axis=-1)
  return _reduce(losses, list_valid, reduce_fn)
