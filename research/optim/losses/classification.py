"""Classification losses on logits or scores, and label smoothing.

Losses on a distribution over classes reduce over ``axis`` (the class axis,
last by default) and take an optional ``where`` mask of the entries that
take part; binary losses are elementwise.
"""

from __future__ import annotations

import numbers
from typing import Optional, Union

import jax
import jax.numpy as jnp
import jax.scipy.special

from research.optim import projections
from research.optim.losses import _checks

__all__ = [
    'hinge_loss',
    'multiclass_hinge_loss',
    'multiclass_perceptron_loss',
    'multiclass_sparsemax_loss',
    'perceptron_loss',
    'poly_loss_cross_entropy',
    'safe_softmax_cross_entropy',
    'sigmoid_binary_cross_entropy',
    'sigmoid_focal_loss',
    'smooth_labels',
    'softmax_cross_entropy',
    'softmax_cross_entropy_with_integer_labels',
    'sparsemax_loss',
]

Axis = Union[int, tuple[int, ...], None]


# --- Binary losses. ------------------------------------------------------------

def sigmoid_binary_cross_entropy(logits, labels) -> jax.Array:
  r"""Elementwise cross entropy of ``sigmoid(logits)`` against ``labels``.

  .. math::
    \ell(x, y) = -y \log \sigma(x) - (1 - y) \log \sigma(-x),

  with ``log sigma`` computed stably. Each element is an independent binary
  prediction, so this serves binary and multi-label classification; ``labels``
  may be in ``{0, 1}`` or probabilities in ``[0, 1]``.

  Args:
    logits: logits of the positive class, floating.
    labels: binary labels or target probabilities, broadcastable to
      ``logits``.

  Returns:
    The losses, with the broadcast shape of ``logits`` and ``labels``.

  References:
    Goodfellow et al., Deep Learning, 2016.
  """
  _checks.check_floating('sigmoid_binary_cross_entropy', 'logits', logits)
  labels = jnp.astype(labels, jnp.result_type(logits))
  return (-labels * jax.nn.log_sigmoid(logits)
          - (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def sigmoid_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: Optional[jax.typing.ArrayLike] = None,
    gamma: jax.typing.ArrayLike = 2.0,
) -> jax.Array:
  r"""Focal loss: the sigmoid cross entropy scaled down on easy examples.

  With ``p = sigmoid(x)`` and ``p_t = y p + (1 - y)(1 - p)``,

  .. math::
    FL = \alpha_t (1 - p_t)^\gamma \cdot CE(x, y),
    \qquad \alpha_t = \alpha y + (1 - \alpha)(1 - y),

  where ``log(1 - p_t) = log((1 - y) e^{log p} + y e^{log(1 - p)})`` is a
  weighted log-sum-exp, stable for any logit and for soft labels.

  Args:
    logits: logits, floating.
    labels: labels in ``{0, 1}`` or ``[0, 1]``, broadcastable to ``logits``.
    alpha: optional weight of the positive class; ``None`` means no weight.
    gamma: exponent of the modulating factor ``(1 - p_t)``.

  Returns:
    The losses, with the shape of ``logits``.

  References:
    Lin et al., Focal Loss for Dense Object Detection, 2017.
  """
  _checks.check_floating('sigmoid_focal_loss', 'logits', logits)
  labels = jnp.astype(labels, jnp.result_type(logits))
  cross_entropy = sigmoid_binary_cross_entropy(logits, labels)
  log_p_and_q = jnp.stack(
      [jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)], axis=-1)
  log_one_minus_pt = jax.scipy.special.logsumexp(
      log_p_and_q, axis=-1, b=jnp.stack([1 - labels, labels], axis=-1))
  loss = cross_entropy * jnp.exp(gamma * log_one_minus_pt)
  if alpha is None:
    return loss
  return (alpha * labels + (1.0 - alpha) * (1.0 - labels)) * loss


