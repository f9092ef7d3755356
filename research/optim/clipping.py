"""Gradient clipping: by value, by norm (per tensor or global), by block RMS,
and adaptive (relative to the params' norm).

Clipping by value or per tensor changes the direction of the full update;
clipping by the global norm only shortens it. Complex updates are supported:
norms use ``|u|^2 = conj(u) u``.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'AdaptiveGradClipState',
    'ClipByGlobalNormState',
    'ClipState',
    'adaptive_grad_clip',
    'clip',
    'clip_by_block_rms',
    'clip_by_global_norm',
    'clip_by_norm',
    'unitwise_clip',
    'unitwise_norm',
]

# The clipping transforms are stateless; Optax names their state anyway.
AdaptiveGradClipState = base.EmptyState
ClipByGlobalNormState = base.EmptyState
ClipState = base.EmptyState

Axis = Optional[Union[int, tuple[int, ...]]]


def _leafwise(f):
  # Unlike base.stateless_with_tree_map, never reads the params: a clip in a
  # chain must not require them to have the updates' structure.
  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(f, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def clip(max_delta: jax.typing.ArrayLike) -> base.GradientTransformationExtraArgs:
  r"""Clips each element of the updates to ``[-max_delta, max_delta]``.

  .. math::
    u \leftarrow \min(\max(u, -\delta), \delta)

  This is Keras' ``clipvalue``. It changes the direction of the update.

  Args:
    max_delta: ``delta >= 0``, the largest absolute value of an element.

  References:
    Mikolov, Statistical language models based on neural networks, 2012.
  """
  checks.check_non_negative('max_delta', max_delta, fn='clip')

  return _leafwise(lambda u: jnp.clip(u, -max_delta, max_delta))


def clip_by_block_rms(
    threshold: jax.typing.ArrayLike,
) -> base.GradientTransformationExtraArgs:
  r"""Rescales each leaf (block) so that its root mean square is at most ``threshold``.

  .. math::
    u \leftarrow u / \max\big(1, \mathrm{rms}(u) / \tau\big), \qquad
    \mathrm{rms}(u) = \sqrt{\mathrm{mean}(|u|^2)}

  Args:
    threshold: ``tau > 0``, the largest RMS of one leaf.

  References:
    Shazeer & Stern, Adafactor: adaptive learning rates with sublinear memory
    cost, 2018.
  """
  checks.check_positive('threshold', threshold, fn='clip_by_block_rms')

  def f(u):
    denom = jnp.maximum(1.0, jnp.sqrt(jnp.mean(otu.abs_sq(u))) / threshold)
    return u / denom

  return _leafwise(f)


def _shrink_to(u, norm, max_norm):
  # select (not a min of ratios) keeps u bit-exact when it is inside the ball.
  trigger = jnp.squeeze(norm < max_norm)
  return jax.lax.select(trigger, u, (u / norm.astype(u.dtype)) * max_norm)


def clip_by_global_norm(
    max_norm: jax.typing.ArrayLike,
) -> base.GradientTransformationExtraArgs:
  r"""Rescales all updates together: their global L2 norm becomes at most ``max_norm``.

  .. math::
    u \leftarrow u \cdot \min\big(1, c / \|u\|_2\big), \qquad
    \|u\|_2^2 = \textstyle\sum_{\text{leaves}} \sum |u|^2

  One factor for the whole tree: the direction of the full update is kept.

  Args:
    max_norm: ``c > 0``.

  References:
    Pascanu et al., On the difficulty of training recurrent neural networks,
    2013.
  """
  checks.check_positive('max_norm', max_norm, fn='clip_by_global_norm')

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    g_norm = otu.tree_norm(updates)
    return jax.tree.map(lambda u: _shrink_to(u, g_norm, max_norm), updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def clip_by_norm(
    max_norm: jax.typing.ArrayLike,
) -> base.GradientTransformationExtraArgs:
  r"""Rescales each leaf on its own so that its L2 norm is at most ``max_norm``.

  .. math::
    u_i \leftarrow u_i \cdot \min\big(1, c / \|u_i\|_2\big)
    \quad \text{for each leaf } i

  This is Keras' ``clipnorm`` (and ``tf.clip_by_norm`` per variable). Unlike
  :func:`clip_by_global_norm`, the leaves get different factors, so the
  direction of each leaf is kept but the direction of the full update changes
  whenever some leaves are clipped and others are not. Not in Optax.

  Args:
    max_norm: ``c > 0``, the largest L2 norm of one leaf.

  References:
    Pascanu et al., On the difficulty of training recurrent neural networks,
    2013; Chollet et al., Keras, 2015 (``clipnorm``).
  """
  checks.check_positive('max_norm', max_norm, fn='clip_by_norm')

  return _leafwise(
      lambda u: _shrink_to(u, jnp.sqrt(jnp.sum(otu.abs_sq(u))), max_norm)
  )


_UNIT_AXES = {2: 0, 3: 0, 4: (0, 1, 2), 5: (0, 1, 2, 3)}


def unitwise_norm(x: jax.Array, axis: Axis = None) -> jax.Array:
  """The L2 norm of each unit of ``x``, broadcast to ``x.shape``.

  A unit is the slice reduced over ``axis``. With ``axis=None`` the axes follow
  the layer conventions: scalars and vectors are one unit; ``(in, out)``
  kernels and ``(in, heads, out)`` multi-head kernels reduce axis 0; HWIO conv
  kernels reduce ``(0, 1, 2)``; DHWIO kernels ``(0, 1, 2, 3)``.
  """
  x = jnp.asarray(x)
  if axis is None:
    if jnp.squeeze(x).ndim <= 1:
      axis = None
    elif x.ndim in _UNIT_AXES:
      axis = _UNIT_AXES[x.ndim]
    else:
      raise ValueError(
          f'unitwise_norm: x has shape {x.shape}; without axis, allowed ranks '
          'are 0 to 5. Pass axis for other shapes.'
      )
  sq = jnp.sum(otu.abs_sq(x), axis=axis, keepdims=True)
  return jnp.broadcast_to(jnp.sqrt(sq), x.shape)


def unitwise_clip(g_norm, max_norm, grad, div_eps=1e-6):
  """``grad`` where ``g_norm < max_norm``, else ``grad * max_norm / g_norm``."""
  if jnp.shape(g_norm) != jnp.shape(max_norm) or jnp.shape(g_norm) != jnp.shape(grad):
    raise ValueError(
        f'unitwise_clip: shapes differ: g_norm {jnp.shape(g_norm)}, max_norm '
        f'{jnp.shape(max_norm)}, grad {jnp.shape(grad)}.'
    )
  clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
  return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike = 1e-3,
    axis: Axis = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adaptive gradient clipping: each unit's update norm is at most a fraction
  of its params' norm.

  .. math::
    u_k \leftarrow \begin{cases} u_k & \|u_k\| < \lambda \max(\|p_k\|, \epsilon)
    \\ u_k \, \lambda \max(\|p_k\|, \epsilon) / \|u_k\| & \text{otherwise}
    \end{cases}

  for every unit ``k`` (see :func:`unitwise_norm`). Needs the params.

  Args:
    clipping: ``lambda > 0``, the largest ratio of update norm to param norm.
    eps: ``epsilon >= 0``, the floor of the param norm, so that zero-initialised
      params can still move.
    axis: the axes of one unit; ``None`` uses the layer conventions.

  References:
    Brock et al., High-performance large-scale image recognition without
    normalization, 2021.
  """
  checks.check_positive('clipping', clipping, fn='adaptive_grad_clip')
  checks.check_non_negative('eps', eps, fn='adaptive_grad_clip')

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'adaptive_grad_clip')
    g_norm, p_norm = jax.tree.map(
        lambda x: unitwise_norm(x, axis=axis), (updates, params)
    )
    max_norm = jax.tree.map(lambda n: clipping * jnp.maximum(n, eps), p_norm)
    return jax.tree.map(unitwise_clip, g_norm, max_norm, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)
