"""Dice losses for segmentation: one minus a soft overlap of masks per class."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from research.optim.losses import _checks

__all__ = ['binary_dice_loss', 'dice_loss', 'multiclass_generalized_dice_loss']

# How the per-class losses are combined; 'none' keeps the class axis.
_REDUCTIONS = {
    'mean': lambda x: jnp.mean(x, axis=-1),
    'sum': lambda x: jnp.sum(x, axis=-1),
    'none': lambda x: x,
}


def dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    class_weights: Optional[jax.typing.ArrayLike] = None,
    smooth: jax.typing.ArrayLike = 1.,
    alpha: jax.typing.ArrayLike = 0.5,
    beta: jax.typing.ArrayLike = 0.5,
    apply_softmax: bool = True,
    reduction: str = 'mean',
    ignore_background: bool = False,
    axis: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
  r"""Soft Dice (Tversky) loss per class, reduced over the classes.

  With probabilities ``p`` and targets ``t`` summed over ``axis``
  (``I_c = sum p t``, ``P_c = sum p``, ``T_c = sum t``):

  .. math::
    \ell_c = 1 - \frac{I_c + s}{I_c + \alpha (P_c - I_c) + \beta (T_c - I_c)
    + s}.

  ``alpha = beta = 0.5`` is the Dice coefficient; other values weigh false
  positives (``alpha``) against false negatives (``beta``).

  Args:
    predictions: logits ``[..., num_classes]`` (softmax), or ``[..., 1]`` or
      ``[...]`` for one class (sigmoid); probabilities if not
      ``apply_softmax``.
    targets: one-hot targets of the same shape (a missing class axis of size 1
      is added).
    class_weights: optional ``[num_classes]`` weights of the per-class losses.
    smooth: added to numerator and denominator.
    alpha: weight of the false positives.
    beta: weight of the false negatives.
    apply_softmax: turn logits into probabilities (softmax, or sigmoid for a
      single class); if False, ``predictions`` must sum to 1 over classes.
    reduction: ``'mean'``, ``'sum'`` or ``'none'`` over the classes.
    ignore_background: leave class 0 out.
    axis: the axes summed over; default all but the first and the last.

  Returns:
    The losses: ``[batch...]``, or ``[batch..., num_classes]`` for
    ``reduction='none'``.

  References:
    Milletari, Navab and Ahmadi, V-Net: Fully Convolutional Neural Networks
    for Volumetric Medical Image Segmentation, 2016.
  """
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f'dice_loss: reduction={reduction!r}; allowed: {", ".join(_REDUCTIONS)}.')
  predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
  if predictions.ndim == targets.ndim - 1:
    predictions = predictions[..., None]
  if targets.ndim == predictions.ndim - 1:
    targets = targets[..., None]
  _checks.check_same_shape('dice_loss', 'predictions', predictions,
                           'targets', targets)
  if apply_softmax:
    single_class = predictions.shape[-1] == 1
    probs = (jax.nn.sigmoid(predictions) if single_class
             else jax.nn.softmax(predictions, axis=-1))
  else:
    totals = jnp.sum(predictions, axis=-1)
    if not jnp.allclose(totals, 1.0, rtol=1e-5):
      raise ValueError(
          'dice_loss: with apply_softmax=False, predictions must sum to 1 over '
          f'the class axis; the sums range over [{jnp.min(totals):.6f}, '
          f'{jnp.max(totals):.6f}].')
    probs = predictions
  if axis is None:
    axis = tuple(range(1, probs.ndim - 1))
  overlap = jnp.sum(probs * targets, axis=axis)
  false_pos = jnp.sum(probs, axis=axis) - overlap
  false_neg = jnp.sum(targets, axis=axis) - overlap
  losses = 1.0 - (overlap + smooth) / (
      overlap + alpha * false_pos + beta * false_neg + smooth)
  if class_weights is not None:
    _checks.check_rank('dice_loss', 'class_weights', class_weights, 1)
    losses = losses * class_weights
  if ignore_background and probs.shape[-1] > 1:
    losses = losses[..., 1:]
  return _REDUCTIONS[reduction](losses)


def multiclass_generalized_dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.,
    apply_softmax: bool = True,
    ignore_background: bool = False,
) -> jax.Array:
  r"""Dice loss with classes weighted by their inverse squared frequency.

  .. math::
    w_c \propto \frac{1}{F_c^2 + 10^{-7}}, \quad F_c = \sum t_c, \quad
    \textstyle\sum_c w_c = C,

  then the mean of ``w_c l_c`` over the batch and classes.

  Args:
    predictions: logits ``[..., num_classes]``.
    targets: one-hot targets of the same shape.
    smooth: added to numerator and denominator.
    apply_softmax: turn logits into probabilities.
    ignore_background: leave class 0 out.

  Returns:
    The scalar loss.

  References:
    Sudre et al., Generalised Dice Overlap as a Deep Learning Loss Function for
    Highly Unbalanced Segmentations, 2017.
  """
  _checks.check_same_shape('multiclass_generalized_dice_loss', 'predictions',
                           predictions, 'targets', targets)
  targets = jnp.asarray(targets)
  frequencies = jnp.sum(targets, axis=tuple(range(targets.ndim - 1)))
  weights = 1.0 / (frequencies**2 + 1e-7)
  weights = weights / jnp.sum(weights) * weights.shape[0]
  return jnp.mean(dice_loss(
      predictions, targets, class_weights=weights, smooth=smooth,
      apply_softmax=apply_softmax, reduction='none',
      ignore_background=ignore_background))


def binary_dice_loss(
    predictions: jax.typing.ArrayLike,
    targets: jax.typing.ArrayLike,
    *,
    smooth: jax.typing.ArrayLike = 1.,
    apply_sigmoid: bool = True,
) -> jax.Array:
  """Dice loss of one foreground class (sigmoid of the logits).

  Args:
    predictions: logits ``[...]`` or ``[..., 1]``.
    targets: binary targets of the same shape.
    smooth: added to numerator and denominator.
    apply_sigmoid: turn logits into probabilities.

  Returns:
    The losses, ``[batch...]``.

  References:
    Milletari, Navab and Ahmadi, V-Net: Fully Convolutional Neural Networks
    for Volumetric Medical Image Segmentation, 2016.
  """
  predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
  if predictions.ndim == targets.ndim and predictions.shape[-1] != 1:
    predictions, targets = predictions[..., None], targets[..., None]
  return dice_loss(predictions, targets, smooth=smooth,
                   apply_softmax=apply_sigmoid, reduction='mean')
