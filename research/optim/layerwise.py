"""Layer-wise step sizes: each param block (leaf) gets its own scale.

A block is one leaf of the params tree (a weight matrix, a bias vector). LARS,
LAMB and Fromage rescale each block's update by a ratio of norms; NovoGrad
keeps one second-moment scalar per block.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu
from research.optim import wrappers

__all__ = [
    'ScaleByNovogradState',
    'fromage',
    'lamb',
    'lars',
    'novograd',
    'scale_by_novograd',
    'scale_by_param_block_norm',
    'scale_by_param_block_rms',
    'scale_by_trust_ratio',
]

_is_none = lambda x: x is None  # noqa: E731


def _map_with_params(fn, updates, params):
  """``fn(u, p)`` per leaf; ``None`` (masked) update leaves stay ``None``."""
  return jax.tree.map(
      lambda u, p: None if u is None else fn(u, p),
      updates,
      params,
      is_leaf=_is_none,
  )


def scale_by_trust_ratio(
    min_norm: jax.typing.ArrayLike = 0.0,
    trust_coefficient: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 0.0,
) -> base.GradientTransformationExtraArgs:
  r"""Scales each block's update by the trust ratio ``||p|| / ||u||``.

  .. math::
    u \leftarrow u \cdot \frac{c \, \max(\|p\|, n_0)}{\max(\|u\|, n_0) + \epsilon}

  per leaf, with the ratio replaced by ``1`` when either (clipped) norm is
  zero, so that zero params or zero updates still move.

  Args:
    min_norm: ``n_0``, the floor of both norms, ``>= 0`` (``0``: no floor).
    trust_coefficient: ``c``, a multiplier of the ratio, ``> 0``.
    eps: ``epsilon``, added to the denominator, ``>= 0``.

  References:
    You et al., Large batch training of convolutional networks, 2017.
  """
  fn = 'scale_by_trust_ratio'
  checks.check_non_negative('min_norm', min_norm, fn=fn)
  checks.check_positive('trust_coefficient', trust_coefficient, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)

  def scale_block(u, p):
    p_norm = otu.safe_norm(p, min_norm)
    u_norm = otu.safe_norm(u, min_norm)
    ratio = trust_coefficient * p_norm / (u_norm + eps)
    degenerate = (p_norm == 0.0) | (u_norm == 0.0)
    return u * jnp.where(degenerate, jnp.array(1.0, p.dtype), ratio)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    return _map_with_params(scale_block, updates, params), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def _scale_by_block_statistic(statistic, min_scale, fn):
  checks.check_non_negative('min_scale', min_scale, fn=fn)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    scaled = _map_with_params(
        lambda u, p: u * statistic(p, min_scale), updates, params
    )
    return scaled, state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def scale_by_param_block_norm(
    min_scale: jax.typing.ArrayLike = 1e-3,
) -> base.GradientTransformationExtraArgs:
  r"""Scales each block's update by the norm of its params.

  .. math::
    u \leftarrow u \cdot \max(\|p\|_2, s_0)

  Args:
    min_scale: ``s_0``, the smallest scale, ``>= 0``.

  References:
    Shazeer & Stern, Adafactor: adaptive learning rates with sublinear memory
    cost, 2018 (relative step sizes).
  """
  return _scale_by_block_statistic(
      otu.safe_norm, min_scale, 'scale_by_param_block_norm'
  )


def scale_by_param_block_rms(
    min_scale: jax.typing.ArrayLike = 1e-3,
) -> base.GradientTransformationExtraArgs:
  r"""Scales each block's update by the root mean square of its params.

  .. math::
    u \leftarrow u \cdot \max(\sqrt{\mathrm{mean}(|p|^2)}, s_0)

  Args:
    min_scale: ``s_0``, the smallest scale, ``>= 0``.

  References:
    Shazeer & Stern, Adafactor: adaptive learning rates with sublinear memory
    cost, 2018 (relative step sizes).
  """
  return _scale_by_block_statistic(
      otu.safe_root_mean_squares, min_scale, 'scale_by_param_block_rms'
  )


class ScaleByNovogradState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  mu: base.Updates  # momentum of the normalized gradients
  nu: base.Updates  # one scalar per leaf: EMA of ||g||^2


def scale_by_novograd(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.25,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""NovoGrad: Adam-like moments with one second moment per block.

  .. math::
    v_t = \begin{cases} \|g_t\|^2 & t = 1 \\
      \beta_2 v_{t-1} + (1 - \beta_2) \|g_t\|^2 & t > 1 \end{cases}, \qquad
    d_t = \frac{g_t}{\sqrt{v_t + \epsilon_r} + \epsilon} + \lambda p_t,

  .. math::
    m_t = \begin{cases} d_t & t = 1 \\ \beta_1 m_{t-1} + d_t & t > 1
      \end{cases}, \qquad u_t = m_t,

  with ``v`` a scalar per leaf (block). The momentum has no ``1 - beta_1``
  factor, as in the paper.

  Args:
    b1: ``beta_1``, the momentum decay, in ``[0, 1)``.
    b2: ``beta_2``, the decay of the block second moment, in ``[0, 1)``.
    eps: ``epsilon``, added outside the square root, ``>= 0``.
    eps_root: ``epsilon_r``, added inside the square root, ``>= 0``.
    weight_decay: ``lambda``, the coupled weight decay, ``>= 0``.
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.

  References:
    Ginsburg et al., Stochastic gradient methods with layer-wise adaptive
    moments for training of deep networks, 2019.
  """
  fn = 'scale_by_novograd'
  checks.check_decay('b1', b1, fn=fn)
  checks.check_decay('b2', b2, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_non_negative('eps_root', eps_root, fn=fn)
  checks.check_non_negative('weight_decay', weight_decay, fn=fn)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    return ScaleByNovogradState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        nu=jax.tree.map(lambda p: jnp.zeros([], p.dtype), params),
    )

  def sq_norm(g):
    return jnp.linalg.norm(g) ** 2

  def normalize(updates, params, nu):
    return jax.tree.map(
        lambda g, p, v: g / (jnp.sqrt(v + eps_root) + eps) + weight_decay * p,
        updates, params, nu,
    )

  # The branches of the two lax.conds below (first the block second moment,
  # then the momentum, which reads the new one); defined once so that the
  # compiled branches are cached across calls without jit.
  def first_nu(updates, nu):
    return jax.tree.map(lambda g, v: sq_norm(g).astype(v.dtype), updates, nu)

  def later_nu(updates, nu):
    return otu.tree_update_moment(jax.tree.map(sq_norm, updates), nu, b2, 1)

  def first_mu(updates, params, mu, nu):
    return otu.tree_cast_like(normalize(updates, params, nu), mu)

  def later_mu(updates, params, mu, nu):
    return jax.tree.map(
        lambda m, d: (b1 * m + d).astype(m.dtype),
        mu, normalize(updates, params, nu),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, fn)
    count = otu.safe_increment(state.count)
    # The first step starts both moments from the current gradient, not from
    # an average with zero.
    nu = jax.lax.cond(count == 1, first_nu, later_nu, updates, state.nu)
    mu = jax.lax.cond(
        count == 1, first_mu, later_mu, updates, params, state.mu, nu
    )
    new_updates = otu.tree_cast_like(mu, updates)
    return new_updates, ScaleByNovogradState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def novograd(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.25,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: jax.typing.ArrayLike = 0.0,
) -> base.GradientTransformationExtraArgs:
  r"""The NovoGrad optimizer: :func:`scale_by_novograd`, then the step size.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t m_t

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    b1: the momentum decay, in ``[0, 1)``.
    b2: the decay of the per-block second moment, in ``[0, 1)``.
    eps: added outside the square root, ``>= 0``.
    eps_root: added inside the square root, ``>= 0``.
    weight_decay: the coupled weight decay, a scalar ``>= 0``.

  References:
    Ginsburg et al., Stochastic gradient methods with layer-wise adaptive
    moments for training of deep networks, 2019.
  """
  checks.check_learning_rate(learning_rate, 'novograd')
  return base.chain(
      scale_by_novograd(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay
      ),
      transform.scale_by_learning_rate(learning_rate),
  )


