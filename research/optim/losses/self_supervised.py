"""Self-supervised (metric learning) losses on batches of embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.optim.losses import _checks
from research.optim.losses import regression

__all__ = ['ntxent', 'triplet_margin_loss']


def ntxent(
    embeddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 0.07,
) -> jax.Array:
  r"""Normalized temperature-scaled cross entropy (NT-Xent), SimCLR's loss.

  With ``s_ij = cos(e_i, e_j) / temperature``, for each positive pair
  ``(i, j)`` (same label, ``i != j``) the loss is the cross entropy of ``j``
  against ``j`` and all negatives of ``i``:

  .. math::
    \ell_{ij} = -\log \frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k: y_k \ne y_i}
    e^{s_{ik}}},

  averaged over the positive pairs.

  Args:
    embeddings: ``[batch, dim]`` embeddings, floating.
    labels: ``[batch]`` group ids; equal ids mark positive pairs.
    temperature: the softmax temperature.

  Returns:
    The scalar loss.

  References:
    Chen et al., A Simple Framework for Contrastive Learning of Visual
    Representations, 2020.
  """
  _checks.check_floating('ntxent', 'embeddings', embeddings)
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  if labels.shape[0] != embeddings.shape[0]:
    raise ValueError(
        f'ntxent: labels has leading dimension {labels.shape[0]} and '
        f'embeddings {embeddings.shape[0]}; they must be equal.')
  sims = regression.cosine_similarity(
      embeddings[None, :, :], embeddings[:, None, :],
      epsilon=jnp.finfo(embeddings.dtype).eps) / temperature
  same = labels[:, None] == labels[None, :]
  negatives = ~same
  positives = same & ~jnp.eye(same.shape[0], dtype=bool)

  neg_sims = jnp.where(negatives, sims, -jnp.inf)
  pos_sims = jnp.where(positives, sims, -jnp.inf)
  # Shift each row by its max (a constant, so no gradient) against overflow.
  row_max = jnp.max(jnp.concatenate([neg_sims, pos_sims], axis=-1), axis=1,
                    keepdims=True)
  neg_sims = neg_sims - jax.lax.stop_gradient(row_max)
  pos_sims = pos_sims - jax.lax.stop_gradient(row_max)
  neg_mass = jnp.sum(jnp.exp(neg_sims), axis=1, keepdims=True)
  log_ratio = pos_sims - jnp.log(neg_mass + jnp.exp(pos_sims))
  return -jnp.where(positives, log_ratio, 0.0).sum() / positives.sum()


def triplet_margin_loss(
    anchors: jax.typing.ArrayLike,
    positives: jax.typing.ArrayLike,
    negatives: jax.typing.ArrayLike,
    axis: int = -1,
    norm_degree: jax.typing.ArrayLike = 2,
    margin: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-6,
) -> jax.Array:
  r"""Triplet margin loss: the positive must be closer than the negative by a margin.

  .. math::
    \ell = \max(d(a, p) - d(a, n) + m, 0), \qquad
    d(x, y) = \Big(\sum (x - y)^q + \epsilon\Big)^{1/q},

  with ``q = norm_degree`` and the sum over ``axis`` (no absolute value is
  taken, so use an even ``q``).

  Args:
    anchors: ``[batch, dim]`` anchor embeddings, floating.
    positives: ``[batch, dim]`` embeddings similar to the anchors.
    negatives: ``[batch, dim]`` embeddings dissimilar to the anchors.
    axis: the axis of the distances.
    norm_degree: the degree ``q``.
    margin: the margin ``m``.
    eps: added under the root for a finite gradient at 0.

  Returns:
    The losses, with ``axis`` reduced away.

  References:
    Balntas et al., Learning Local Feature Descriptors with Triplets and
    Shallow Convolutional Neural Networks, 2016.
  """
  for name, x in (('anchors', anchors), ('positives', positives),
                  ('negatives', negatives)):
    _checks.check_floating('triplet_margin_loss', name, x)

  def distance(x, y):
    return jnp.power(jnp.power(x - y, norm_degree).sum(axis) + eps,
                     1 / norm_degree)

  return jnp.maximum(
      distance(anchors, positives) - distance(anchors, negatives) + margin, 0)
