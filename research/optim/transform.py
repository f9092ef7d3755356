"""Preconditioners: the ``scale_by_*`` transformations each optimizer is built from.

Each transform keeps its state NamedTuple beside it. Counts are int32 and
incremented before use, so the first step is ``t = 1``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'EmaState',
    'ScaleByAdaDeltaState',
    'ScaleByAdamState',
    'ScaleByAdanState',
    'ScaleByAmsgradState',
    'ScaleByBeliefState',
    'ScaleByLionState',
    'ScaleByOptimisticGradientState',
    'ScaleByRStdDevState',
    'ScaleByRStdDevWithCountState',
    'ScaleByRmsState',
    'ScaleByRmsWithCountState',
    'ScaleByRpropState',
    'ScaleByRssState',
    'ScaleByScheduleState',
    'TraceState',
    'centralize',
    'ema',
    'normalize_by_update_norm',
    'scale',
    'scale_by_adadelta',
    'scale_by_adam',
    'scale_by_adamax',
    'scale_by_adan',
    'scale_by_amsgrad',
    'scale_by_belief',
    'scale_by_learning_rate',
    'scale_by_lion',
    'scale_by_optimistic_gradient',
    'scale_by_polyak',
    'scale_by_radam',
    'scale_by_rms',
    'scale_by_rprop',
    'scale_by_rss',
    'scale_by_schedule',
    'scale_by_sign',
    'scale_by_stddev',
    'scale_by_yogi',
    'trace',
]


def scale(step_size: jax.typing.ArrayLike) -> base.GradientTransformationExtraArgs:
  """Scales the updates by a fixed scalar: ``u <- step_size * u``."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda g: step_size * g, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class ScaleByScheduleState(NamedTuple):
  count: jax.Array  # int32, number of updates so far


def scale_by_schedule(step_size_fn: base.Schedule) -> base.GradientTransformationExtraArgs:
  """Scales by a schedule of the update count: ``u <- step_size_fn(count) * u``.

  The schedule sees ``count = 0`` on the first update.
  """

  def init_fn(params):
    del params
    return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    step_size = step_size_fn(state.count)
    updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, ScaleByScheduleState(count=otu.safe_increment(state.count))

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    *,
    flip_sign: bool = True,
) -> base.GradientTransformationExtraArgs:
  """Scales by ``-learning_rate`` (or ``+learning_rate`` with ``flip_sign=False``).

  ``learning_rate`` is a scalar or a schedule ``count -> scalar``; ``None``
  means no scaling.
  """
  if learning_rate is None:
    return base.identity()
  checks.check_learning_rate(learning_rate, 'scale_by_learning_rate')
  m = -1 if flip_sign else 1
  if callable(learning_rate):
    return scale_by_schedule(lambda count: m * learning_rate(count))
  return scale(m * learning_rate)


class TraceState(NamedTuple):
  trace: base.Params