class _ScaledParamsState(NamedTuple):
  count: jax.Array  # int32, read by the rate schedule


def _add_scaled_params(rate) -> base.GradientTransformationExtraArgs:
  """``u <- u + rate_t p`` for a rate of any sign (Fromage's shrinkage).

  :func:`add_decayed_weights` only accepts a non-negative decay; Fromage adds
  ``(1 / sqrt(1 + eta^2) - 1) p``, a negative multiple of the params.
  """
  scheduled = callable(rate)

  def init_fn(params):
    del params
    if scheduled:
      return _ScaledParamsState(count=jnp.zeros([], jnp.int32))
    return base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'fromage')
    if scheduled:
      r = rate(state.count)
      state = _ScaledParamsState(count=otu.safe_increment(state.count))
    else:
      r = rate
    return _map_with_params(lambda u, p: u + r * p, updates, params), state

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def fromage(
    learning_rate: base.ScalarOrSchedule,
    min_norm: jax.typing.ArrayLike = 1e-6,
) -> base.GradientTransformationExtraArgs:
  r"""Fromage: Frobenius-matched steps, a trust ratio and a shrinkage.

  .. math::
    \theta_t = \frac{1}{\sqrt{1 + \eta_t^2}} \left(\theta_{t-1} - \eta_t
      \frac{\|\theta_{t-1}\|}{\|g_t\|} g_t \right)

  per block, written as the updates ``-c \eta r g + (c - 1) \theta`` with
  ``c = 1 / sqrt(1 + eta^2)`` and ``r`` the trust ratio.

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    min_norm: the floor of both norms in the trust ratio, ``>= 0``.

  References:
    Bernstein et al., On the distance between two neural networks and the
    stability of learning, 2020.
  """
  checks.check_learning_rate(learning_rate, 'fromage')
  checks.check_non_negative('min_norm', min_norm, fn='fromage')
  if callable(learning_rate):
    shrink = lambda count: 1 / (1 + learning_rate(count) ** 2) ** 0.5  # noqa: E731
    step = lambda count: shrink(count) * learning_rate(count)  # noqa: E731
    decay = lambda count: shrink(count) - 1  # noqa: E731
  else:
    shrink = 1 / (1 + learning_rate**2) ** 0.5
    step = learning_rate * shrink
    decay = shrink - 1
  return base.chain(
      scale_by_trust_ratio(min_norm),
      transform.scale_by_learning_rate(step),
      _add_scaled_params(decay),
  )