def hinge_loss(
    predictor_outputs: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
  r"""Binary hinge loss ``max(0, 1 - s t)`` for targets ``t`` in ``{-1, 1}``.

  Args:
    predictor_outputs: scores ``s`` of the decision function.
    targets: targets ``t`` in ``{-1, 1}``.

  Returns:
    The elementwise losses.

  References:
    Cortes and Vapnik, Support-Vector Networks, 1995.
  """
  return jnp.maximum(0, 1 - predictor_outputs * targets)


def perceptron_loss(
    predictor_outputs: jax.typing.ArrayLike, targets: jax.typing.ArrayLike
) -> jax.Array:
  r"""Binary perceptron loss ``max(0, -s t)`` for targets ``t`` in ``{-1, 1}``.

  Args:
    predictor_outputs: scores ``s``, floating.
    targets: targets ``t`` in ``{-1, 1}``, of the same shape.

  Returns:
    The elementwise losses.

  References:
    Rosenblatt, The Perceptron: A Probabilistic Model for Information Storage
    and Organization in the Brain, 1958.
  """
  _checks.check_same_shape('perceptron_loss', 'predictor_outputs',
                           predictor_outputs, 'targets', targets)
  return jnp.maximum(0, -predictor_outputs * targets)


def sparsemax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Binary sparsemax loss, zero exactly when ``sparse_sigmoid(x) == y``.

  .. math::
    \ell(x, y) = \mathrm{sparseplus}((1 - 2y) x),

  where ``sparseplus(z)`` is 0 for ``z <= -1``, ``(z + 1)^2 / 4`` on
  ``(-1, 1)`` and ``z`` for ``z >= 1``.

  Args:
    logits: scores ``x``.
    labels: labels ``y`` in ``{0, 1}``.

  Returns:
    The elementwise losses.

  References:
    Blondel, Martins and Niculae, Learning with Fenchel-Young Losses, 2020.
  """
  return jax.nn.sparse_plus(jnp.where(labels, -logits, logits))


# --- Multiclass losses on integer labels. ----------------------------------------

def _label_score(scores, one_hot):
  return jnp.sum(scores * one_hot, axis=-1)


def multiclass_hinge_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Multiclass hinge loss ``max_k (s_k + [k != y]) - s_y``.

  Args:
    scores: scores ``[..., num_classes]``.
    labels: integer labels ``[...]``.

  Returns:
    The losses, shape ``[...]``.

  References:
    Crammer and Singer, On the Algorithmic Implementation of Multiclass
    Kernel-based Vector Machines, 2001.
  """
  one_hot = jax.nn.one_hot(labels, jnp.shape(scores)[-1])
  return jnp.max(scores + 1.0 - one_hot, axis=-1) - _label_score(scores, one_hot)


def multiclass_perceptron_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Multiclass perceptron loss ``max_k s_k - s_y``.

  Args:
    scores: scores ``[..., num_classes]``.
    labels: integer labels ``[...]``.

  Returns:
    The losses, shape ``[...]``.

  References:
    Collins, Discriminative Training Methods for Hidden Markov Models: Theory
    and Experiments with Perceptron Algorithms, 2002.
  """
  one_hot = jax.nn.one_hot(labels, jnp.shape(scores)[-1])
  return jnp.max(scores, axis=-1) - _label_score(scores, one_hot)


def _sparsemax_loss_one(scores, label):
  p = projections.projection_simplex(scores)
  is_label = jnp.arange(scores.shape[0]) == label
  gaps = jnp.where(is_label, 0.0, scores - scores[label])
  # <p, s - s_y> + (1 - |p|^2) / 2: the Gini entropy's conjugate at s, minus s_y.
  return jnp.dot(p, jnp.where(p, gaps, 0.0)) + 0.5 * (1.0 - jnp.dot(p, p))


def multiclass_sparsemax_loss(
    scores: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Multiclass sparsemax loss: the Fenchel-Young loss of the Gini entropy.

  With ``p = sparsemax(s)`` (the Euclidean projection of ``s`` on the simplex),

  .. math::
    \ell(s, y) = \langle p, s \rangle + \tfrac12 (1 - \|p\|^2) - s_y,

  zero exactly when ``sparsemax(s)`` is the one-hot vector of ``y``.

  Args:
    scores: scores ``[batch, num_classes]``.
    labels: integer labels ``[batch]``.

  Returns:
    The losses, shape ``[batch]``.

  References:
    Martins and Astudillo, From Softmax to Sparsemax: A Sparse Model of
    Attention and Multi-Label Classification, 2016.
  """
  return jax.vmap(_sparsemax_loss_one)(jnp.asarray(scores), labels)


# --- Cross entropies over a class axis. ----------------------------------------------

def _expand_mask(where, logits, axis):
  """A mask given without the class axis gets it back, so it broadcasts."""
  if where is not None and jnp.ndim(where) != jnp.ndim(logits):
    where = jnp.expand_dims(where, axis)
  return where


def softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Cross entropy between target distributions and ``softmax(logits)``.

  .. math::
    \ell(x, y) = -\sum_k y_k \log \frac{e^{x_k}}{\sum_j e^{x_j}},

  summed over the classes in ``axis`` that ``where`` keeps.

  Args:
    logits: logits ``[..., num_classes]``, floating.
    labels: target distributions (e.g. one-hot), broadcastable to ``logits``.
    axis: the class axis or axes.
    where: optional mask of the classes that take part, of the shape of
      ``logits`` or of ``logits`` without ``axis``.

  Returns:
    The losses, with ``axis`` reduced away.

  References:
    Bridle, Probabilistic Interpretation of Feedforward Classification Network
    Outputs, with Relationships to Statistical Pattern Recognition, 1990.
  """
  _checks.check_floating('softmax_cross_entropy', 'logits', logits)
  logits = jnp.asarray(logits)
  where = _expand_mask(where, logits, axis)
  log_probs = jax.nn.log_softmax(logits, axis=axis, where=where)
  return -(labels * log_probs).sum(axis=axis, where=where)


def _normalize_axis(axis, ndim: int) -> int:
  axis = int(axis)
  if not -ndim <= axis < ndim:
    raise ValueError(
        f'softmax_cross_entropy_with_integer_labels: axis={axis} is out of '
        f'range for logits of rank {ndim}; allowed: [{-ndim}, {ndim - 1}].')
  return axis % ndim


def _classes_last(x, class_axes):
  """Moves ``class_axes`` to the end, in order, and merges them into one axis."""
  batch_axes = tuple(d for d in range(x.ndim) if d not in class_axes)
  x = jnp.transpose(x, batch_axes + class_axes)
  return x.reshape(x.shape[:len(batch_axes)] + (-1,))


def softmax_cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Union[int, tuple[int, ...]] = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Cross entropy of ``softmax(logits)`` against integer class labels.

  .. math::
    \ell(x, y) = \log \sum_j e^{x_j} - x_y,

  without forming the full log-softmax. With a tuple ``axis``, the class axes
  are flattened in order and a label is a flat index into them.

  Args:
    logits: logits, floating.
    labels: integer labels, of the shape of ``logits`` without ``axis``.
    axis: the class axis, or a tuple of class axes.
    where: optional mask of the classes that take part, of the shape of
      ``logits`` or of ``logits`` without ``axis``; a row with no class kept
      has loss 0.

  Returns:
    The losses, shape of ``labels``.

  References:
    Bridle, Probabilistic Interpretation of Feedforward Classification Network
    Outputs, with Relationships to Statistical Pattern Recognition, 1990.
  """
  fn = 'softmax_cross_entropy_with_integer_labels'
  _checks.check_floating(fn, 'logits', logits)
  _checks.check_integer(fn, 'labels', labels)
  logits = jnp.asarray(logits)
  where = _expand_mask(where, logits, axis)
  if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
    axis = _normalize_axis(axis, logits.ndim)
  elif isinstance(axis, tuple):
    class_axes = tuple(_normalize_axis(a, logits.ndim) for a in axis)
    logits = _classes_last(logits, class_axes)
    if where is not None:
      where = _classes_last(jnp.asarray(where), class_axes)
    axis = logits.ndim - 1
  else:
    raise ValueError(
        f'{fn}: axis={axis!r} has type {type(axis).__name__}; allowed: an '
        'int or a tuple of ints.')
  label_logits = jnp.take_along_axis(
      logits, jnp.expand_dims(labels, axis), axis=axis).squeeze(axis)
  loss = jax.nn.logsumexp(logits, axis=axis, where=where) - label_logits
  if where is not None:
    loss = jnp.where(jnp.any(where, axis=axis), loss, 0.0)
  return loss


@jax.custom_jvp
def _weighted_log_softmax(x, weights):
  """``weights * log_softmax(x)``, 0 wherever the weight is 0 (0 log 0 = 0)."""
  log_p = jax.nn.log_softmax(x, axis=-1)
  return jnp.where(weights != 0.0, weights * log_p, jnp.zeros_like(log_p))


@_weighted_log_softmax.defjvp
def _weighted_log_softmax_jvp(primals, tangents):
  x, weights = primals
  dx, dweights = tangents
  log_p = jax.nn.log_softmax(x, axis=-1)
  out = jnp.where(weights != 0.0, weights * log_p, jnp.zeros_like(log_p))
  # d log_softmax(x) = dx - <softmax(x), dx>; the mask does not depend on x.
  mean_dx = jnp.sum(dx * jax.nn.softmax(x, axis=-1), axis=-1, keepdims=True)
  return out, weights * dx - weights * mean_dx + dweights * log_p


def safe_softmax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
) -> jax.Array:
  r"""Softmax cross entropy that treats ``0 * log 0`` as 0 (logits may be -inf).

  The same loss as :func:`softmax_cross_entropy` over the last axis, but a
  class with label 0 and logit ``-inf`` adds 0 to the loss and its gradient
  instead of ``nan``.

  Args:
    logits: logits ``[..., num_classes]``, floating; may hold ``-inf``.
    labels: target distributions, broadcastable to ``logits``.

  Returns:
    The losses, shape ``[...]``.

  References:
    Bridle, Probabilistic Interpretation of Feedforward Classification Network
    Outputs, with Relationships to Statistical Pattern Recognition, 1990.
  """
  _checks.check_floating('safe_softmax_cross_entropy', 'logits', logits)
  return -jnp.sum(_weighted_log_softmax(logits, labels), axis=-1)