def trace(
    decay: jax.typing.ArrayLike,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Heavy-ball momentum: a trace of past updates.

  .. math::
    m_t = g_t + \mu m_{t-1}, \qquad u_t = m_t \; (\text{or } g_t + \mu m_t
    \text{ with Nesterov})

  Args:
    decay: the momentum coefficient ``mu``, in ``[0, 1)``.
    nesterov: use Nesterov's look-ahead form.
    accumulator_dtype: dtype of ``m``; ``None`` keeps the params' dtype.

  References:
    Polyak, Some methods of speeding up the convergence of iteration methods,
    1964; Sutskever et al., On the importance of initialization and momentum in
    deep learning, 2013.
  """
  checks.check_decay('decay', decay, fn='trace')
  accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

  def init_fn(params):
    return TraceState(trace=otu.tree_zeros_like(params, dtype=accumulator_dtype))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    f = lambda g, t: g + decay * t  # noqa: E731
    new_trace = jax.tree.map(
        lambda g, t: None if g is None else f(g, t),
        updates,
        state.trace,
        is_leaf=lambda g: g is None,
    )
    updates = jax.tree.map(f, updates, new_trace) if nesterov else new_trace
    new_trace = otu.tree_cast(new_trace, accumulator_dtype)
    return updates, TraceState(trace=new_trace)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


_is_none = lambda x: x is None  # noqa: E731


def _canonical_dtype(dtype):
  return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _adam_ratio(mu_hat, nu_hat, eps, eps_root):
  """``m / (sqrt(v + eps_root) + eps)`` leaf by leaf; ``None`` leaves stay."""
  return jax.tree.map(
      lambda m, v: None if m is None else m / (jnp.sqrt(v + eps_root) + eps),
      mu_hat,
      nu_hat,
      is_leaf=_is_none,
  )


def _nesterov_mu_hat(mu, updates, b1, count):
  """Dozat's look-ahead first moment:
  ``b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``."""
  return jax.tree.map(
      lambda m, g: b1 * m + (1 - b1) * g,
      otu.tree_bias_correction(mu, b1, otu.safe_increment(count)),
      otu.tree_bias_correction(updates, b1, count),
  )


def _check_betas(fn, **betas):
  for name, value in betas.items():
    checks.check_decay(name, value, fn=fn)


def _check_eps(fn, **values):
  for name, value in values.items():
    checks.check_non_negative(name, value, fn=fn)


class ScaleByRssState(NamedTuple):
  sum_of_squares: base.Updates


def scale_by_rss(
    initial_accumulator_value: jax.typing.ArrayLike = 0.1,
    eps: jax.typing.ArrayLike = 1e-7,
) -> base.GradientTransformationExtraArgs:
  r"""Divides by the root of the sum of all squared gradients so far (Adagrad).

  .. math::
    s_t = s_{t-1} + |g_t|^2, \qquad
    u_t = g_t / \sqrt{s_t + \epsilon} \; (0 \text{ where } s_t = 0)

  Args:
    initial_accumulator_value: ``s_0``, ``>= 0``.
    eps: added inside the root, ``>= 0``.

  References:
    Duchi et al., Adaptive subgradient methods for online learning and
    stochastic optimization, 2011.
  """
  fn = 'scale_by_rss'
  _check_eps(fn, initial_accumulator_value=initial_accumulator_value, eps=eps)

  def init_fn(params):
    return ScaleByRssState(
        sum_of_squares=otu.tree_full_like(params, initial_accumulator_value)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    sum_of_squares = jax.tree.map(
        lambda g, s: otu.abs_sq(g) + s, updates, state.sum_of_squares
    )
    # All the factors, then all the products: optax's order, so XLA gets the
    # same program.
    inv_sqrt = jax.tree.map(
        lambda s: jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0), sum_of_squares)
    updates = otu.tree_mul(inv_sqrt, updates)
    return updates, ScaleByRssState(sum_of_squares=sum_of_squares)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByRmsState(NamedTuple):
  nu: base.Updates


class ScaleByRmsWithCountState(NamedTuple):
  count: jax.Array  # int32
  nu: base.Updates


def _inverse_root(eps, eps_in_sqrt):
  if eps_in_sqrt:
    return lambda v: jax.lax.rsqrt(v + eps)
  return lambda v: 1 / (jnp.sqrt(v) + eps)


def _check_rms_args(fn, decay, eps, initial_scale):
  checks.check_decay('decay', decay, fn=fn)
  _check_eps(fn, eps=eps, initial_scale=initial_scale)


def scale_by_rms(
    decay: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-8,
    initial_scale: jax.typing.ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Divides by the root of an EMA of squared gradients (RMSProp).

  .. math::
    \nu_t = \rho \nu_{t-1} + (1 - \rho) |g_t|^2, \qquad
    u_t = g_t / \sqrt{\hat\nu_t + \epsilon}
    \;\; (\text{or } g_t / (\sqrt{\hat\nu_t} + \epsilon))

  with ``hat nu_t = nu_t / (1 - rho^t)`` under ``bias_correction``, else
  ``nu_t``. With ``eps_in_sqrt=False, bias_correction=True`` this is Adam
  with ``b1 = 0``.

  Args:
    decay: ``rho`` in ``[0, 1)``.
    eps: the stabilizer, ``>= 0``.
    initial_scale: ``nu_0``, ``>= 0``.
    eps_in_sqrt: add ``eps`` inside the square root (else outside).
    bias_correction: divide ``nu_t`` by ``1 - rho^t``; the state then has a
      ``count``.

  References:
    Hinton, Lecture 6e of Neural networks for machine learning (Coursera),
    2012.
  """
  _check_rms_args('scale_by_rms', decay, eps, initial_scale)
  inverse_root = _inverse_root(eps, eps_in_sqrt)

  def init_fn(params):
    nu = otu.tree_full_like(params, initial_scale)
    if bias_correction:
      return ScaleByRmsWithCountState(count=jnp.zeros([], jnp.int32), nu=nu)
    return ScaleByRmsState(nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, decay, 2)
    if bias_correction:
      count = otu.safe_increment(state.count)
      nu_hat = otu.tree_bias_correction(nu, decay, count)
    else:
      nu_hat = nu
    scaling = jax.tree.map(inverse_root, nu_hat)  # then the products, as optax
    updates = jax.tree.map(lambda s, g: s * g, scaling, updates)
    if bias_correction:
      return updates, ScaleByRmsWithCountState(count=count, nu=nu)
    return updates, ScaleByRmsState(nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByRStdDevState(NamedTuple):
  mu: base.Updates
  nu: base.Updates


class ScaleByRStdDevWithCountState(NamedTuple):
  count: jax.Array  # int32
  mu: base.Updates
  nu: base.Updates


def scale_by_stddev(
    decay: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-8,
    initial_scale: jax.typing.ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Divides by a running standard deviation of the gradients (centered RMSProp).

  .. math::
    \mu_t = \rho \mu_{t-1} + (1 - \rho) g_t, \quad
    \nu_t = \rho \nu_{t-1} + (1 - \rho) |g_t|^2, \quad
    u_t = g_t / \sqrt{\hat\nu_t - |\hat\mu_t|^2 + \epsilon}

  (``eps`` outside the root with ``eps_in_sqrt=False``; hats are the
  bias-corrected moments under ``bias_correction``, else the moments).

  Args:
    decay: ``rho`` in ``[0, 1)``.
    eps: the stabilizer, ``>= 0``.
    initial_scale: ``nu_0``, ``>= 0``.
    eps_in_sqrt: add ``eps`` inside the square root (else outside).
    bias_correction: bias-correct both moments; the state then has a
      ``count``.

  References:
    Graves, Generating sequences with recurrent neural networks, 2013.
  """
  _check_rms_args('scale_by_stddev', decay, eps, initial_scale)
  inverse_root = _inverse_root(eps, eps_in_sqrt)

  def init_fn(params):
    mu = otu.tree_zeros_like(params)
    nu = otu.tree_full_like(params, initial_scale)
    if bias_correction:
      return ScaleByRStdDevWithCountState(
          count=jnp.zeros([], jnp.int32), mu=mu, nu=nu
      )
    return ScaleByRStdDevState(mu=mu, nu=nu)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, decay, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, decay, 2)
    if bias_correction:
      count = otu.safe_increment(state.count)
      mu_hat = otu.tree_bias_correction(mu, decay, count)
      nu_hat = otu.tree_bias_correction(nu, decay, count)
    else:
      mu_hat, nu_hat = mu, nu
    updates = jax.tree.map(
        lambda m, v, g: inverse_root(v - otu.abs_sq(m)) * g,
        mu_hat,
        nu_hat,
        updates,
    )
    if bias_correction:
      return updates, ScaleByRStdDevWithCountState(count=count, mu=mu, nu=nu)
    return updates, ScaleByRStdDevState(mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByAdaDeltaState(NamedTuple):
  e_g: base.Updates  # EMA of squared gradients
  e_x: base.Updates  # EMA of squared updates


def scale_by_adadelta(
    rho: jax.typing.ArrayLike = 0.9, eps: jax.typing.ArrayLike = 1e-6
) -> base.GradientTransformationExtraArgs:
  r"""Adadelta: scales by the ratio of RMS updates to RMS gradients.

  .. math::
    E[g^2]_t = \rho E[g^2]_{t-1} + (1 - \rho) g_t^2, \quad
    u_t = \frac{\sqrt{E[x^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}} g_t,
    \quad E[x^2]_t = \rho E[x^2]_{t-1} + (1 - \rho) u_t^2

  Args:
    rho: the EMA rate, in ``[0, 1)``.
    eps: the stabilizer, ``> 0`` (with ``eps = 0`` every update is zero).

  References:
    Zeiler, ADADELTA: an adaptive learning rate method, 2012.
  """
  checks.check_decay('rho', rho, fn='scale_by_adadelta')
  checks.check_positive('eps', eps, fn='scale_by_adadelta')

  def init_fn(params):
    return ScaleByAdaDeltaState(
        e_g=otu.tree_zeros_like(params), e_x=otu.tree_zeros_like(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    e_g = otu.tree_update_moment(updates, state.e_g, rho, 2)
    updates = jax.tree.map(
        lambda g, eg, ex: (jnp.sqrt(ex + eps) / jnp.sqrt(eg + eps)) * g,
        updates,
        e_g,
        state.e_x,
    )
    e_x = otu.tree_update_moment(updates, state.e_x, rho, 2)
    return updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByAdamState(NamedTuple):
  count: jax.Array  # int32
  mu: base.Updates
  nu: base.Updates


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adam: the bias-corrected first moment over the root of the second.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \\
    \hat m_t = m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t),
    \quad u_t = \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

  With ``nesterov`` (NAdam), ``hat m_t = b1 m_t / (1 - b1^(t+1)) + (1 - b1)
  g_t / (1 - b1^t)``.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: ``epsilon``, outside the root, ``>= 0``.
    eps_root: ``bar epsilon``, inside the root, ``>= 0`` (needed when
      differentiating through the update).
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.
    nesterov: use Dozat's Nesterov form.
    nu_dtype: dtype of ``v`` in the state (not in Optax); ``None`` keeps the
      params' dtype. ``jnp.bfloat16`` halves its memory; the step itself is
      computed in the gradients' precision.

  References:
    Kingma & Ba, Adam: a method for stochastic optimization, 2015;
    Dozat, Incorporating Nesterov momentum into Adam, 2016.
  """
  fn = 'scale_by_adam'
  _check_betas(fn, b1=b1, b2=b2)
  _check_eps(fn, eps=eps, eps_root=eps_root)
  mu_dtype = _canonical_dtype(mu_dtype)
  nu_dtype = _canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        nu=otu.tree_zeros_like(params, dtype=nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = otu.safe_increment(state.count)
    if nesterov:
      mu_hat = _nesterov_mu_hat(mu, updates, b1, count)
    else:
      mu_hat = otu.tree_bias_correction(mu, b1, count)
    nu_hat = otu.tree_bias_correction(nu, b2, count)
    updates = _adam_ratio(mu_hat, nu_hat, eps, eps_root)
    mu = otu.tree_cast(mu, mu_dtype)
    nu = otu.tree_cast_like(nu, state.nu)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByAmsgradState(NamedTuple):
  count: jax.Array  # int32
  mu: base.Updates
  nu: base.Updates
  nu_max: base.Updates


def scale_by_amsgrad(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""AMSGrad: Adam with the running maximum of the second moment.

  .. math::
    \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \qquad
    u_t = \hat m_t / (\sqrt{\hat v^{max}_t + \bar\epsilon} + \epsilon)

  with ``m, v, hat m, hat v`` as in :func:`scale_by_adam`; each bias
  correction can be switched off (the paper has none).

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.
    bias_correction_mu: bias-correct ``m``.
    bias_correction_nu: bias-correct ``v`` before the maximum.
    nu_dtype: dtype of ``v`` and its maximum in the state (not in Optax);
      ``None`` keeps the params' dtype.

  References:
    Reddi et al., On the convergence of Adam and beyond, 2018.
  """
  fn = 'scale_by_amsgrad'
  _check_betas(fn, b1=b1, b2=b2)
  _check_eps(fn, eps=eps, eps_root=eps_root)
  mu_dtype = _canonical_dtype(mu_dtype)
  nu_dtype = _canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleByAmsgradState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        nu=otu.tree_zeros_like(params, dtype=nu_dtype),
        nu_max=otu.tree_zeros_like(params, dtype=nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = otu.safe_increment(state.count)
    mu_hat = otu.tree_bias_correction(mu, b1, count) if bias_correction_mu else mu
    nu_hat = otu.tree_bias_correction(nu, b2, count) if bias_correction_nu else nu
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu_hat)
    updates = _adam_ratio(mu_hat, nu_max, eps, eps_root)
    mu = otu.tree_cast(mu, mu_dtype)
    nu, nu_max = otu.tree_cast((nu, nu_max), nu_dtype)
    return updates, ScaleByAmsgradState(
        count=count, mu=mu, nu=nu, nu_max=nu_max
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adamax(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
) -> base.GradientTransformationExtraArgs:
  r"""Adamax: Adam with an infinity-norm second moment.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    v_t = \max(|g_t| + \epsilon, \beta_2 v_{t-1}), \quad
    u_t = \frac{m_t}{(1 - \beta_1^t) v_t}

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1]`` (no bias correction divides by ``1 - b2``).
    eps: ``>= 0``.

  References:
    Kingma & Ba, Adam: a method for stochastic optimization, 2015 (section 7).
  """
  fn = 'scale_by_adamax'
  checks.check_decay('b1', b1, fn=fn)
  checks.check_range('b2', b2, 0.0, 1.0, fn=fn)
  _check_eps(fn, eps=eps)

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params),
        nu=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = otu.safe_increment(state.count)
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    nu = otu.tree_update_infinity_moment(updates, state.nu, b2, eps)
    mu_hat = otu.tree_bias_correction(mu, b1, count)
    updates = jax.tree.map(lambda m, v: m / v, mu_hat, nu)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByBeliefState(NamedTuple):
  count: jax.Array  # int32
  mu: base.Updates
  nu: base.Updates


def scale_by_belief(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""AdaBelief: Adam whose second moment tracks the prediction error.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    s_t = \beta_2 s_{t-1} + (1 - \beta_2) |g_t - m_t|^2 + \bar\epsilon, \\
    u_t = \hat m_t / (\sqrt{s_t / (1 - \beta_2^t)} + \epsilon)

  with ``hat m_t`` as in :func:`scale_by_adam` (``nesterov`` included).

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: added to ``s_t``, ``>= 0``.
    nesterov: use Nesterov's form of the first moment.

  References:
    Zhuang et al., AdaBelief optimizer: adapting stepsizes by the belief in
    observed gradients, 2020.
  """
  fn = 'scale_by_belief'
  _check_betas(fn, b1=b1, b2=b2)
  _check_eps(fn, eps=eps, eps_root=eps_root)

  def init_fn(params):
    return ScaleByBeliefState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params),
        nu=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    error = otu.tree_sub(updates, mu)
    nu = otu.tree_update_moment_per_elem_norm(error, state.nu, b2, 2)
    nu = jax.tree.map(lambda v: v + eps_root, nu)
    count = otu.safe_increment(state.count)
    if nesterov:
      mu_hat = _nesterov_mu_hat(mu, updates, b1, count)
    else:
      mu_hat = otu.tree_bias_correction(mu, b1, count)
    nu_hat = otu.tree_bias_correction(nu, b2, count)
    # eps_root is already inside nu: no "+ 0" in the root (XLA keeps it).
    updates = jax.tree.map(
        lambda m, v: None if m is None else m / (jnp.sqrt(v) + eps),
        mu_hat, nu_hat, is_leaf=_is_none)
    return updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_yogi(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-3,
    eps_root: jax.typing.ArrayLike = 0.0,
    initial_accumulator_value: jax.typing.ArrayLike = 1e-6,
) -> base.GradientTransformationExtraArgs:
  r"""Yogi: Adam with an additive, sign-controlled second-moment update.

  .. math::
    v_t = v_{t-1} - (1 - \beta_2)\, \mathrm{sign}(v_{t-1} - |g_t|^2)\, |g_t|^2,
    \quad u_t = \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

  with ``m`` and both bias corrections as in :func:`scale_by_adam`.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    initial_accumulator_value: ``m_0 = v_0``, ``>= 0``.

  References:
    Zaheer et al., Adaptive methods for nonconvex optimization, 2018.
  """
  fn = 'scale_by_yogi'
  _check_betas(fn, b1=b1, b2=b2)
  _check_eps(
      fn, eps=eps, eps_root=eps_root,
      initial_accumulator_value=initial_accumulator_value,
  )

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_full_like(params, initial_accumulator_value),
        nu=otu.tree_full_like(params, initial_accumulator_value),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    nu = jax.tree.map(
        lambda g, v: v - (1 - b2) * jnp.sign(v - otu.abs_sq(g)) * otu.abs_sq(g),
        updates,
        state.nu,
    )
    count = otu.safe_increment(state.count)
    mu_hat = otu.tree_bias_correction(mu, b1, count)
    nu_hat = otu.tree_bias_correction(nu, b2, count)
    updates = _adam_ratio(mu_hat, nu_hat, eps, eps_root)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_radam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    threshold: jax.typing.ArrayLike = 5.0,
    *,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Rectified Adam: Adam's step, rectified while its variance is intractable.

  .. math::
    \rho_\infty = \frac{2}{1 - \beta_2} - 1, \quad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
    r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                     {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}, \\
    u_t = r_t \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
    \text{ if } \rho_t \ge \text{threshold}, \text{ else } \hat m_t

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    threshold: the tractability threshold on ``rho_t``, ``>= 4``.
    nesterov: use Nesterov's form of the first moment.

  References:
    Liu et al., On the variance of the adaptive learning rate and beyond, 2020.
  """
  fn = 'scale_by_radam'
  _check_betas(fn, b1=b1, b2=b2)
  _check_eps(fn, eps=eps, eps_root=eps_root)
  # rho_t rises from 1 towards rho_inf; below 4 the rectifier r_t is the root
  # of a negative number on the way, so a smaller threshold gives NaN.
  checks.check_range('threshold', threshold, 4.0, None, fn=fn)
  ro_inf = 2.0 / (1.0 - b2) - 1.0

  def rectified(ro, mu_hat, nu_hat):
    r = jnp.sqrt(
        (ro - 4.0) * (ro - 2.0) * ro_inf / ((ro_inf - 4.0) * (ro_inf - 2.0) * ro)
    )
    return jax.tree.map(
        lambda m, v: r.astype(m.dtype) * m / (jnp.sqrt(v + eps_root) + eps),
        mu_hat,
        nu_hat,
    )

  def init_fn(params):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params),
        nu=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = otu.safe_increment(state.count)
    b2t = b2**count
    ro = ro_inf - 2 * count * b2t / (1 - b2t)
    if nesterov:
      mu_hat = _nesterov_mu_hat(mu, updates, b1, count)
    else:
      mu_hat = otu.tree_bias_correction(mu, b1, count)
    nu_hat = otu.tree_bias_correction(nu, b2, count)
    updates = jax.tree.map(
        lambda r, m: jnp.where(ro >= threshold, r, m),
        rectified(ro, mu_hat, nu_hat),
        mu_hat,
    )
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByAdanState(NamedTuple):
  m: base.Updates  # EMA of gradients
  v: base.Updates  # EMA of gradient differences
  n: base.Updates  # EMA of the squared look-ahead gradient
  g: base.Updates  # the previous gradient
  t: jax.Array  # int32 step count


def scale_by_adan(
    b1: jax.typing.ArrayLike = 0.98,
    b2: jax.typing.ArrayLike = 0.92,
    b3: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
) -> base.GradientTransformationExtraArgs:
  r"""Adan: adaptive Nesterov momentum from gradient differences.

  .. math::
    \Delta_t = g_t - g_{t-1} \;(0 \text{ at } t = 1), \quad
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) \Delta_t, \\
    n_t = \beta_3 n_{t-1} + (1 - \beta_3) |g_t + (1 - \beta_2) \Delta_t|^2,
    \quad u_t = \frac{\hat m_t + (1 - \beta_2) \hat v_t}
                     {\sqrt{\hat n_t + \bar\epsilon} + \epsilon}

  with every hat a bias correction by its own beta.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    b3: ``beta_3`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.

  References:
    Xie et al., Adan: adaptive Nesterov momentum algorithm for faster
    optimizing deep models, 2022 (algorithm 1).
  """
  fn = 'scale_by_adan'
  _check_betas(fn, b1=b1, b2=b2, b3=b3)
  _check_eps(fn, eps=eps, eps_root=eps_root)

  def init_fn(params):
    return ScaleByAdanState(
        m=otu.tree_zeros_like(params),
        v=otu.tree_zeros_like(params),
        n=otu.tree_zeros_like(params),
        g=otu.tree_zeros_like(params),
        t=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    g = updates
    diff = otu.tree_where(
        state.t == 0, otu.tree_zeros_like(g), otu.tree_sub(g, state.g)
    )
    m = otu.tree_update_moment(g, state.m, b1, 1)
    v = otu.tree_update_moment(diff, state.v, b2, 1)
    look_ahead = otu.tree_add_scale(g, 1 - b2, diff)
    n = otu.tree_update_moment_per_elem_norm(look_ahead, state.n, b3, 2)
    t = otu.safe_increment(state.t)
    m_hat = otu.tree_bias_correction(m, b1, t)
    v_hat = otu.tree_bias_correction(v, b2, t)
    n_hat = otu.tree_bias_correction(n, b3, t)
    direction = otu.tree_add_scale(m_hat, 1 - b2, v_hat)
    # All the denominators, then the quotients: optax's order, one program.
    denom = jax.tree.map(lambda nh: jnp.sqrt(nh + eps_root) + eps, n_hat)
    updates = otu.tree_div(direction, denom)
    return updates, ScaleByAdanState(m=m, v=v, n=n, g=g, t=t)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByLionState(NamedTuple):
  count: jax.Array  # int32
  mu: base.Updates


def _lion_sign(mode: str, smooth_beta):
  return {
      'hard': jnp.sign,
      'smooth': lambda x: jnp.tanh(smooth_beta * x),
      # Linear near zero, the sign beyond |x| = 1.
      'refined': lambda x: jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x)),
  }[mode]


def scale_by_lion(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    mode: str = 'hard',
    smooth_beta: float = 1.0,
) -> base.GradientTransformationExtraArgs:
  r"""Lion: the sign of an interpolation of momentum and gradient.

  .. math::
    u_t = \mathrm{sign}((1 - \beta_1) g_t + \beta_1 m_{t-1}), \qquad
    m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

  ``mode='smooth'`` replaces the sign by ``tanh(smooth_beta x)``;
  ``mode='refined'`` by ``x`` where ``|x| < 1`` and ``sign(x)`` elsewhere.

  Args:
    b1: ``beta_1`` in ``[0, 1]``, the weight of the momentum in the step.
    b2: ``beta_2`` in ``[0, 1]``, the momentum's EMA rate.
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.
    mode: ``'hard'``, ``'smooth'`` or ``'refined'``.
    smooth_beta: the tanh slope in ``'smooth'`` mode, ``> 0``.

  References:
    Chen et al., Symbolic discovery of optimization algorithms, 2023.
  """
  fn = 'scale_by_lion'
  # No division by 1 - beta here, so the closed interval is well defined.
  checks.check_range('b1', b1, 0.0, 1.0, fn=fn)
  checks.check_range('b2', b2, 0.0, 1.0, fn=fn)
  checks.check_choice('mode', mode, ('hard', 'smooth', 'refined'), fn=fn)
  checks.check_positive('smooth_beta', smooth_beta, fn=fn)
  mu_dtype = _canonical_dtype(mu_dtype)
  sign = _lion_sign(mode, smooth_beta)

  def init_fn(params):
    return ScaleByLionState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    new_updates = jax.tree.map(
        lambda g, m: sign((1.0 - b1) * g + b1 * m), updates, state.mu
    )
    mu = otu.tree_update_moment(updates, state.mu, b2, 1)
    mu = otu.tree_cast(mu, mu_dtype)
    count = otu.safe_increment(state.count)
    return new_updates, ScaleByLionState(count=count, mu=mu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sign() -> base.GradientTransformationExtraArgs:
  """The element-wise sign of the updates: ``u <- sign(u)``.

  References:
    Bernstein et al., signSGD: compressed optimisation for non-convex
    problems, 2018.
  """
  return base.stateless(lambda updates, _: jax.tree.map(jnp.sign, updates))


class ScaleByRpropState(NamedTuple):
  step_sizes: base.Updates
  prev_updates: base.Updates


def scale_by_rprop(
    learning_rate: jax.typing.ArrayLike,
    eta_minus: jax.typing.ArrayLike = 0.5,
    eta_plus: jax.typing.ArrayLike = 1.2,
    min_step_size: jax.typing.ArrayLike = 1e-6,
    max_step_size: jax.typing.ArrayLike = 50.0,
) -> base.GradientTransformationExtraArgs:
  r"""Rprop: per-coordinate step sizes adapted from the sign of ``g_t g_{t-1}``.

  .. math::
    s_t = \begin{cases}
      \mathrm{clip}(\eta^+ s_{t-1}) & g_t g_{t-1} > 0 \\
      \mathrm{clip}(\eta^- s_{t-1}) & g_t g_{t-1} < 0 \\
      s_{t-1} & \text{otherwise}
    \end{cases}, \qquad
    u_t = \begin{cases} 0 & g_t g_{t-1} < 0 \\ s_t\, \mathrm{sign}(g_t)
    & \text{otherwise} \end{cases}

  where ``clip`` keeps ``[min_step_size, max_step_size]`` and, after a sign
  change, the stored previous gradient is zero (so the next step moves).
  The output is the ascent step: :func:`rprop` negates it. As in Optax, the
  step applied at ``t`` is the stored step of ``t - 1``.

  Args:
    learning_rate: the initial step size ``s_0``, ``>= 0``.
    eta_minus: shrink factor, in ``(0, 1]``.
    eta_plus: growth factor, ``>= 1``.
    min_step_size: the smallest step, ``>= 0``.
    max_step_size: the largest step, ``>= min_step_size``.

  References:
    Riedmiller & Braun, A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm, 1993.
  """
  fn = 'scale_by_rprop'
  checks.check_learning_rate(learning_rate, fn)
  checks.check_range('eta_minus', eta_minus, 0.0, 1.0, low_inclusive=False, fn=fn)
  checks.check_range('eta_plus', eta_plus, 1.0, None, fn=fn)
  checks.check_non_negative('min_step_size', min_step_size, fn=fn)
  if checks.is_concrete_number(min_step_size):
    checks.check_range('max_step_size', max_step_size, min_step_size, None, fn=fn)

  def init_fn(params):
    return ScaleByRpropState(
        step_sizes=otu.tree_full_like(params, learning_rate),
        prev_updates=otu.tree_zeros_like(params),
    )

  def new_step_size(s, step_size):
    unchanged = s == 0  # first, as optax does: the same program for XLA
    grown = step_size * jnp.where(s > 0, eta_plus, eta_minus)
    clipped = jnp.clip(grown, min=min_step_size, max=max_step_size)
    return jnp.where(unchanged, step_size, clipped)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    sign = jax.tree.map(lambda g, p: g * p, updates, state.prev_updates)
    step_sizes = jax.tree.map(new_step_size, sign, state.step_sizes)
    prev_updates = jax.tree.map(
        lambda s, g, st: jnp.where(s < 0, jnp.zeros_like(g), st * jnp.sign(g)),
        sign,
        updates,
        step_sizes,
    )
    updates = jax.tree.map(
        lambda s, p: jnp.where(s < 0, jnp.zeros_like(p), p),
        sign,
        state.prev_updates,
    )
    return updates, ScaleByRpropState(step_sizes, prev_updates)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_polyak(
    f_min: jax.typing.ArrayLike = 0.0,
    max_learning_rate: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 0.0,
    variant: str = 'sps',
) -> base.GradientTransformationExtraArgs:
  r"""Scales by Polyak's step size; ``update`` needs the loss as ``value=``.

  .. math::
    u_t = \min\left(\frac{f(x_t) - f^\star}{\|g_t\|^2 + \epsilon},
                    \gamma_{max}\right) g_t

  (``0`` when ``||g||^2 + eps`` is below float epsilon). ``variant='sps+'``
  clips a negative gap ``f(x_t) - f*`` to ``0``.

  Args:
    f_min: ``f*``, a lower bound on the loss.
    max_learning_rate: ``gamma_max``, ``>= 0``.
    eps: added to the squared norm, ``>= 0``.
    variant: ``'sps'`` or ``'sps+'``.

  References:
    Loizou et al., Stochastic Polyak step-size for SGD: an adaptive learning
    rate for fast convergence, 2021.
  """
  fn = 'scale_by_polyak'
  checks.check_non_negative('max_learning_rate', max_learning_rate, fn=fn)
  _check_eps(fn, eps=eps)
  checks.check_numbers(fn, f_min=f_min)
  checks.check_choice('variant', variant, ('sps', 'sps+'), fn=fn)

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del params, extra_args
    if value is None:
      raise ValueError(
          f'{fn}: update needs the current loss: call update(..., value=loss).'
      )
    sq_norm = otu.tree_norm(updates, squared=True)
    gap = jnp.array(value - f_min).astype(sq_norm.dtype)
    if variant == 'sps+':
      gap = jnp.maximum(gap, 0)
    step = jnp.where(
        sq_norm + eps <= jnp.finfo(float).eps,
        jnp.array(0.0),
        jnp.minimum(gap / (sq_norm + eps), max_learning_rate),
    )
    # Cast per leaf: the step is a float32 scalar that would promote bf16.
    updates = jax.tree.map(lambda g: step.astype(g.dtype) * g, updates)
    return updates, state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class ScaleByOptimisticGradientState(NamedTuple):
  is_initial_step: jax.Array  # bool
  previous_gradient: base.Updates


def scale_by_optimistic_gradient(
    alpha: jax.typing.ArrayLike = 1.0, beta: jax.typing.ArrayLike = 1.0
) -> base.GradientTransformationExtraArgs:
  r"""Optimistic (extrapolated) gradient: ``u_t = (alpha + beta) g_t - beta g_{t-1}``.

  On the first step ``g_0 = g_1``.

  Args:
    alpha: the weight of the gradient.
    beta: the weight of the negative momentum.

  References:
    Mokhtari et al., A unified analysis of extra-gradient and optimistic
    gradient methods for saddle point problems, 2020.
  """
  checks.check_numbers('scale_by_optimistic_gradient', alpha=alpha, beta=beta)

  def init_fn(params):
    return ScaleByOptimisticGradientState(
        is_initial_step=jnp.array(True),
        previous_gradient=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args

    def extrapolate(g, prev):
      prev = jnp.where(state.is_initial_step, g, prev)
      return (alpha + beta) * g - beta * prev

    new_updates = jax.tree.map(extrapolate, updates, state.previous_gradient)
    return new_updates, ScaleByOptimisticGradientState(
        is_initial_step=jnp.array(False), previous_gradient=updates
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class EmaState(NamedTuple):
  count: jax.Array  # int32
  ema: base.Params


def ema(
    decay: jax.typing.ArrayLike,
    debias: bool = True,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Exponential moving average of the updates.

  .. math::
    e_t = \beta e_{t-1} + (1 - \beta) g_t, \qquad
    u_t = e_t / (1 - \beta^t) \; (\text{or } e_t \text{ without debias})

  Unlike :func:`trace`, the new update is weighted by ``1 - beta``.

  Args:
    decay: ``beta`` in ``[0, 1)``.
    debias: divide by ``1 - beta^t``.
    accumulator_dtype: dtype of ``e``; ``None`` keeps the params' dtype.

  References:
    Kingma & Ba, Adam: a method for stochastic optimization, 2015.
  """
  checks.check_decay('decay', decay, fn='ema')
  accumulator_dtype = _canonical_dtype(accumulator_dtype)

  def init_fn(params):
    return EmaState(
        count=jnp.zeros([], jnp.int32),
        ema=otu.tree_zeros_like(params, dtype=accumulator_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    new_ema = otu.tree_update_moment(updates, state.ema, decay, 1)
    count = otu.safe_increment(state.count)
    updates = otu.tree_bias_correction(new_ema, decay, count) if debias else new_ema
    return updates, EmaState(
        count=count, ema=otu.tree_cast(new_ema, accumulator_dtype)
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _subtract_mean(g):
  if g.ndim > 1:
    return g - g.mean(tuple(range(1, g.ndim)), keepdims=True)
  return g


def centralize() -> base.GradientTransformationExtraArgs:
  r"""Gradient centralization: removes the mean over all but the leading axis.

  ``u <- u - mean(u, axes=1..)`` for leaves of rank ``>= 2``; vectors and
  scalars pass unchanged.

  References:
    Yong et al., Gradient centralization: a new optimization technique for
    deep neural networks, 2020.
  """
  return base.stateless(lambda updates, _: jax.tree.map(_subtract_mean, updates))


def normalize_by_update_norm(
    scale_factor: jax.typing.ArrayLike = 1.0, eps: jax.typing.ArrayLike = 1e-6
) -> base.GradientTransformationExtraArgs:
  r"""Rescales the whole update to a fixed norm: ``u <- c u / (||u|| + eps)``.

  Args:
    scale_factor: ``c``, non-zero (negative gives a descent step).
    eps: ``>= 0``, guards against a zero update.

  References:
    Nesterov, Introductory lectures on convex optimization, 2004 (normalized
    gradient method).
  """
  fn = 'normalize_by_update_norm'
  if checks.is_concrete_number(scale_factor) and float(scale_factor) == 0.0:
    raise ValueError(
        f'{fn}: scale_factor={scale_factor!r} is not allowed; allowed: non-zero.'
    )
  _check_eps(fn, eps=eps)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    norm = (otu.tree_norm(updates) + eps) / scale_factor
    return jax.tree.map(lambda g: g / norm, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)
