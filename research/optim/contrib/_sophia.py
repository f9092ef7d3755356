"""Sophia: momentum divided by a clipped, lazily updated Hessian diagonal."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu
from research.optim.contrib import _state_dtype

__all__ = [
    'HutchinsonState',
    'SophiaState',
    'hutchinson_estimator_diag_hessian',
    'sophia',
]


class HutchinsonState(NamedTuple):
  key: jax.Array  # the PRNG key of the next probe


def hutchinson_estimator_diag_hessian(
    random_seed: Optional[jax.Array] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Hutchinson's estimate of the Hessian diagonal at the params.

  .. math::
    \widehat{\mathrm{diag}(H)} = u \odot (H u), \qquad
    u_i \in \{-1, +1\} \text{ uniformly}

  (unbiased: :math:`\mathbb{E}[u_i (Hu)_i] = H_{ii}`), with :math:`Hu` a
  forward-over-reverse Hessian-vector product of ``obj_fn``. A fresh probe
  :math:`u` is drawn each call; the incoming updates are ignored.

  Args:
    random_seed: the PRNG key (``None`` for ``jax.random.PRNGKey(0)``).

  Returns:
    A transformation whose ``update`` needs ``params`` and ``obj_fn=``, a
    function of the params alone returning the scalar loss.

  References:
    Hutchinson, A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines, 1989; Bekas, Kokiopoulou & Saad, An
    estimator for the diagonal of a matrix, 2007.
  """

  def init_fn(params):
    del params
    key = jax.random.PRNGKey(0) if random_seed is None else random_seed
    return HutchinsonState(key=key)

  def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
    del updates, extra_args
    checks.require_params(params, 'hutchinson_estimator_diag_hessian')
    if obj_fn is None:
      raise ValueError(
          'hutchinson_estimator_diag_hessian: update needs obj_fn=, a function '
          'params -> scalar loss.'
      )
    key, probe_key = jax.random.split(state.key)
    keys = otu.tree_split_key_like(probe_key, params)
    dtype = _state_dtype.lowest_dtype(params)
    probe = jax.tree.map(
        lambda p, k: jax.random.rademacher(k, p.shape, jnp.float32).astype(dtype),
        params, keys)
    hvp = jax.jvp(jax.grad(obj_fn), (params,), (probe,))[1]
    return jax.tree.map(jnp.multiply, hvp, probe), HutchinsonState(key=key)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class SophiaState(NamedTuple):
  count: jax.Array  # int32, updates so far
  mu: base.Updates  # the EMA of the gradients
  nu: base.Updates  # the EMA of the Hessian diagonal estimates
  hessian_fn_state: Any  # the state of hessian_diagonal_fn


