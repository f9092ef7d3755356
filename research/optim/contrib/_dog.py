"""Parameter-free step sizes from the distance travelled: DoG and DoWG."""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = ['DoGState', 'DoWGState', 'dog', 'dowg']

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]
InitStep = tuple[Literal['distance', 'learning_rate', 'heuristic'],
                 jax.typing.ArrayLike]
_INIT_STEP_TAGS = ('distance', 'learning_rate', 'heuristic')


def _distance_optimizer(fn, learning_rate, weight_decay, mask, scaler):
  """``chain([add_decayed_weights], scaler, scale_by_learning_rate)``."""
  checks.check_learning_rate(learning_rate, fn)
  checks.check_non_negative('weight_decay', weight_decay, fn=fn)
  decay = (base.identity() if weight_decay is None
           else adding.add_decayed_weights(weight_decay, mask))
  return base.chain(decay, scaler, transform.scale_by_learning_rate(learning_rate))


class DoGState(NamedTuple):
  is_init_step: jax.Array  # bool, True before the first update
  init_params: base.Params  # x_0
  max_dist: jax.Array  # \bar r_t = max(r_eps, max_k ||x_k - x_0||)
  sum_sq_norm_grads: jax.Array  # G_t = sum_k ||g_k||^2


def _check_init_step(fn, init_step):
  if not isinstance(init_step, (tuple, list)) or len(init_step) != 2:
    raise ValueError(
        f'{fn}: init_step={init_step!r} is not allowed; allowed: a pair '
        f'(tag, value) with tag one of {_INIT_STEP_TAGS}.')
  tag, value = init_step
  checks.check_choice('init_step[0]', tag, _INIT_STEP_TAGS, fn=fn)
  checks.check_positive('init_step[1]', value, fn=fn)


