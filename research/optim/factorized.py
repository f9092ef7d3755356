"""Adafactor: a second moment stored as row and column statistics.

For a matrix-like leaf the mean squared gradient is approximated by the outer
product of its row means and column means (divided by their overall mean),
so memory grows as ``n + m`` instead of ``n m``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import clipping
from research.optim import layerwise
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'FactoredState',
    'adafactor',
    'scale_by_factored_rms',
]


def _decay_rate_pow(step, exponent=0.8):
  """Adafactor's schedule ``1 - (step + 1)^(-exponent)``; ``step`` from 0."""
  t = jnp.array(step + 1, jnp.float32)
  return 1.0 - t ** (-exponent)


def _factored_axes(shape, factored: bool, min_dim_size_to_factor: int):
  """``(d1, d0)``, the two largest axes (``d0`` largest), or ``None``.

  ``None`` means no factoring: ``factored`` is off, the leaf has fewer than
  two axes, or its second largest axis is below ``min_dim_size_to_factor``.
  """
  if not factored or len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


class FactoredState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  v_row: base.Params  # per leaf: mean over axis d0 of g^2 (or a (1,) dummy)
  v_col: base.Params  # per leaf: mean over axis d1 of g^2 (or a (1,) dummy)
  v: base.Params  # per leaf: the full second moment (or a (1,) dummy)


def _placeholder(dtype):
  return jnp.zeros((1,), dtype)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: jax.typing.ArrayLike = 0.8,
    step_offset: jax.typing.ArrayLike = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: jax.typing.ArrayLike = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = _decay_rate_pow,
) -> base.GradientTransformationExtraArgs:
  r"""Scales by a factored estimate of the root mean squared gradient.

  With ``beta_t = decay_rate_fn(t - 1 - step_offset, decay_rate)`` (by default
  ``1 - (t - step_offset)^{-decay_rate}``) and ``G = |g_t|^2 + epsilon``:

  for a factored leaf (axes ``d0`` the largest, ``d1`` the second largest)

  .. math::
    R_t = \beta_t R_{t-1} + (1 - \beta_t) \mathrm{mean}_{d_0} G, \quad
    C_t = \beta_t C_{t-1} + (1 - \beta_t) \mathrm{mean}_{d_1} G,

  .. math::
    u_t = g_t \Big/ \sqrt{\frac{R_t}{\mathrm{mean}_{d_1} R_t} \otimes C_t},

  and otherwise ``V_t = beta_t V_{t-1} + (1 - beta_t) G``,
  ``u_t = g_t / sqrt(V_t)``.

  Args:
    factored: factor the second moment of leaves with two or more axes.
    decay_rate: the exponent of the default decay schedule.
    step_offset: the step at which a fine-tuning phase starts.
    min_dim_size_to_factor: factor only when the second largest axis has at
      least this size, ``>= 0``.
    epsilon: added to ``|g|^2``, ``>= 0``.
    decay_rate_fn: ``(step, decay_rate) -> beta``, with ``step`` counting from
      0; e.g. a capped schedule as in Zhai et al. (2021).

  References:
    Shazeer & Stern, Adafactor: adaptive learning rates with sublinear memory
    cost, 2018; Zhai et al., Scaling vision transformers, 2021.
  """
  fn = 'scale_by_factored_rms'
  checks.check_non_negative('epsilon', epsilon, fn=fn)
  checks.check_non_negative('min_dim_size_to_factor', min_dim_size_to_factor, fn=fn)

  def axes_of(p):
    return _factored_axes(p.shape, factored, min_dim_size_to_factor)

  def init_leaf(p):
    axes = axes_of(p)
    if axes is None:
      return _placeholder(p.dtype), _placeholder(p.dtype), jnp.zeros_like(p)
    d1, d0 = axes
    row = jnp.zeros(np.delete(p.shape, d0), p.dtype)
    col = jnp.zeros(np.delete(p.shape, d1), p.dtype)
    return row, col, _placeholder(p.dtype)

  def init_fn(params):
    row, col, full = _unzip3(jax.tree.map(init_leaf, params), params)
    return FactoredState(
        count=jnp.zeros([], jnp.int32), v_row=row, v_col=col, v=full
    )

  def update_leaf(g, row, col, full, p, step):
    dtype = p.dtype
    # ``step`` is the count before this update, so it counts from 0.
    beta = decay_rate_fn(step - step_offset, decay_rate)
    new_row, new_col, new_full = (
        _placeholder(dtype), _placeholder(dtype), _placeholder(dtype)
    )
    sq = otu.abs_sq(g) + epsilon
    axes = axes_of(p)
    if axes is None:
      new_full = (beta * full + (1.0 - beta) * sq).astype(dtype)
      return g * new_full**-0.5, new_row, new_col, new_full
    d1, d0 = axes
    new_row = beta * row + (1.0 - beta) * jnp.mean(sq, axis=d0)
    new_col = beta * col + (1.0 - beta) * jnp.mean(sq, axis=d1)
    new_row, new_col = new_row.astype(dtype), new_col.astype(dtype)
    # ``row`` lost axis d0, so d1 moved down by one if it came after d0.
    row_axis = d1 - 1 if d1 > d0 else d1
    row_mean = jnp.mean(new_row, axis=row_axis, keepdims=True)
    row_scale = (new_row / row_mean) ** -0.5
    col_scale = new_col**-0.5
    update = (
        g
        * jnp.expand_dims(row_scale, axis=d0)
        * jnp.expand_dims(col_scale, axis=d1)
    )
    return update, new_row, new_col, new_full

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    out = jax.tree.map(
        lambda g, r, c, v, p: update_leaf(g, r, c, v, p, state.count),
        updates, state.v_row, state.v_col, state.v, params,
    )
    new_updates, row, col, full = _unzip4(out, updates)
    count = otu.safe_increment(state.count)
    return new_updates, FactoredState(count=count, v_row=row, v_col=col, v=full)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _unzip(tree_of_tuples, like, n):
  # Each leaf of ``like`` became an n-tuple; split into n trees like ``like``.
  structure = jax.tree.structure(like)
  tuples = structure.flatten_up_to(tree_of_tuples)
  return tuple(
      jax.tree.unflatten(structure, [t[i] for t in tuples]) for i in range(n)
  )