def scale_by_sophia(
    b1: jax.typing.ArrayLike = 0.965,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    gamma: jax.typing.ArrayLike = 0.01,
    clip_threshold: Optional[jax.typing.ArrayLike] = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: base.GradientTransformation = (
        hutchinson_estimator_diag_hessian()),
    mu_dtype: Optional[Any] = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Sophia's preconditioner: :func:`sophia` without decay and learning rate.

  .. math::
    u_t = \mathrm{clip}\big(\hat m_t / \max(\gamma h, \epsilon), \pm c\big)

  Every extra keyword argument of ``update`` goes to
  ``hessian_diagonal_fn`` (Hutchinson's needs ``obj_fn``). The Hessian
  estimate :math:`h` is refreshed when the count before the update is a
  multiple of ``update_interval`` (the first update included), after the
  step has used the previous one.

  Args:
    b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn,
    mu_dtype, verbose, print_win_rate_every_n_steps: as :func:`sophia`.

  Returns:
    A transformation with state :class:`SophiaState`.

  References:
    Liu, Li, Hall, Liang & Ma, Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training, 2024.
  """
  fn = 'scale_by_sophia'
  checks.check_decay('b1', b1, fn)
  checks.check_decay('b2', b2, fn)
  checks.check_non_negative('eps', eps, fn)
  checks.check_non_negative('gamma', gamma, fn)
  checks.check_positive('clip_threshold', clip_threshold, fn)
  checks.check_range('update_interval', update_interval, 1, None, fn=fn)
  checks.check_non_negative('print_win_rate_every_n_steps',
                            print_win_rate_every_n_steps, fn)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)
  hessian_diagonal_fn = base.with_extra_args_support(hessian_diagonal_fn)
  # Optax's count % 0 is never 0: a period of 0 turns the printing off.
  print_win_rate = verbose and print_win_rate_every_n_steps != 0

  def init_fn(params):
    return SophiaState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        nu=otu.tree_zeros_like(params),
        hessian_fn_state=hessian_diagonal_fn.init(params),
    )

  def update_fn(updates, state, params=None, **hessian_fn_kwargs):
    checks.require_params(params, 'sophia')
    count = otu.safe_increment(state.count)
    mu = otu.tree_update_moment(updates, state.mu, b1, 1)
    mu_hat = otu.tree_bias_correction(mu, b1, count)
    steps = jax.tree.map(
        lambda m, h: m / jnp.maximum(gamma * h, eps), mu_hat, state.nu)
    if clip_threshold is not None:
      if print_win_rate:
        unclipped = otu.tree_sum(
            jax.tree.map(lambda u: jnp.abs(u) < clip_threshold, steps))
        win_rate = unclipped / otu.tree_size(steps)
        jax.lax.cond(
            count % print_win_rate_every_n_steps == 0,
            lambda: jax.debug.print('Sophia optimizer win rate: {}', win_rate),
            lambda: None,
        )
      steps = jax.tree.map(
          lambda u: jnp.clip(u, -clip_threshold, clip_threshold), steps)

    def refresh(hessian_state, nu):
      diag, hessian_state = hessian_diagonal_fn.update(
          updates, hessian_state, params, **hessian_fn_kwargs)
      return hessian_state, otu.tree_update_moment(diag, nu, b2, 1)

    hessian_state, nu = jax.lax.cond(
        state.count % update_interval == 0,
        refresh,
        lambda hessian_state, nu: (hessian_state, nu),
        state.hessian_fn_state,
        state.nu,
    )
    return steps, SophiaState(
        count=count, mu=otu.tree_cast(mu, mu_dtype), nu=nu,
        hessian_fn_state=hessian_state,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def sophia(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.965,
    b2: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    weight_decay_mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
    gamma: jax.typing.ArrayLike = 0.01,
    clip_threshold: Optional[jax.typing.ArrayLike] = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: base.GradientTransformation = (
        hutchinson_estimator_diag_hessian()),
    mu_dtype: Optional[Any] = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> base.GradientTransformationExtraArgs:
  r"""Sophia: a clipped, diagonal second-order method.

  With :math:`h_t` the estimate of the Hessian diagonal, refreshed every
  ``update_interval`` steps (:math:`k`) as
  :math:`h \leftarrow b_2 h + (1 - b_2) \widehat{\mathrm{diag}(H)}`:

  .. math::
    m_t &= b_1 m_{t-1} + (1 - b_1) g_t, \qquad
    \hat m_t = m_t / (1 - b_1^t) \\
    \theta_t &= \theta_{t-1} - \eta_t \Big(\mathrm{clip}\Big(
      \frac{\hat m_t}{\max(\gamma h, \epsilon)}, \pm c\Big)
      + \lambda \theta_{t-1}\Big)

  (elementwise; :math:`c` = ``clip_threshold``, no clipping for ``None``).
  The step uses the estimate from before the refresh, so the first step,
  with :math:`h = 0`, is :math:`\mathrm{clip}(\hat m / \epsilon)`: a sign
  step. The effective :math:`b_2` per step is about :math:`1 - (1 - b_2)/k`.
  The default estimator is Hutchinson's, which needs the loss as a function
  of the params: ``update(grads, state, params, obj_fn=lambda p:
  loss(p, batch))``; every extra keyword argument goes to the estimator.

  Args:
    learning_rate: :math:`\eta_t`, a scalar or a schedule.
    b1: :math:`b_1 \in [0, 1)`.
    b2: :math:`b_2 \in [0, 1)`.
    eps: :math:`\epsilon \ge 0`.
    weight_decay: :math:`\lambda \ge 0`.
    weight_decay_mask: where the decay applies (a tree of booleans or a
      function of the params).
    gamma: :math:`\gamma \ge 0`, the scale of the Hessian estimate.
    clip_threshold: :math:`c > 0`, or ``None``.
    update_interval: :math:`k \ge 1`.
    hessian_diagonal_fn: a transformation returning the Hessian diagonal
      estimate (average it over devices yourself under ``pmap``).
    mu_dtype: dtype of :math:`m`.
    verbose: print the fraction of unclipped coordinates (the "win rate",
      best between 0.1 and 0.5; raise ``gamma`` if lower) every
      ``print_win_rate_every_n_steps`` steps (0: never).
    print_win_rate_every_n_steps: that period, ``>= 0``.

  References:
    Liu, Li, Hall, Liang & Ma, Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training, 2024.
  """
  checks.check_learning_rate(learning_rate, 'sophia')
  checks.check_learning_rate(weight_decay, 'sophia', name='weight_decay')
  return base.chain(
      scale_by_sophia(
          b1=b1, b2=b2, eps=eps, gamma=gamma, clip_threshold=clip_threshold,
          update_interval=update_interval,
          hessian_diagonal_fn=hessian_diagonal_fn, mu_dtype=mu_dtype,
          verbose=verbose,
          print_win_rate_every_n_steps=print_win_rate_every_n_steps,
      ),
      adding.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      transform.scale_by_learning_rate(learning_rate),
  )
