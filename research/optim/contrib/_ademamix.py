"""AdEMAMix (Adam with a fast and a slow momentum) and its simplified form."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'ScaleByAdemamixState',
    'ScaleBySimplifiedAdEMAMixState',
    'ademamix',
    'scale_by_ademamix',
    'scale_by_simplified_ademamix',
    'simplified_ademamix',
]

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


def _at(value, count):
  """A hyperparameter that may be a schedule, at ``count``."""
  return value(count) if callable(value) else value


def _check_adam_like(fn, b1, b2, eps, eps_root, alpha, **more_betas):
  for name, beta in dict(b1=b1, b2=b2, **more_betas).items():
    if not callable(beta):
      checks.check_decay(name, beta, fn=fn)
  if not callable(alpha):
    checks.check_non_negative('alpha', alpha, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_non_negative('eps_root', eps_root, fn=fn)


def _decay_and_lr(fn, learning_rate, weight_decay, mask):
  checks.check_learning_rate(learning_rate, fn)
  checks.check_non_negative('weight_decay', weight_decay, fn=fn)
  return (adding.add_decayed_weights(weight_decay, mask),
          transform.scale_by_learning_rate(learning_rate))


class ScaleByAdemamixState(NamedTuple):
  count: jax.Array  # int32, steps of the fast EMA and second moment
  count_m2: jax.Array  # int32, steps of the slow EMA (what schedules see)
  m1: base.Updates  # fast EMA of the gradients
  m2: base.Updates  # slow EMA of the gradients
  nu: base.Updates  # EMA of the squared gradients


def scale_by_ademamix(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b3: base.ScalarOrSchedule = 0.9999,
    alpha: base.ScalarOrSchedule = 6.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adam's step with a slow, uncorrected EMA added to the numerator.

  .. math::
    m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1 - \beta_1) g_t, \quad
    m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1 - \beta_3) g_t, \quad
    \nu_t = \beta_2 \nu_{t-1} + (1 - \beta_2) |g_t|^2, \\
    u_t = \frac{m^{(1)}_t / (1 - \beta_1^t) + \alpha\, m^{(2)}_t}
               {\sqrt{\nu_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon}

  The slow EMA is not bias-corrected, so that it fills up slowly. ``b3``
  and ``alpha`` may be schedules of ``count_m2`` (the paper warms both up).

  Args:
    b1: ``beta_1`` in ``[0, 1)``, the fast EMA.
    b2: ``beta_2`` in ``[0, 1)``, the second moment.
    b3: ``beta_3`` in ``[0, 1)`` or a schedule, the slow EMA.
    alpha: the weight of the slow EMA, ``>= 0``, or a schedule.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    mu_dtype: dtype of the three accumulators; ``None`` keeps the params'
      dtype. They are cast back to it after each update.

  References:
    Pagliardini, Ablin & Grangier, The AdEMAMix optimizer: better, faster,
    older, 2024.
  """
  _check_adam_like('scale_by_ademamix', b1, b2, eps, eps_root, alpha, b3=b3)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    zeros = lambda: otu.tree_zeros_like(params, dtype=mu_dtype)  # noqa: E731
    return ScaleByAdemamixState(
        count=jnp.zeros([], jnp.int32),
        count_m2=jnp.zeros([], jnp.int32),
        m1=zeros(), m2=zeros(), nu=zeros(),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    beta3 = _at(b3, state.count_m2)
    mix = _at(alpha, state.count_m2)
    m1 = otu.tree_update_moment(updates, state.m1, b1, 1)
    m2 = otu.tree_update_moment(updates, state.m2, beta3, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = otu.safe_increment(state.count)
    count_m2 = otu.safe_increment(state.count_m2)
    m1_hat = otu.tree_bias_correction(m1, b1, count)
    nu_hat = otu.tree_bias_correction(nu, b2, count)
    updates = jax.tree.map(
        lambda fast, slow, v: (fast + mix * slow) / (jnp.sqrt(v + eps_root) + eps),
        m1_hat, m2, nu_hat)
    m1, m2, nu = (otu.tree_cast_like(t, s)
                  for t, s in ((m1, state.m1), (m2, state.m2), (nu, state.nu)))
    return updates, ScaleByAdemamixState(
        count=count, count_m2=count_m2,
        m1=m1, m2=m2, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def ademamix(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    b3: base.ScalarOrSchedule = 0.9999,
    alpha: base.ScalarOrSchedule = 5.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""AdEMAMix: :func:`scale_by_ademamix`, decoupled weight decay, learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \Big(
    \frac{\hat m^{(1)}_t + \alpha m^{(2)}_t}{\sqrt{\hat\nu_t + \bar\epsilon}
    + \epsilon} + \lambda \theta_{t-1}\Big)

  Note the default ``alpha`` is 5 here and 6 in :func:`scale_by_ademamix`,
  as in Optax. The slow EMA helps most over long runs; for short ones a
  smaller ``b3`` (e.g. 0.999) works better.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``, the fast EMA.
    b2: ``beta_2`` in ``[0, 1)``, the second moment.
    b3: ``beta_3`` in ``[0, 1)`` or a schedule, the slow EMA.
    alpha: the weight of the slow EMA, ``>= 0``, or a schedule.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    mu_dtype: dtype of the accumulators; ``None`` keeps the params' dtype.
    weight_decay: ``lambda >= 0``, multiplied by the learning rate.
    mask: where weight decay applies (a tree of booleans or a callable).

  References:
    Pagliardini, Ablin & Grangier, The AdEMAMix optimizer: better, faster,
    older, 2024.
  """
  _check_adam_like('ademamix', b1, b2, eps, eps_root, alpha, b3=b3)
  return base.chain(
      scale_by_ademamix(b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps,
                        eps_root=eps_root, mu_dtype=mu_dtype),
      *_decay_and_lr('ademamix', learning_rate, weight_decay, mask),
  )


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
  t: jax.Array  # int32, number of updates so far
  m: base.Updates  # undamped momentum: sum of b1^k g_{t-k}
  n: base.Updates  # EMA of the squared gradients


def scale_by_simplified_ademamix(
    b1: jax.typing.ArrayLike = 0.99,
    b2: jax.typing.ArrayLike = 0.95,
    alpha: base.ScalarOrSchedule = 0.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
) -> base.GradientTransformationExtraArgs:
  r"""One momentum buffer without the ``1 - b1`` damping, plus ``alpha g_t``.

  .. math::
    m_t = \beta_1 m_{t-1} + g_t, \quad
    n_t = \beta_2 n_{t-1} + (1 - \beta_2) g_t^2, \quad
    u_t = \frac{m_t + \alpha g_t}{\sqrt{n_t / (1 - \beta_2^t) + \bar\epsilon}
    + \epsilon}

  ``alpha`` may be a schedule of ``t``. With ``alpha = 0`` this is Adam up
  to a rescaling of the learning rate and ``b1``.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    alpha: the weight of the current gradient, ``>= 0``, or a schedule.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.

  References:
    Morwani et al., Connections between schedule-free optimizers, AdEMAMix,
    and accelerated SGD variants, 2025.
  """
  _check_adam_like('scale_by_simplified_ademamix', b1, b2, eps, eps_root, alpha)

  def init_fn(params):
    return ScaleBySimplifiedAdEMAMixState(
        t=jnp.zeros([], jnp.int32),
        m=otu.tree_zeros_like(params),
        n=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mix = _at(alpha, state.t)
    m = jax.tree.map(lambda g, m: g + b1 * m, updates, state.m)
    # b2 n + (1 - b2) g^2, evaluated as g^2 + b2 (n - g^2) like Optax's lerp,
    # stage by stage over the tree as Optax does (the same program).
    g2 = jax.tree.map(lambda g: g * g, updates)
    n = jax.tree.map(lambda a, d: a + b2 * d, g2,
                     jax.tree.map(jnp.subtract, state.n, g2))
    t = otu.safe_increment(state.t)
    n_hat = otu.tree_bias_correction(n, b2, t)
    numerator = jax.tree.map(lambda m, g: m + mix * g, m, updates)
    denominator = jax.tree.map(lambda v: jnp.sqrt(v + eps_root) + eps, n_hat)
    updates = jax.tree.map(jnp.divide, numerator, denominator)
    return updates, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def simplified_ademamix(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.99,
    b2: jax.typing.ArrayLike = 0.95,
    alpha: base.ScalarOrSchedule = 0.0,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""Simplified AdEMAMix: :func:`scale_by_simplified_ademamix`, weight decay,
  learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \Big(\frac{m_t + \alpha g_t}
    {\sqrt{\hat n_t + \bar\epsilon} + \epsilon} + \lambda \theta_{t-1}\Big)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    alpha: the weight of the current gradient, ``>= 0``, or a schedule.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    weight_decay: ``lambda >= 0``, multiplied by the learning rate.
    mask: where weight decay applies (a tree of booleans or a callable).

  References:
    Morwani et al., Connections between schedule-free optimizers, AdEMAMix,
    and accelerated SGD variants, 2025.
  """
  _check_adam_like('simplified_ademamix', b1, b2, eps, eps_root, alpha)
  return base.chain(
      scale_by_simplified_ademamix(b1=b1, b2=b2, alpha=alpha, eps=eps,
                                   eps_root=eps_root),
      *_decay_and_lr('simplified_ademamix', learning_rate, weight_decay, mask),
  )