def poly_loss_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = 2.0,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Poly-1 loss: cross entropy plus ``epsilon`` times ``1 - p_t``.

  .. math::
    \ell = CE(x, y) + \epsilon \sum_k y_k (1 - \mathrm{softmax}(x)_k),

  the first term of the Taylor expansion of the cross entropy in
  ``(1 - p_t)^j`` with its coefficient moved by ``epsilon`` (2 for ImageNet,
  -1 for detection in the paper).

  Args:
    logits: logits ``[..., num_classes]``, floating.
    labels: target distributions, floating, broadcastable to ``logits``.
    epsilon: the change of the first polynomial coefficient.
    axis: the class axis or axes.
    where: optional mask of the classes that take part.

  Returns:
    The losses, with ``axis`` reduced away.

  References:
    Leng et al., PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions, 2022.
  """
  _checks.check_floating('poly_loss_cross_entropy', 'logits', logits)
  _checks.check_floating('poly_loss_cross_entropy', 'labels', labels)
  probs = jax.nn.softmax(logits, axis=axis, where=where)
  one_minus_pt = jnp.sum(labels * (1 - probs), axis=axis, where=where)
  cross_entropy = softmax_cross_entropy(logits, labels, axis=axis, where=where)
  return cross_entropy + epsilon * one_minus_pt


def smooth_labels(
    labels: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    *,
    axis: Axis = -1,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Label smoothing: ``(1 - alpha) y + alpha / K`` over ``K`` classes.

  ``K`` is the size of ``axis``, or the number of classes ``where`` keeps.

  Args:
    labels: one-hot labels, floating.
    alpha: the smoothing factor.
    axis: the class axis or axes.
    where: optional mask of the classes that count in ``K``.

  Returns:
    The smoothed labels, with the shape of ``labels``.

  References:
    Szegedy et al., Rethinking the Inception Architecture for Computer
    Vision, 2016.
  """
  _checks.check_floating('smooth_labels', 'labels', labels)
  if where is None:
    num_classes = jnp.size(labels, axis)
  else:
    num_classes = jnp.sum(where, axis, keepdims=True)
  return (1.0 - alpha) * labels + alpha / num_classes
