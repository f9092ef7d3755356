"""COCOB-Backprop: learning-rate-free SGD by continuous coin betting."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = ['COCOBState', 'cocob', 'scale_by_cocob']


class COCOBState(NamedTuple):
  init_particles: base.Updates  # w_1, the params at init
  cumulative_gradients: base.Updates  # theta_t = -sum of gradients
  scale: base.Updates  # L_t = max |g| so far (at least eps)
  subgradients: base.Updates  # G_t = sum |g|
  reward: base.Updates  # Reward_t, the bettor's winnings (>= 0)


def _check_args(fn, alpha, eps):
  checks.check_non_negative('alpha', alpha, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)


def scale_by_cocob(
    alpha: jax.typing.ArrayLike = 100.0, eps: jax.typing.ArrayLike = 1e-8
) -> base.GradientTransformationExtraArgs:
  r"""Bets a fraction of the accumulated reward on each coordinate's direction.

  Per coordinate, with ``w_1`` the initial params and ``L_0 = eps``:

  .. math::
    L_t = \max(L_{t-1}, |g_t|), \quad G_t = G_{t-1} + |g_t|, \quad
    R_t = \max\big(R_{t-1} - g_t (w_t - w_1), 0\big), \quad
    \theta_t = \theta_{t-1} - g_t, \\
    w_{t+1} = w_1 + \frac{\theta_t}{L_t \max(G_t + L_t, \alpha L_t)}
    (L_t + R_t), \qquad u_t = w_{t+1} - w_t

  The update is a difference of params, so it needs ``params``; it is the
  final step (the learning rate of :func:`cocob` scales the gradients
  before it).

  Args:
    alpha: bounds the fraction bet early on, ``>= 0`` (100 in the paper).
    eps: ``L_0``, keeps the first division finite, ``>= 0``.

  References:
    Orabona & Tommasi, Training deep networks without learning rates through
    coin betting, 2017 (Algorithm 2).
  """
  _check_args('scale_by_cocob', alpha, eps)

  def init_fn(params):
    zeros = otu.tree_zeros_like(params)
    return COCOBState(
        init_particles=params,
        cumulative_gradients=zeros,
        scale=otu.tree_scale(eps, otu.tree_ones_like(params)),
        subgradients=zeros,
        reward=zeros,
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'scale_by_cocob')
    w1 = state.init_particles
    scale = jax.tree.map(lambda L, g: jnp.maximum(L, jnp.abs(g)),
                         state.scale, updates)
    subgradients = jax.tree.map(lambda G, g: G + jnp.abs(g),
                                state.subgradients, updates)
    reward = jax.tree.map(
        lambda R, g, w, w0: jnp.maximum(R - g * (w - w0), 0),
        state.reward, updates, params, w1)
    theta = jax.tree.map(lambda c, g: c - g, state.cumulative_gradients, updates)

    def step(w, w0, c, L, G, R):
      # -w + (w0 + bet), bet = c / (L max(G + L, alpha L)) (L + R); in one
      # expression, in Optax's order, so that the program is Optax's.
      return -w + (w0 + c / (L * jnp.maximum(G + L, alpha * L)) * (L + R))

    updates = jax.tree.map(step, params, w1, theta, scale, subgradients, reward)
    return updates, COCOBState(
        init_particles=w1, cumulative_gradients=theta, scale=scale,
        subgradients=subgradients, reward=reward)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def cocob(
    learning_rate: base.ScalarOrSchedule = 1.0,
    alpha: jax.typing.ArrayLike = 100.0,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformationExtraArgs:
  r"""COCOB: weight decay, ``g <- learning_rate * g``, then :func:`scale_by_cocob`.

  .. math::
    g_t \leftarrow \eta_t (g_t + \lambda w_t), \qquad
    w_{t+1} = w_1 + \frac{\theta_t}{L_t \max(G_t + L_t, \alpha L_t)}
    (L_t + R_t)

  No learning rate is needed (``eta = 1``); ``learning_rate`` exists to
  scale the gradients, e.g. by a schedule.

  Args:
    learning_rate: ``eta >= 0``, multiplies the gradients (sign kept).
    alpha: bounds the fraction bet early on, ``>= 0``.
    eps: the initial scale ``L_0``, ``>= 0``.
    weight_decay: ``lambda >= 0``, an L2 penalty added to the gradients.
    mask: where weight decay applies (a tree of booleans or a callable).

  References:
    Orabona & Tommasi, Training deep networks without learning rates through
    coin betting, 2017.
  """
  checks.check_learning_rate(learning_rate, 'cocob')
  checks.check_non_negative('weight_decay', weight_decay, fn='cocob')
  _check_args('cocob', alpha, eps)
  return base.chain(
      adding.add_decayed_weights(weight_decay, mask),
      transform.scale_by_learning_rate(learning_rate, flip_sign=False),
      scale_by_cocob(alpha, eps),
  )
