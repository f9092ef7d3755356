"""Regression losses: squared error, Huber, log-cosh and cosine similarity.

Every loss is elementwise (or reduced over ``axis`` for the cosine ones) and
leaves the reduction over a batch to the caller.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from research.optim.losses import _checks

__all__ = [
    'cosine_distance',
    'cosine_similarity',
    'huber_loss',
    'l2_loss',
    'log_cosh',
    'squared_error',
]

Axis = Union[int, tuple[int, ...], None]


def _errors(predictions, targets):
  return predictions if targets is None else predictions - targets


def squared_error(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Elementwise squared error ``(p - t)^2``; mean squared error is its mean.

  Args:
    predictions: an array of any shape ``[...]``, floating.
    targets: an array of the same shape (no broadcasting, to catch mistakes);
      ``None`` means zeros.

  Returns:
    ``(predictions - targets)**2``, with the shape of ``predictions``.

  References:
    Gauss, Theoria motus corporum coelestium, 1809.
  """
  _checks.check_floating('squared_error', 'predictions', predictions)
  if targets is not None:
    _checks.check_same_shape(
        'squared_error', 'predictions', predictions, 'targets', targets)
  return _errors(predictions, targets) ** 2


def l2_loss(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Half the squared error, ``0.5 (p - t)^2``, whose gradient is ``p - t``.

  Args:
    predictions: an array of any shape ``[...]``, floating.
    targets: an array of the same shape; ``None`` means zeros.

  Returns:
    ``0.5 * (predictions - targets)**2``, with the shape of ``predictions``.

  References:
    Bishop, Pattern Recognition and Machine Learning, 2006.
  """
  return 0.5 * squared_error(jnp.asarray(predictions), targets)


def huber_loss(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
    *,
    delta: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
  r"""Huber loss: quadratic within ``delta`` of the target, linear beyond.

  With ``e = |p - t|``, ``q = min(e, delta)``:

  .. math::
    \ell = \tfrac12 q^2 + \delta (e - q),

  so the gradient is the l2 gradient clipped to ``[-delta, delta]``.

  Args:
    predictions: an array of any shape ``[...]``, floating.
    targets: an array broadcastable to ``predictions``; ``None`` means zeros.
    delta: where the quadratic part ends.

  Returns:
    Elementwise losses, with the broadcast shape.

  References:
    Huber, Robust Estimation of a Location Parameter, 1964.
  """
  _checks.check_floating('huber_loss', 'predictions', predictions)
  abs_err = jnp.abs(_errors(predictions, targets))
  inside = jnp.minimum(abs_err, delta)
  # e - q rather than max(e - delta, 0): one branch carries the gradient.
  return 0.5 * inside**2 + delta * (abs_err - inside)


def log_cosh(
    predictions: jax.typing.ArrayLike,
    targets: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Log-cosh loss ``log cosh(p - t)``: ``e^2 / 2`` near 0, ``|e| - log 2`` far.

  Computed as ``logaddexp(e, -e) - log 2``, which does not overflow for
  large ``|e|``.

  Args:
    predictions: an array of any shape ``[...]``, floating.
    targets: an array broadcastable to ``predictions``; ``None`` means zeros.

  Returns:
    Elementwise losses, with the broadcast shape.

  References:
    Chen et al., Log Hyperbolic Cosine Loss Improves Variational
    Auto-Encoder, 2019.
  """
  _checks.check_floating('log_cosh', 'predictions', predictions)
  err = _errors(predictions, targets)
  return jnp.logaddexp(err, -err) - jnp.log(2.0).astype(err.dtype)


def cosine_similarity(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 0.0,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Cosine of the angle between predictions and targets along ``axis``.

  .. math::
    \cos(p, t) = \Big\langle \frac{p}{\max(\|p\|^2, \epsilon)^{1/2}},
    \frac{t}{\max(\|t\|^2, \epsilon)^{1/2}} \Big\rangle

  Args:
    predictions: predicted vectors ``[..., dim]``, floating.
    targets: target vectors ``[..., dim]``, floating.
    epsilon: lower bound on each squared norm in the denominator.
    axis: axis or axes of the vectors.
    where: optional mask of the elements that take part.

  Returns:
    The cosine similarities, with ``axis`` reduced away.

  References:
    Salton and McGill, Introduction to Modern Information Retrieval, 1983.
  """
  _checks.check_floating('cosine_similarity', 'predictions', predictions)
  _checks.check_floating('cosine_similarity', 'targets', targets)

  def unit(x):
    sq_norm = jnp.square(x).sum(axis=axis, where=where, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq_norm, epsilon))

  return (unit(predictions) * unit(targets)).sum(axis=axis, where=where)


def cosine_distance(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 0.0,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Cosine distance ``1 - cos(p, t)``; see :func:`cosine_similarity`.

  Args:
    predictions: predicted vectors ``[..., dim]``, floating.
    targets: target vectors ``[..., dim]``, floating.
    epsilon: lower bound on each squared norm in the denominator.
    axis: axis or axes of the vectors.
    where: optional mask of the elements that take part.

  Returns:
    The cosine distances, with ``axis`` reduced away.

  References:
    Salton and McGill, Introduction to Modern Information Retrieval, 1983.
  """
  _checks.check_floating('cosine_distance', 'predictions', predictions)
  _checks.check_floating('cosine_distance', 'targets', targets)
  return 1.0 - cosine_similarity(
      predictions, targets, epsilon=epsilon, axis=axis, where=where)
