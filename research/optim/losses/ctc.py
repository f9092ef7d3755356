"""Connectionist temporal classification (CTC): the log-likelihood of a label
sequence summed over all its alignments with the frames, by a forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from research.optim.losses import _checks

__all__ = ['ctc_loss', 'ctc_loss_with_forward_probs']


def _add_into_next(phi, incoming):
  """``phi[:, n + 1] (+)= incoming[:, n]`` in log space; ``phi[:, 0]`` is kept."""
  return jnp.concatenate(
      [phi[:, :1], jnp.logaddexp(phi[:, 1:], incoming)], axis=-1)


def _check_inputs(logits, logit_paddings, labels, label_paddings):
  fn = 'ctc_loss_with_forward_probs'
  _checks.check_rank(fn, 'logits', logits, 3)
  _checks.check_rank(fn, 'labels', labels, 2)
  _checks.check_same_shape(fn, 'labels', labels, 'label_paddings', label_paddings)
  if jnp.shape(logit_paddings) != jnp.shape(logits)[:2]:
    raise ValueError(
        f'{fn}: logit_paddings has shape {jnp.shape(logit_paddings)}; allowed: '
        f'the [B, T] of logits, {jnp.shape(logits)[:2]}.')
  if jnp.shape(labels)[0] != jnp.shape(logits)[0]:
    raise ValueError(
        f'{fn}: labels has batch size {jnp.shape(labels)[0]} and logits '
        f'{jnp.shape(logits)[0]}; they must be equal.')


def ctc_loss_with_forward_probs(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""CTC loss and the log forward probabilities of the blank and label states.

  An alignment inserts blanks ``phi`` around and between the labels
  ``y_1..y_N`` (a blank is required between two equal labels). The forward
  variables, in log space, are

  .. math::
    \alpha_{\phi}(t, n) = \log P(\text{frames } 1..t,\ n \text{ labels
    emitted, now in a blank}), \qquad
    \alpha_{y}(t, n) = \log P(\text{frames } 1..t,\ \text{now emitting }
    y_n),

  and the loss is ``-alpha_phi(T, N_b)`` after a final label-to-blank step,
  where ``N_b`` is the unpadded label length. Impossible states carry
  ``log_epsilon`` (a finite stand-in for ``log 0``); padded frames leave the
  forward variables unchanged.

  Args:
    logits: ``[B, T, K]`` logits, blank included.
    logit_paddings: ``[B, T]``, 1.0 at padded frames and 0.0 elsewhere.
    labels: ``[B, N]`` integer labels, right-padded.
    label_paddings: ``[B, N]``, 1.0 at padded labels and 0.0 elsewhere.
    blank_id: the class of the blank.
    log_epsilon: the value of ``log 0``.

  Returns:
    ``(loss, logalpha_blank, logalpha_label)``: the ``[B]`` losses and the
    ``[T, B, N + 1]`` and ``[T, B, N]`` log forward probabilities.

  References:
    Graves et al., Connectionist Temporal Classification: Labelling
    Unsegmented Sequence Data with Recurrent Neural Networks, 2006.
  """
  _check_inputs(logits, logit_paddings, labels, label_paddings)
  batch, _, _ = jnp.shape(logits)
  max_label_len = jnp.shape(labels)[1]
  log_probs = jax.nn.log_softmax(logits)
  label_lens = max_label_len - jnp.sum(label_paddings, axis=1).astype(jnp.int32)

  # 1.0 where the next label equals this one: a blank must come between them.
  repeat = (labels[:, :-1] == labels[:, 1:]).astype(jnp.float32)
  repeat = jnp.pad(repeat, ((0, 0), (0, 1)))

  # Time-major inputs for the scan: [T, B, N] label and [T, B, 1] blank scores.
  label_scores = jnp.take_along_axis(log_probs, labels[:, None, :], axis=2)
  label_scores = jnp.transpose(label_scores, (1, 0, 2))
  blank_scores = jnp.transpose(log_probs[:, :, blank_id:blank_id + 1], (1, 0, 2))
  frame_pads = jnp.transpose(logit_paddings, (1, 0))

  phi0 = (jnp.ones((batch, max_label_len + 1)) * log_epsilon).at[:, 0].set(0.0)
  emit0 = jnp.ones((batch, max_label_len)) * log_epsilon

  def step(carry, frame):
    phi, emit = carry
    label_score, blank_score, pad = frame
    # A finished label passes to the next blank state for free, unless the
    # next label repeats it.
    phi_ready = _add_into_next(phi, emit + log_epsilon * repeat)
    # Enter label n from blank state n, or stay on label n.
    next_emit = jnp.logaddexp(phi_ready[:, :-1] + label_score, emit + label_score)
    # Stay in a blank; before a repeated label, emit the blank from the label.
    next_phi = _add_into_next(
        phi_ready + blank_score,
        emit + blank_score + log_epsilon * (1.0 - repeat))
    pad = pad.reshape((batch, 1))
    next_emit = pad * emit + (1.0 - pad) * next_emit
    next_phi = pad * phi + (1.0 - pad) * next_phi
    return (next_phi, next_emit), (next_phi, next_emit)

  _, (log_alpha_phi, log_alpha_emit) = jax.lax.scan(
      step, (phi0, emit0), (label_scores, blank_scores, frame_pads))

  # After the last frame the last label may still pass to its blank state.
  final_phi = _add_into_next(log_alpha_phi[-1], log_alpha_emit[-1])
  log_alpha_phi = log_alpha_phi.at[-1].set(final_phi)
  loss = -jnp.take_along_axis(final_phi, label_lens[:, None], axis=1)[:, 0]
  return loss, log_alpha_phi, log_alpha_emit


def ctc_loss(
    logits: jax.typing.ArrayLike,
    logit_paddings: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    label_paddings: jax.typing.ArrayLike,
    *,
    blank_id: int = 0,
    log_epsilon: jax.typing.ArrayLike = -1e5,
) -> jax.Array:
  """CTC loss, the negative log-likelihood of ``labels`` over all alignments.

  The first output of :func:`ctc_loss_with_forward_probs`, which documents
  the recursion and the arguments.

  Returns:
    The ``[B]`` losses.

  References:
    Graves et al., Connectionist Temporal Classification: Labelling
    Unsegmented Sequence Data with Recurrent Neural Networks, 2006.
  """
  return ctc_loss_with_forward_probs(
      logits, logit_paddings, labels, label_paddings,
      blank_id=blank_id, log_epsilon=log_epsilon)[0]