def _unzip3(tree_of_tuples, like):
  return _unzip(tree_of_tuples, like, 3)


def _unzip4(tree_of_tuples, like):
  return _unzip(tree_of_tuples, like, 4)


def adafactor(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: jax.typing.ArrayLike = 0.8,
    decay_offset: jax.typing.ArrayLike = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Optional[jax.typing.ArrayLike] = 1.0,
    momentum: Optional[jax.typing.ArrayLike] = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: Optional[base.ScalarOrSchedule] = None,
    eps: jax.typing.ArrayLike = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> base.GradientTransformationExtraArgs:
  r"""The Adafactor optimizer.

  .. math::
    u_t = \mathrm{clip}_{\mathrm{rms} \le d}\big(g_t / \sqrt{\hat V_t}\big),
    \quad s_t = \eta_t \max(\mathrm{rms}(\theta_{t-1}), 10^{-3})\, u_t,

  .. math::
    \theta_t = \theta_{t-1} - \big(\mathrm{ema}_{\beta_1}(s)_t
      + \lambda_t \theta_{t-1}\big)

  with ``hat V`` the factored second moment of :func:`scale_by_factored_rms`
  and each optional stage skipped when its argument is ``None``/``False``.

  Args:
    learning_rate: ``eta``, a scalar or schedule; ``None`` for no scaling.
    min_dim_size_to_factor: factor a leaf only if its second largest axis has
      at least this size.
    decay_rate: the exponent of the second-moment decay schedule.
    decay_offset: the step at which a fine-tuning phase starts.
    multiply_by_parameter_scale: scale steps by the params' block RMS.
    clipping_threshold: ``d``, the block-RMS clipping threshold, ``>= 1``, or
      ``None`` for no clipping.
    momentum: ``beta_1`` in ``[0, 1)`` for an (unbiased) EMA of the steps, or
      ``None``.
    dtype_momentum: dtype of the momentum buffer.
    weight_decay_rate: ``lambda``, a scalar or schedule, or ``None``.
    eps: added to ``|g|^2``, ``>= 0``.
    factored: use the factored estimate for leaves with two or more axes.
    weight_decay_mask: which params decay (a tree of booleans, a prefix, or a
      function ``params -> such a tree``); ``None`` for all.

  References:
    Shazeer & Stern, Adafactor: adaptive learning rates with sublinear memory
    cost, 2018.
  """
  fn = 'adafactor'
  if learning_rate is not None:
    checks.check_learning_rate(learning_rate, fn)
  checks.check_range('clipping_threshold', clipping_threshold, 1.0, None, fn=fn)
  checks.check_decay('momentum', momentum, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_numbers(
      fn, decay_rate=decay_rate, decay_offset=decay_offset,
      weight_decay_rate=weight_decay_rate,
  )
  txs = [
      scale_by_factored_rms(
          factored, decay_rate, decay_offset, min_dim_size_to_factor, eps
      )
  ]
  if clipping_threshold is not None:
    txs.append(clipping.clip_by_block_rms(clipping_threshold))
  if learning_rate is not None:
    txs.append(transform.scale_by_learning_rate(learning_rate, flip_sign=False))
  if multiply_by_parameter_scale:
    txs.append(layerwise.scale_by_param_block_rms())
  if momentum is not None:
    txs.append(
        transform.ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
    )
  if weight_decay_rate is not None:
    txs.append(
        adding.add_decayed_weights(weight_decay_rate, mask=weight_decay_mask)
    )
  txs.append(transform.scale(-1))
  return _updates_in_input_dtype(base.chain(*txs))


def _updates_in_input_dtype(tx):
  # The momentum buffer defaults to float32, and its output would carry that
  # dtype to bfloat16 params (Optax returns it so); we cast it back.
  def update_fn(updates, state, params=None, **extra_args):
    new_updates, state = tx.update(updates, state, params, **extra_args)
    return otu.tree_cast_like(new_updates, updates), state

  return base.GradientTransformationExtraArgs(tx.init, update_fn)
