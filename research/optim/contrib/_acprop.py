"""ACProp: AdaBelief's centred second moment, used one step late."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = ['acprop', 'scale_by_acprop']


def _check_args(fn, b1, b2, eps, eps_root):
  checks.check_decay('b1', b1, fn=fn)
  checks.check_decay('b2', b2, fn=fn)
  checks.check_non_negative('eps', eps, fn=fn)
  checks.check_non_negative('eps_root', eps_root, fn=fn)


def scale_by_acprop(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
) -> base.GradientTransformationExtraArgs:
  r"""Divides the gradient by the root of the *previous* centred second moment.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    s_t = \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_{t-1})^2 + \bar\epsilon,
    \\
    u_t = g_t / \big(\sqrt{s_{t-1} / (1 - \beta_2^{t-1})} + \epsilon\big)

  The denominator only knows gradients up to step ``t - 1`` (asynchronous
  update); on the first step it is ``1 + eps``. The state is AdaBelief's.

  Args:
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: added to ``s_t``, ``>= 0``.

  References:
    Zhuang et al., Momentum centering and asynchronous update for adaptive
    gradient methods, 2021.
  """
  _check_args('scale_by_acprop', b1, b2, eps, eps_root)
  # AdaBelief's state, zero-initialised the same way.
  init_fn = transform.scale_by_belief().init

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    error = otu.tree_sub(updates, state.mu)
    nu = otu.tree_update_moment_per_elem_norm(error, state.nu, b2, 2)
    nu = jax.tree.map(lambda v: v + eps_root, nu)
    count = otu.safe_increment(state.count)
    first = state.count == 0
    # At t = 1 there is no previous moment: correct with t = 1 (never by
    # 1 - b2^0 = 0) and replace the result by 1.
    previous = otu.tree_bias_correction(
        state.nu, b2, jnp.where(first, count, state.count))
    previous = jax.tree.map(lambda v: jnp.where(first, 1, v), previous)
    updates = jax.tree.map(
        lambda g, v: g / (jnp.sqrt(v) + eps), updates, previous)
    return updates, transform.ScaleByBeliefState(count=count, mu=mu, nu=nu)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def acprop(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformationExtraArgs:
  r"""ACProp: :func:`scale_by_acprop`, decoupled weight decay, learning rate.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \big(g_t / (\sqrt{\hat s_{t-1}} +
    \epsilon) + \lambda \theta_{t-1}\big)

  with ``hat s_{t-1}`` the bias-corrected centred second moment of the
  previous step (see :func:`scale_by_acprop`).

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: added to the second moment, ``>= 0``.
    weight_decay: ``lambda >= 0``, multiplied by the learning rate.
    mask: where weight decay applies: a tree of booleans (or a prefix of the
      params' structure) or a callable returning one.

  References:
    Zhuang et al., Momentum centering and asynchronous update for adaptive
    gradient methods, 2021.
  """
  checks.check_learning_rate(learning_rate, 'acprop')
  checks.check_non_negative('weight_decay', weight_decay, fn='acprop')
  _check_args('acprop', b1, b2, eps, eps_root)
  return base.chain(
      scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
      adding.add_decayed_weights(weight_decay, mask),
      transform.scale_by_learning_rate(learning_rate),
  )