def scale_by_dog(
    init_step: InitStep,
    eps: jax.typing.ArrayLike = 1e-8,
) -> base.GradientTransformationExtraArgs:
  r"""Scales the gradient by the largest distance from ``x_0`` over the gradients' RMS.

  .. math::
    \bar r_t = \max(\bar r_{t-1}, \|x_t - x_0\|), \quad
    G_t = G_{t-1} + \|g_t\|^2, \quad
    u_t = \frac{\bar r_t}{\sqrt{G_t + \epsilon}}\, g_t

  ``init_step = (tag, value)`` sets the first step: ``'distance'`` gives
  ``bar r_0 = value``; ``'heuristic'`` gives ``bar r_0 = value (1 +
  ||x_0||)`` (so ``init`` needs the real params); ``'learning_rate'`` gives
  ``bar r_0 = 0`` and uses ``value`` as the first step size.

  Not exported by ``optax.contrib`` (Optax neither); :func:`dog` builds on it.

  Args:
    init_step: ``(tag, value)``, tag in ``distance``, ``learning_rate``,
      ``heuristic``; ``value > 0``.
    eps: added to ``G_t``, ``>= 0``.

  References:
    Ivgi, Hinder & Carmon, DoG is SGD's best friend: a parameter-free
    dynamic step size schedule, 2023.
  """
  fn = 'scale_by_dog'
  _check_init_step(fn, init_step)
  checks.check_non_negative('eps', eps, fn=fn)
  tag, value = init_step

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    r0 = {'distance': lambda: value,
          'heuristic': lambda: value * (1 + otu.tree_norm(params)),
          'learning_rate': lambda: 0.0}[tag]()
    return DoGState(
        is_init_step=jnp.asarray(True),
        init_params=params,
        max_dist=jnp.asarray(r0, dtype=dtype),
        sum_sq_norm_grads=jnp.asarray(0.0, dtype=dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    dist = otu.tree_norm(otu.tree_sub(state.init_params, params))
    max_dist = jnp.maximum(state.max_dist, dist)
    sum_sq = state.sum_sq_norm_grads + otu.tree_norm(updates, squared=True)
    step = max_dist / jnp.sqrt(sum_sq + eps)
    if tag == 'learning_rate':
      step = jnp.where(state.is_init_step, value, step)
    return otu.tree_scale(step, updates), DoGState(
        is_init_step=jnp.asarray(False),
        init_params=state.init_params,
        max_dist=max_dist,
        sum_sq_norm_grads=sum_sq,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def dog(
    learning_rate: base.ScalarOrSchedule = 1.0,
    init_step: InitStep = ('heuristic', 1e-6),
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: Optional[jax.typing.ArrayLike] = None,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""DoG: SGD with the step size of :func:`scale_by_dog`.

  .. math::
    x_{t+1} = x_t - \eta_t \frac{\max_{k \le t} \|x_k - x_0\|}
    {\sqrt{\sum_{k \le t} \|g_k\|^2 + \epsilon}}\, g_t

  ``learning_rate`` is a multiplier (1 by default, or a schedule). With
  ``weight_decay``, ``lambda x_t`` is added to ``g_t`` first. The authors
  recommend averaging the iterates.

  Args:
    learning_rate: ``eta >= 0``, a multiplier or a schedule.
    init_step: ``(tag, value)``: ``('distance', r0)``, ``('learning_rate',
      eta0)`` or ``('heuristic', alpha)`` for ``r0 = alpha (1 + ||x_0||)``
      (1e-6 suggested, 1e-4 with batch norm).
    eps: added to the sum of squared gradient norms, ``>= 0``.
    weight_decay: ``lambda >= 0`` or ``None`` for none.
    mask: where weight decay applies (a tree of booleans or a callable).

  References:
    Ivgi, Hinder & Carmon, DoG is SGD's best friend: a parameter-free
    dynamic step size schedule, 2023.
  """
  _check_init_step('dog', init_step)
  checks.check_non_negative('eps', eps, fn='dog')
  return _distance_optimizer('dog', learning_rate, weight_decay, mask,
                             scale_by_dog(init_step, eps))


class DoWGState(NamedTuple):
  init_params: base.Params  # x_0
  weighted_sq_norm_grads: jax.Array  # v_t = sum_k \bar r_k^2 ||g_k||^2
  estim_sq_dist: jax.Array  # \bar r_t^2 = max_k ||x_k - x_0||^2


def _check_dowg_args(fn, init_estim_sq_dist, eps):
  checks.check_non_negative('eps', eps, fn=fn)
  if init_estim_sq_dist is None:
    # eps is then the initial squared distance: zero would never move.
    checks.check_positive('eps', eps, fn=f'{fn} (init_estim_sq_dist=None)')
  else:
    checks.check_positive('init_estim_sq_dist', init_estim_sq_dist, fn=fn)


def scale_by_dowg(
    init_estim_sq_dist: Optional[jax.typing.ArrayLike] = None,
    eps: jax.typing.ArrayLike = 1e-4,
) -> base.GradientTransformationExtraArgs:
  r"""Scales the gradient by DoWG's distance-weighted step size.

  .. math::
    \bar r_t^2 = \max(\bar r_{t-1}^2, \|x_t - x_0\|^2), \quad
    v_t = v_{t-1} + \bar r_t^2 \|g_t\|^2, \quad
    u_t = \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}\, g_t

  Not exported by ``optax.contrib`` (Optax neither); :func:`dowg` builds on
  it.

  Args:
    init_estim_sq_dist: ``bar r_0^2 > 0``; ``None`` uses ``eps``.
    eps: added to ``sqrt(v_t)``, ``>= 0`` (``> 0`` when it is ``bar r_0^2``).

  References:
    Khaled, Mishchenko & Jin, DoWG unleashed: an efficient universal
    parameter-free gradient descent method, 2023.
  """
  fn = 'scale_by_dowg'
  _check_dowg_args(fn, init_estim_sq_dist, eps)
  r0_sq = eps if init_estim_sq_dist is None else init_estim_sq_dist

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    return DoWGState(
        init_params=params,
        weighted_sq_norm_grads=jnp.asarray(0.0, dtype=dtype),
        estim_sq_dist=jnp.asarray(r0_sq, dtype=dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    sq_dist = otu.tree_norm(otu.tree_sub(state.init_params, params), squared=True)
    estim_sq_dist = jnp.maximum(state.estim_sq_dist, sq_dist)
    weighted = (estim_sq_dist * otu.tree_norm(updates, squared=True)
                + state.weighted_sq_norm_grads)
    step = estim_sq_dist / (jnp.sqrt(weighted) + eps)
    return otu.tree_scale(step, updates), state._replace(
        weighted_sq_norm_grads=weighted, estim_sq_dist=estim_sq_dist)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def dowg(
    learning_rate: base.ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Optional[jax.typing.ArrayLike] = None,
    eps: jax.typing.ArrayLike = 1e-4,
    weight_decay: Optional[jax.typing.ArrayLike] = None,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""DoWG: SGD with the step size of :func:`scale_by_dowg`.

  .. math::
    x_{t+1} = x_t - \eta_t \frac{\bar r_t^2}{\sqrt{\sum_{k \le t} \bar r_k^2
    \|g_k\|^2} + \epsilon}\, g_t, \qquad
    \bar r_t = \max_{k \le t} \|x_k - x_0\|

  Args:
    learning_rate: ``eta >= 0``, a multiplier or a schedule.
    init_estim_sq_dist: ``bar r_0^2 > 0``; ``None`` uses ``eps``.
    eps: added to the denominator, ``>= 0``.
    weight_decay: ``lambda >= 0`` or ``None`` for none.
    mask: where weight decay applies (a tree of booleans or a callable).

  References:
    Khaled, Mishchenko & Jin, DoWG unleashed: an efficient universal
    parameter-free gradient descent method, 2023.
  """
  _check_dowg_args('dowg', init_estim_sq_dist, eps)
  return _distance_optimizer('dowg', learning_rate, weight_decay, mask,
                             scale_by_dowg(init_estim_sq_dist, eps))