def lars(
    learning_rate: base.ScalarOrSchedule,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: jax.typing.ArrayLike = 0.001,
    eps: jax.typing.ArrayLike = 0.0,
    trust_ratio_mask: Any = True,
    momentum: jax.typing.ArrayLike = 0.9,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""LARS: SGD with momentum on weight-decayed, trust-ratio-scaled gradients.

  .. math::
    d_t = g_t + \lambda \theta_{t-1}, \quad
    s_t = c \frac{\|\theta_{t-1}\|}{\|d_t\| + \epsilon} d_t, \quad
    m_t = -\eta_t s_t + \mu m_{t-1}, \quad \theta_t = \theta_{t-1} + m_t

  per block (Nesterov: ``theta_t = theta_{t-1} - eta_t s_t + mu m_t``).

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    weight_decay: ``lambda``, a scalar or schedule, ``>= 0``.
    weight_decay_mask: which params decay: a tree of booleans (or a prefix of
      the params tree), a function ``params -> such a tree``, or ``True``.
    trust_coefficient: ``c``, ``> 0``.
    eps: ``epsilon`` in the ratio's denominator, ``>= 0``.
    trust_ratio_mask: which params get the trust ratio; as above.
    momentum: ``mu``, in ``[0, 1)``.
    nesterov: use Nesterov momentum.

  References:
    You et al., Large batch training of convolutional networks, 2017.
  """
  checks.check_learning_rate(learning_rate, 'lars')
  checks.check_decay('momentum', momentum, fn='lars')
  return base.chain(
      adding.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      wrappers.masked(
          scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
          trust_ratio_mask,
      ),
      transform.scale_by_learning_rate(learning_rate),
      transform.trace(decay=momentum, nesterov=nesterov),
  )


def lamb(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-6,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> base.GradientTransformationExtraArgs:
  r"""LAMB: Adam directions rescaled per block by the trust ratio.

  .. math::
    d_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_r} + \epsilon}
      + \lambda \theta_{t-1}, \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{\|\theta_{t-1}\|}{\|d_t\|} d_t

  per block, with ``hat m``, ``hat v`` Adam's bias-corrected moments.

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    b1: Adam's first-moment decay, in ``[0, 1)``.
    b2: Adam's second-moment decay, in ``[0, 1)``.
    eps: added outside the square root, ``>= 0``.
    eps_root: added inside the square root, ``>= 0``.
    weight_decay: ``lambda``, a scalar or schedule, ``>= 0``.
    mask: which params decay: a tree of booleans (or a prefix), a function
      ``params -> such a tree``, or ``None`` for all.

  References:
    You et al., Large batch optimization for deep learning: training BERT in
    76 minutes, 2020.
  """
  checks.check_learning_rate(learning_rate, 'lamb')
  return base.chain(
      transform.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
      adding.add_decayed_weights(weight_decay=weight_decay, mask=mask),
      scale_by_trust_ratio(),
      transform.scale_by_learning_rate(learning_rate),
  )
