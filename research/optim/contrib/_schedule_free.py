"""Schedule-Free: momentum replaced by interpolation and online averaging."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import alias
from research.optim import base
from research.optim import checks
from research.optim import schedules
from research.optim import transform
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = [
    'ScheduleFreeState',
    'schedule_free',
    'schedule_free_adamw',
    'schedule_free_eval_params',
    'schedule_free_sgd',
]


class ScheduleFreeState(NamedTuple):
  b1: jax.Array  # beta, the interpolation weight (for the eval params)
  weight_sum: jax.Array  # sum of the averaging weights so far
  step_count: jax.Array  # int32, 1 + updates so far
  max_lr: jax.Array  # the largest learning rate seen so far
  base_optimizer_state: base.OptState
  z: base.Params  # the base optimizer's iterate


def _average(y, z, b1):
  """``x = (y - (1 - b1) z) / b1``: the averaged iterate from the other two."""
  return jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, y, z)


def schedule_free_eval_params(state: ScheduleFreeState, params: base.Params):
  r"""The params to evaluate at: :math:`x = (y - (1 - \beta) z) / \beta`.

  Training moves :math:`y` (the params the gradients are taken at); the
  averaged sequence :math:`x` is the one to test with.

  Args:
    state: the :class:`ScheduleFreeState` of :func:`schedule_free` (or the
      state of a chain or wrapper around it that has ``b1`` and ``z``).
    params: the current params :math:`y`.
  """
  b1, z = getattr(state, 'b1', None), getattr(state, 'z', None)
  if b1 is None or z is None:
    raise ValueError(
        'schedule_free_eval_params: state is a '
        f'{type(state).__name__}; allowed: a ScheduleFreeState (with b1 and z).'
    )
  return _average(params, z, b1)


def _check_schedule_free_args(fn, learning_rate, b1, weight_lr_power):
  checks.check_learning_rate(learning_rate, fn)
  checks.check_range('b1', b1, 0.0, 1.0, low_inclusive=False, fn=fn)
  checks.check_non_negative('weight_lr_power', weight_lr_power, fn)


def schedule_free(
    base_optimizer: base.GradientTransformation,
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    state_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Makes ``base_optimizer`` schedule-free.

  The base optimizer (without momentum) moves a sequence :math:`z`; the
  gradients are taken at an interpolation :math:`y` of :math:`z` and of the
  running weighted average :math:`x` of :math:`z`. With SGD as the base:

  .. math::
    y_t &= (1 - \beta) z_t + \beta x_t \\
    z_{t+1} &= z_t - \gamma_t \nabla f(y_t) \\
    x_{t+1} &= (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \qquad
    c_{t+1} = \frac{w_{t+1}}{\sum_{i \le t+1} w_i}, \quad
    w_t = (\max_{i \le t} \gamma_i)^{p}

  with :math:`\beta` = ``b1`` and :math:`p` = ``weight_lr_power`` (so steps
  during a warm-up count less in the average). The params are :math:`y`; the
  update returned is :math:`y_{t+1} - y_t`, and :math:`x_t` is recovered from
  :math:`y_t` and :math:`z_t` (see :func:`schedule_free_eval_params`, the
  params to evaluate at). The schedule is read at ``step_count``, which
  starts at 1. A constant learning rate (or a warm-up then constant) replaces
  the decaying schedule.

  Args:
    base_optimizer: the optimizer of :math:`z`, without momentum (e.g.
      ``sgd``, or ``adam`` with ``b1=0``), with its learning rate.
    learning_rate: :math:`\gamma_t`, the same learning rate as the base's.
    b1: :math:`\beta \in (0, 1]`.
    weight_lr_power: :math:`p \ge 0`.
    state_dtype: dtype of :math:`z`; ``None`` for the params' dtypes.

  Returns:
    A transformation with state :class:`ScheduleFreeState`; its ``update``
    needs ``params``.

  References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, The Road Less
    Scheduled, 2024.
  """
  _check_schedule_free_args('schedule_free', learning_rate, b1, weight_lr_power)
  base_optimizer = base.with_extra_args_support(base_optimizer)

  def init_fn(params):
    dtype = _state_dtype.lowest_dtype(params)
    # A copy, so that z and the params are distinct buffers (both donatable).
    z = jax.tree.map(lambda p: jnp.array(p, copy=True),
                     otu.tree_cast(params, state_dtype))
    return ScheduleFreeState(
        b1=jnp.asarray(b1, dtype),
        weight_sum=jnp.zeros([], dtype),
        step_count=jnp.ones([], jnp.int32),
        max_lr=jnp.zeros([], dtype),
        base_optimizer_state=base_optimizer.init(params),
        z=z,
    )

  def update_fn(updates, state, params=None, **extra_args):
    checks.require_params(params, 'schedule_free')
    lr = learning_rate
    if callable(learning_rate):
      lr = jnp.asarray(learning_rate(state.step_count), state.max_lr.dtype)
    max_lr = jnp.maximum(state.max_lr, lr)
    step_count = otu.safe_increment(state.step_count)
    weight = max_lr**weight_lr_power
    weight_sum = state.weight_sum + weight
    # 0 / 0 (no weight yet, e.g. during a warm-up from 0) averages nothing in.
    c = jnp.where(
        jnp.isnan(weight) | jnp.isnan(weight_sum),
        jnp.full(weight.shape, jnp.nan),
        jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
    )
    base_updates, base_state = base_optimizer.update(
        updates, state.base_optimizer_state, params, **extra_args)
    z = jax.tree.map(
        lambda zi, u: jnp.asarray(zi + u).astype(jnp.asarray(zi).dtype),
        state.z, base_updates)
    # Stage by stage over the tree, in Optax's order (the same program).
    prev_x = _average(params, state.z, b1)
    x = jax.tree.map(lambda xi, zi: (1.0 - c) * xi + c * zi, prev_x, z)
    y = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
    new_updates = jax.tree.map(jnp.subtract, y, params)
    return new_updates, ScheduleFreeState(
        b1=state.b1, weight_sum=weight_sum,
        step_count=step_count, max_lr=max_lr,
        base_optimizer_state=base_state, z=z,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _warmed_up(learning_rate, warmup_steps):
  if warmup_steps is None:
    return learning_rate
  # As in Optax, warmup_steps <= 0 keeps the rate at 0 (and is logged).
  return schedules.warmup_constant_schedule(
      init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps)


def schedule_free_sgd(
    learning_rate: jax.typing.ArrayLike = 1.0,
    warmup_steps: Optional[int] = None,
    b1: jax.typing.ArrayLike = 0.9,
    weight_decay: Optional[jax.typing.ArrayLike] = None,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    state_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Schedule-free SGD: :func:`schedule_free` around plain SGD.

  .. math::
    z_{t+1} = z_t - \gamma_t (\nabla f(y_t) + \lambda y_t)

  and :math:`x, y` as in :func:`schedule_free`.

  Args:
    learning_rate: the peak :math:`\gamma`, ``>= 0``.
    warmup_steps: a linear warm-up from 0 over this many steps; ``None`` for
      none (0 keeps the rate at 0, as in Optax).
    b1: :math:`\beta \in (0, 1]`.
    weight_decay: :math:`\lambda \ge 0` (on :math:`y`, before the learning
      rate), or ``None``.
    weight_lr_power: :math:`p \ge 0`.
    state_dtype: dtype of :math:`z`.

  References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, The Road Less
    Scheduled, 2024.
  """
  fn = 'schedule_free_sgd'
  _check_schedule_free_args(fn, learning_rate, b1, weight_lr_power)
  checks.check_non_negative('weight_decay', weight_decay, fn)
  learning_rate = _warmed_up(learning_rate, warmup_steps)
  optimizer = alias.sgd(learning_rate)
  if weight_decay is not None:
    optimizer = base.chain(adding.add_decayed_weights(weight_decay), optimizer)
  return schedule_free(optimizer, learning_rate, b1, weight_lr_power,
                       state_dtype)


def schedule_free_adamw(
    learning_rate: jax.typing.ArrayLike = 0.0025,
    warmup_steps: Optional[int] = None,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: jax.typing.ArrayLike = 0.0,
    weight_lr_power: jax.typing.ArrayLike = 2.0,
    state_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Schedule-free AdamW: :func:`schedule_free` around AdamW without momentum.

  .. math::
    v_t &= b_2 v_{t-1} + (1 - b_2) g_t^2, \qquad
    z_{t+1} = z_t - \gamma_t \Big(\frac{g_t}{\sqrt{v_t / (1 - b_2^t)}
      + \epsilon} + \lambda y_t\Big)

  with :math:`g_t = \nabla f(y_t)`, and :math:`x, y` as in
  :func:`schedule_free` with :math:`\beta` = ``b1``.

  Args:
    learning_rate: the peak :math:`\gamma`, ``>= 0``.
    warmup_steps: a linear warm-up from 0 over this many steps; ``None`` for
      none (0 keeps the rate at 0, as in Optax).
    b1: :math:`\beta \in (0, 1]`, the interpolation weight (not a momentum).
    b2: :math:`b_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`.
    weight_lr_power: :math:`p \ge 0`.
    state_dtype: dtype of :math:`z`.

  References:
    Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, The Road Less
    Scheduled, 2024; Loshchilov & Hutter, Decoupled Weight Decay
    Regularization, 2019.
  """
  fn = 'schedule_free_adamw'
  _check_schedule_free_args(fn, learning_rate, b1, weight_lr_power)
  checks.check_decay('b2', b2, fn)
  checks.check_non_negative('eps', eps, fn)
  checks.check_non_negative('weight_decay', weight_decay, fn)
  learning_rate = _warmed_up(learning_rate, warmup_steps)
  optimizer = base.chain(
      transform.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False,
                             bias_correction=True),
      adding.add_decayed_weights(weight_decay),
      transform.scale_by_learning_rate(learning_rate),
  )
  return schedule_free(optimizer, learning_rate, b1, weight_lr_power,
                       state_dtype)
