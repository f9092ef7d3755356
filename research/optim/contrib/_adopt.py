"""ADOPT: Adam with the gradient normalised by the previous second moment."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = ['adopt', 'scale_by_adopt']


def _fourth_root(count):
  return count**0.25


def _check_args(fn, b1, b2, eps):
  checks.check_decay('b1', b1, fn=fn)
  checks.check_decay('b2', b2, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)


def scale_by_adopt(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.9999,
    eps: jax.typing.ArrayLike = 1e-6,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
) -> base.GradientTransformationExtraArgs:
  r"""Normalises each gradient by the second moment *before* it, then averages.

  For ``t >= 2`` (with ``t - 1`` updates done before this one):

  .. math::
    \nu_t = \beta_2 \nu_{t-1} + (1 - \beta_2) g_t^2, \quad
    \tilde g_t = \mathrm{clip}\big(g_t / \max(\sqrt{\nu_{t-1}}, \epsilon),
    \pm c(t - 1)\big), \\
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) \tilde g_t, \quad u_t = m_t
    \;\; (\text{Nesterov: } \beta_1 m_t + (1 - \beta_1) \tilde g_t)

  The first step only records ``nu_1 = g_1^2`` and returns zeros
  (``m_1 = m_0 = 0``). ``c`` is ``clip_value_fn`` of the number of previous
  updates (``t^{1/4}`` by default); without ``use_clipping`` there is no clip.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: the floor of the root, ``>= 0``.
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.
    nesterov: use the Nesterov form of the momentum.
    use_clipping: clip the normalised gradient (recommended early in training).
    clip_value_fn: ``count -> c``, the clipping bound.

  References:
    Taniguchi et al., ADOPT: modified Adam can converge with any beta2 with
    the optimal rate, 2024.
  """
  _check_args('scale_by_adopt', b1, b2, eps)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    return transform.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        nu=otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    # On the first step: nu_1 = g_1^2 and m stays at zero. (Two comparisons,
    # in Optax's order, so that the program is Optax's.)
    beta2 = jnp.where(state.count > 0, b2, 0)
    beta1 = jnp.where(state.count > 0, b1, 1)
    nu = otu.tree_update_moment_per_elem_norm(updates, state.nu, beta2, 2)

    def normalise(g, v):
      return g / jnp.maximum(jnp.sqrt(v), eps)

    if use_clipping:
      bound = clip_value_fn(state.count)
      normalised = jax.tree.map(
          lambda g, v: jnp.clip(normalise(g, v), -bound, bound),
          updates, state.nu)
    else:
      normalised = jax.tree.map(normalise, updates, state.nu)
    mu = otu.tree_update_moment(normalised, state.mu, beta1, 1)
    count = otu.safe_increment(state.count)
    if nesterov:
      updates = otu.tree_update_moment(normalised, mu, beta1, 1)
    else:
      updates = mu
    mu = otu.tree_cast(mu, mu_dtype)
    nu = otu.tree_cast_like(nu, state.nu)
    return updates, transform.ScaleByAdamState(
        count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def adopt(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.9999,
    eps: jax.typing.ArrayLike = 1e-6,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
) -> base.GradientTransformationExtraArgs:
  r"""ADOPT: :func:`scale_by_adopt` then the learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t m_t, \qquad
    m_t = \beta_1 m_{t-1} + (1 - \beta_1)\,
    \mathrm{clip}\big(g_t / \max(\sqrt{\nu_{t-1}}, \epsilon)\big)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: the floor of the root, ``>= 0``.
    mu_dtype: dtype of ``m``; ``None`` keeps the params' dtype.
    nesterov: use the Nesterov form of the momentum.
    use_clipping: clip the normalised gradient.
    clip_value_fn: ``count -> c``, the clipping bound (``count^{1/4}``).

  References:
    Taniguchi et al., ADOPT: modified Adam can converge with any beta2 with
    the optimal rate, 2024.
  """
  checks.check_learning_rate(learning_rate, 'adopt')
  _check_args('adopt', b1, b2, eps)
  return base.chain(
      scale_by_adopt(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype,
                     nesterov=nesterov, use_clipping=use_clipping,
                     clip_value_fn=clip_value_fn),
      transform.scale_by_learning_rate(learning_rate),
  )
