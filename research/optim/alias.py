"""Optimizers by name: each is ``chain(scale_by_<algo>, [decay], scale_by_learning_rate)``.

Names, signatures, defaults and update rules follow Optax 0.2.8.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union
import warnings

import jax

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform

__all__ = [
    'adabelief',
    'adadelta',
    'adagrad',
    'adam',
    'adamax',
    'adamaxw',
    'adamw',
    'adan',
    'amsgrad',
    'lion',
    'nadam',
    'nadamw',
    'noisy_sgd',
    'optimistic_adam',
    'optimistic_adam_v2',
    'optimistic_gradient_descent',
    'polyak_sgd',
    'radam',
    'rmsprop',
    'rprop',
    'sgd',
    'sign_sgd',
    'signum',
    'yogi',
]


def sgd(
    learning_rate: base.ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Stochastic gradient descent, with optional (Nesterov) momentum.

  .. math::
    m_t = g_t + \mu m_{t-1}, \qquad
    \theta_t = \theta_{t-1} - \eta_t m_t \;
    (\text{Nesterov: } - \eta_t (g_t + \mu m_t))

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    momentum: ``mu`` in ``[0, 1)``; ``None`` for plain SGD.
    nesterov: use Nesterov momentum.
    accumulator_dtype: dtype of the momentum buffer.

  References:
    Robbins & Monro, A stochastic approximation method, 1951;
    Sutskever et al., On the importance of initialization and momentum in deep
    learning, 2013.
  """
  checks.check_learning_rate(learning_rate, 'sgd')
  checks.check_decay('momentum', momentum, fn='sgd')
  if momentum is not None:
    opt = transform.trace(
        decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
    )
  else:
    opt = base.identity()
  return base.chain(opt, transform.scale_by_learning_rate(learning_rate))


MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


def _with_learning_rate(fn: str, learning_rate, *transforms):
  """``chain(*transforms, scale_by_learning_rate(learning_rate))``."""
  checks.check_learning_rate(learning_rate, fn)
  return base.chain(*transforms, transform.scale_by_learning_rate(learning_rate))


def adagrad(
    learning_rate: base.ScalarOrSchedule,
    initial_accumulator_value: jax.typing.ArrayLike = 0.1,
    eps: jax.typing.ArrayLike = 1e-7,
) -> base.GradientTransformationExtraArgs:
  r"""Adagrad: steps scaled by the root of the sum of all squared gradients.

  .. math::
    s_t = s_{t-1} + |g_t|^2, \qquad \theta_t = \theta_{t-1} - \eta_t g_t /
    \sqrt{s_t + \epsilon}

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    initial_accumulator_value: ``s_0``, ``>= 0``.
    eps: ``>= 0``.

  References:
    Duchi et al., Adaptive subgradient methods for online learning and
    stochastic optimization, 2011.
  """
  return _with_learning_rate(
      'adagrad',
      learning_rate,
      transform.scale_by_rss(
          initial_accumulator_value=initial_accumulator_value, eps=eps
      ),
  )


def rmsprop(
    learning_rate: base.ScalarOrSchedule,
    decay: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-8,
    initial_scale: jax.typing.ArrayLike = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Optional[jax.typing.ArrayLike] = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""RMSProp, optionally centered and with (Nesterov) momentum.

  .. math::
    \nu_t = \rho \nu_{t-1} + (1 - \rho) |g_t|^2, \quad
    d_t = \eta_t g_t / \sqrt{\hat\nu_t + \epsilon}, \quad
    m_t = d_t + \mu m_{t-1}, \quad \theta_t = \theta_{t-1} - m_t

  ``centered`` subtracts the squared running mean of the gradients inside the
  root; ``eps_in_sqrt=False`` puts ``eps`` outside it; ``bias_correction``
  divides the moments by ``1 - rho^t``. Momentum acts after the learning rate.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    decay: ``rho`` in ``[0, 1)``.
    eps: ``>= 0``.
    initial_scale: ``nu_0``, ``>= 0``.
    eps_in_sqrt: add ``eps`` inside the square root.
    centered: use the centered (variance) form.
    momentum: ``mu`` in ``[0, 1)``, or ``None`` for none.
    nesterov: Nesterov momentum.
    bias_correction: bias-correct the moments.

  References:
    Hinton, Lecture 6e of Neural networks for machine learning (Coursera),
    2012; Graves, Generating sequences with recurrent neural networks, 2013.
  """
  checks.check_learning_rate(learning_rate, 'rmsprop')
  checks.check_decay('momentum', momentum, fn='rmsprop')
  scale_by = transform.scale_by_stddev if centered else transform.scale_by_rms
  return base.chain(
      scale_by(
          decay=decay,
          eps=eps,
          initial_scale=initial_scale,
          eps_in_sqrt=eps_in_sqrt,
          bias_correction=bias_correction,
      ),
      transform.scale_by_learning_rate(learning_rate),
      (
          transform.trace(decay=momentum, nesterov=nesterov)
          if momentum is not None
          else base.identity()
      ),
  )


def adadelta(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    rho: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-6,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adadelta, with coupled weight decay (added to the gradient first).

  .. math::
    \tilde g_t = g_t + \lambda \theta_{t-1}, \quad
    d_t = \frac{\sqrt{E[x^2]_{t-1} + \epsilon}}{\sqrt{E[\tilde g^2]_t
    + \epsilon}} \tilde g_t, \quad \theta_t = \theta_{t-1} - \eta_t d_t

  Needs ``params`` in ``update``.

  Args:
    learning_rate: ``eta``; ``None`` for ``1`` (the paper's form).
    rho: the EMA rate, in ``[0, 1)``.
    eps: ``> 0``.
    weight_decay: ``lambda``, a scalar or a schedule.
    weight_decay_mask: where weight decay applies (see
      :func:`add_decayed_weights`).

  References:
    Zeiler, ADADELTA: an adaptive learning rate method, 2012.
  """
  return _with_learning_rate(
      'adadelta',
      learning_rate,
      adding.add_decayed_weights(weight_decay, mask=weight_decay_mask),
      transform.scale_by_adadelta(rho=rho, eps=eps),
  )


def adam(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adam.

  .. math::
    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \\
    \theta_t = \theta_{t-1} - \eta_t \frac{m_t / (1 - \beta_1^t)}
    {\sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon}

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    mu_dtype: dtype of the first moment.
    nesterov: NAdam's look-ahead first moment (see :func:`nadam`).
    nu_dtype: dtype of the second moment (not in Optax; ``None``: the
      params' dtype).

  References:
    Kingma & Ba, Adam: a method for stochastic optimization, 2015.
  """
  return _with_learning_rate(
      'adam',
      learning_rate,
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
          nesterov=nesterov, nu_dtype=nu_dtype,
      ),
  )


def nadam(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""NAdam: :func:`adam` with Nesterov's look-ahead first moment.

  .. math::
    \hat m_t = \frac{\beta_1 m_t}{1 - \beta_1^{t+1}}
    + \frac{(1 - \beta_1) g_t}{1 - \beta_1^t}

  Args: as :func:`adam`.

  References:
    Dozat, Incorporating Nesterov momentum into Adam, 2016.
  """
  return adam(
      learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
      mu_dtype=mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
  )


def adamw(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""AdamW: Adam with decoupled weight decay.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{\hat m_t}{\sqrt{\hat v_t
    + \bar\epsilon} + \epsilon} + \lambda \theta_{t-1}\right)

  The decay is multiplied by the learning rate, as in PyTorch. Needs
  ``params`` in ``update``.

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as
      :func:`adam`.
    weight_decay: ``lambda``, a scalar or a schedule.
    mask: where the decay applies: a tree of booleans or a callable
      ``params -> tree``.

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019.
  """
  return _with_learning_rate(
      'adamw',
      learning_rate,
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
          nesterov=nesterov, nu_dtype=nu_dtype,
      ),
      adding.add_decayed_weights(weight_decay, mask),
  )


def nadamw(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""NAdamW: :func:`adamw` with Nesterov's look-ahead first moment.

  Args: as :func:`adamw`.

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019;
    Dozat, Incorporating Nesterov momentum into Adam, 2016.
  """
  return adamw(
      learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
      mu_dtype=mu_dtype, weight_decay=weight_decay, mask=mask,
      nesterov=nesterov, nu_dtype=nu_dtype,
  )


def adamax(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
) -> base.GradientTransformationExtraArgs:
  r"""Adamax: Adam with the infinity norm.

  .. math::
    v_t = \max(|g_t| + \epsilon, \beta_2 v_{t-1}), \qquad
    \theta_t = \theta_{t-1} - \eta_t \frac{m_t}{(1 - \beta_1^t) v_t}

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1]``.
    eps: ``>= 0``.

  References:
    Kingma & Ba, Adam: a method for stochastic optimization, 2015.
  """
  return _with_learning_rate(
      'adamax', learning_rate, transform.scale_by_adamax(b1=b1, b2=b2, eps=eps)
  )


def adamaxw(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""AdamaxW: :func:`adamax` with decoupled weight decay.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{m_t}{(1 - \beta_1^t) v_t}
    + \lambda \theta_{t-1}\right)

  Args:
    learning_rate, b1, b2, eps: as :func:`adamax`.
    weight_decay: ``lambda``, a scalar or a schedule.
    mask: where the decay applies.

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019.
  """
  return _with_learning_rate(
      'adamaxw',
      learning_rate,
      transform.scale_by_adamax(b1=b1, b2=b2, eps=eps),
      adding.add_decayed_weights(weight_decay, mask),
  )


def amsgrad(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""AMSGrad: Adam with a non-decreasing second moment.

  .. math::
    \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \qquad
    \theta_t = \theta_{t-1} - \eta_t \hat m_t / (\sqrt{\hat v^{max}_t
    + \bar\epsilon} + \epsilon)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1, b2, eps, eps_root, mu_dtype, nu_dtype: as :func:`adam`.
    bias_correction_mu: bias-correct the first moment.
    bias_correction_nu: bias-correct the second moment before the maximum.

  References:
    Reddi et al., On the convergence of Adam and beyond, 2018.
  """
  return _with_learning_rate(
      'amsgrad',
      learning_rate,
      transform.scale_by_amsgrad(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
          bias_correction_mu=bias_correction_mu,
          bias_correction_nu=bias_correction_nu, nu_dtype=nu_dtype,
      ),
  )


def adabelief(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-16,
    eps_root: jax.typing.ArrayLike = 1e-16,
    *,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""AdaBelief: Adam with the variance of the prediction error.

  .. math::
    s_t = \beta_2 s_{t-1} + (1 - \beta_2) |g_t - m_t|^2 + \bar\epsilon,
    \qquad \theta_t = \theta_{t-1} - \eta_t \hat m_t / (\sqrt{\hat s_t}
    + \epsilon)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: added to ``s_t``, ``>= 0``.
    nesterov: Nesterov's form of the first moment.

  References:
    Zhuang et al., AdaBelief optimizer: adapting stepsizes by the belief in
    observed gradients, 2020.
  """
  return _with_learning_rate(
      'adabelief',
      learning_rate,
      transform.scale_by_belief(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov
      ),
  )


def adan(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.98,
    b2: jax.typing.ArrayLike = 0.92,
    b3: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adan: adaptive Nesterov momentum, with decoupled weight decay.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{\hat m_t + (1 - \beta_2)
    \hat v_t}{\sqrt{\hat n_t + \bar\epsilon} + \epsilon}
    + \lambda \theta_{t-1}\right)

  with ``m, v, n`` as in :func:`scale_by_adan`. Needs ``params`` in
  ``update``.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1, b2, b3: the three EMA rates, in ``[0, 1)``.
    eps: outside the root, ``>= 0``.
    eps_root: inside the root, ``>= 0``.
    weight_decay: ``lambda``, a scalar or a schedule.
    mask: where the decay applies.

  References:
    Xie et al., Adan: adaptive Nesterov momentum algorithm for faster
    optimizing deep models, 2022.
  """
  return _with_learning_rate(
      'adan',
      learning_rate,
      transform.scale_by_adan(b1=b1, b2=b2, b3=b3, eps=eps, eps_root=eps_root),
      adding.add_decayed_weights(weight_decay, mask),
  )


def lion(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.99,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-3,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
  r"""Lion: sign steps of an interpolated momentum, with decoupled decay.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \left(\mathrm{sign}((1 - \beta_1) g_t
    + \beta_1 m_{t-1}) + \lambda \theta_{t-1}\right), \quad
    m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

  Needs ``params`` in ``update``.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1]``.
    b2: ``beta_2`` in ``[0, 1]``.
    mu_dtype: dtype of the momentum.
    weight_decay: ``lambda``, a scalar or a schedule.
    mask: where the decay applies.

  References:
    Chen et al., Symbolic discovery of optimization algorithms, 2023.
  """
  return _with_learning_rate(
      'lion',
      learning_rate,
      transform.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
      adding.add_decayed_weights(weight_decay, mask),
  )


def radam(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    threshold: jax.typing.ArrayLike = 5.0,
    *,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""RAdam: Adam whose adaptive step is rectified early in training.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \begin{cases}
    r_t \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon) & \rho_t \ge
    \text{threshold} \\ \hat m_t & \text{otherwise} \end{cases}

  with ``rho_t, r_t`` as in :func:`scale_by_radam`.

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1, b2, eps, eps_root: as :func:`adam`.
    threshold: the tractability threshold on ``rho_t``.
    nesterov: Nesterov's form of the first moment.

  References:
    Liu et al., On the variance of the adaptive learning rate and beyond, 2020.
  """
  return _with_learning_rate(
      'radam',
      learning_rate,
      transform.scale_by_radam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, threshold=threshold,
          nesterov=nesterov,
      ),
  )


def yogi(
    learning_rate: base.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-3,
) -> base.GradientTransformationExtraArgs:
  r"""Yogi: Adam with an additive second-moment update.

  .. math::
    v_t = v_{t-1} - (1 - \beta_2) \mathrm{sign}(v_{t-1} - |g_t|^2) |g_t|^2,
    \qquad \theta_t = \theta_{t-1} - \eta_t \hat m_t / (\sqrt{\hat v_t}
    + \epsilon)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    b1: ``beta_1`` in ``[0, 1)``.
    b2: ``beta_2`` in ``[0, 1)``.
    eps: ``>= 0``.

  References:
    Zaheer et al., Adaptive methods for nonconvex optimization, 2018.
  """
  return _with_learning_rate(
      'yogi', learning_rate, transform.scale_by_yogi(b1=b1, b2=b2, eps=eps)
  )


def noisy_sgd(
    learning_rate: base.ScalarOrSchedule,
    eta: jax.typing.ArrayLike = 0.01,
    gamma: jax.typing.ArrayLike = 0.55,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformationExtraArgs:
  r"""SGD on gradients with annealed Gaussian noise.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t (g_t + \sigma_t \xi_t), \quad
    \sigma_t^2 = \text{eta} / t^{\gamma}, \quad \xi_t \sim \mathcal{N}(0, I)

  Args:
    learning_rate: a scalar or a schedule.
    eta: the base noise variance, ``>= 0``.
    gamma: the annealing exponent.
    key: a PRNG key or an int seed.
    seed: deprecated alias of ``key``.

  References:
    Neelakantan et al., Adding gradient noise improves learning for very deep
    networks, 2015.
  """
  return _with_learning_rate(
      'noisy_sgd', learning_rate, adding.add_noise(eta, gamma, key, seed=seed)
  )


def sign_sgd(
    learning_rate: base.ScalarOrSchedule,
) -> base.GradientTransformationExtraArgs:
  r"""signSGD: ``theta_t = theta_{t-1} - eta_t sign(g_t)``.

  References:
    Bernstein et al., signSGD: compressed optimisation for non-convex
    problems, 2018.
  """
  return _with_learning_rate('sign_sgd', learning_rate, transform.scale_by_sign())


def signum(
    learning_rate: base.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Signum: signSGD on a (non-debiased) EMA of the gradients.

  .. math::
    m_t = \beta m_{t-1} + (1 - \beta) g_t, \qquad
    \theta_t = \theta_{t-1} - \eta_t \mathrm{sign}(m_t)

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    beta: ``beta`` in ``[0, 1)``.
    accumulator_dtype: dtype of ``m``.

  References:
    Bernstein et al., signSGD: compressed optimisation for non-convex
    problems, 2018.
  """
  checks.check_decay('beta', beta, fn='signum')
  return _with_learning_rate(
      'signum',
      learning_rate,
      transform.ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
      transform.scale_by_sign(),
  )


def rprop(
    learning_rate: jax.typing.ArrayLike,
    eta_minus: jax.typing.ArrayLike = 0.5,
    eta_plus: jax.typing.ArrayLike = 1.2,
    min_step_size: jax.typing.ArrayLike = 1e-6,
    max_step_size: jax.typing.ArrayLike = 50.0,
) -> base.GradientTransformationExtraArgs:
  r"""Rprop: sign steps with per-coordinate sizes adapted by sign agreement.

  ``theta_t = theta_{t-1} - u_t`` with ``u_t`` from :func:`scale_by_rprop`.
  ``learning_rate`` is the initial step size and cannot be a schedule.

  Args:
    learning_rate: the initial step size, ``>= 0``.
    eta_minus: shrink factor, in ``(0, 1]``.
    eta_plus: growth factor, ``>= 1``.
    min_step_size: ``>= 0``.
    max_step_size: ``>= min_step_size``.

  References:
    Riedmiller & Braun, A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm, 1993.
  """
  if callable(learning_rate):
    raise ValueError(
        'rprop: learning_rate is the initial step size and cannot be a '
        f'schedule; got {learning_rate!r}.'
    )
  return base.chain(
      transform.scale_by_rprop(
          learning_rate=learning_rate,
          eta_minus=eta_minus,
          eta_plus=eta_plus,
          min_step_size=min_step_size,
          max_step_size=max_step_size,
      ),
      transform.scale(-1.0),
  )


def polyak_sgd(
    max_learning_rate: jax.typing.ArrayLike = 1.0,
    scaling: base.ScalarOrSchedule = 1.0,
    f_min: jax.typing.ArrayLike = 0.0,
    eps: jax.typing.ArrayLike = 0.0,
    variant: str = 'sps',
) -> base.GradientTransformationExtraArgs:
  r"""SGD with Polyak's step size; ``update`` needs the loss as ``value=``.

  .. math::
    \theta_t = \theta_{t-1} - s_t \min\left(\frac{f(\theta_{t-1}) - f^\star}
    {\|g_t\|^2 + \epsilon}, \gamma_{max}\right) g_t

  Args:
    max_learning_rate: ``gamma_max``, ``>= 0``.
    scaling: ``s_t``, a scalar or a schedule multiplying the step.
    f_min: ``f*``, a lower bound on the loss.
    eps: ``>= 0``.
    variant: ``'sps'``, or ``'sps+'`` to clip a negative gap at ``0``.

  References:
    Loizou et al., Stochastic Polyak step-size for SGD: an adaptive learning
    rate for fast convergence, 2021.
  """
  checks.check_learning_rate(scaling, 'polyak_sgd', name='scaling')
  return base.chain(
      sgd(learning_rate=scaling),
      transform.scale_by_polyak(
          max_learning_rate=max_learning_rate, f_min=f_min, eps=eps,
          variant=variant,
      ),
  )


def optimistic_gradient_descent(
    learning_rate: base.ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = 1.0,
    beta: jax.typing.ArrayLike = 1.0,
) -> base.GradientTransformationExtraArgs:
  r"""Optimistic gradient descent, for min-max games.

  .. math::
    \theta_t = \theta_{t-1} - \eta_t ((\alpha + \beta) g_t - \beta g_{t-1})

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    alpha: the weight of the gradient.
    beta: the weight of the negative momentum.

  References:
    Mokhtari et al., A unified analysis of extra-gradient and optimistic
    gradient methods for saddle point problems, 2020.
  """
  return _with_learning_rate(
      'optimistic_gradient_descent',
      learning_rate,
      transform.scale_by_optimistic_gradient(alpha=alpha, beta=beta),
  )


def optimistic_adam_v2(
    learning_rate: base.ScalarOrSchedule,
    *,
    alpha: jax.typing.ArrayLike = 1.0,
    beta: jax.typing.ArrayLike = 1.0,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Optimistic Adam: the optimistic step on Adam's direction.

  .. math::
    d_t = \text{Adam}(g_t), \qquad
    \theta_t = \theta_{t-1} - \eta_t ((\alpha + \beta) d_t - \beta d_{t-1})

  Args:
    learning_rate: ``eta``, a scalar or a schedule.
    alpha, beta: as :func:`optimistic_gradient_descent`.
    b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`adam`
      (Nesterov is on by default here).

  References:
    Daskalakis et al., Training GANs with optimism, 2018.
  """
  return _with_learning_rate(
      'optimistic_adam_v2',
      learning_rate,
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
          nesterov=nesterov, nu_dtype=nu_dtype,
      ),
      transform.scale_by_optimistic_gradient(alpha=alpha, beta=beta),
  )


def optimistic_adam(
    learning_rate: jax.typing.ArrayLike,
    optimism: Optional[jax.typing.ArrayLike] = None,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-08,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Optimistic Adam, first form (deprecated in Optax for :func:`optimistic_adam_v2`).

  .. math::
    d_t = \text{Adam}(g_t), \qquad
    \theta_t = \theta_{t-1} - ((\eta + o) d_t - o\, d_{t-1})

  The learning rate ``eta`` is the optimistic ``alpha`` and must be a number
  (no schedule); ``optimism`` ``o`` defaults to ``eta``.

  Args:
    learning_rate: ``eta``.
    optimism: ``o``; ``None`` uses ``eta``.
    b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`adam`.

  References:
    Daskalakis et al., Training GANs with optimism, 2018.
  """
  warnings.warn(
      '`optimistic_adam` is deprecated, please use `optimistic_adam_v2` '
      'instead.', category=DeprecationWarning,
  )
  if callable(learning_rate):
    raise ValueError(
        'optimistic_adam: learning_rate must be a number, not a schedule; '
        'optimistic_adam_v2 takes schedules.'
    )
  checks.check_learning_rate(learning_rate, 'optimistic_adam')
  checks.check_numbers('optimistic_adam', optimism=optimism)
  optimism = learning_rate if optimism is None else optimism
  return base.chain(
      transform.scale_by_adam(
          b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
          nesterov=nesterov, nu_dtype=nu_dtype,
      ),
      transform.scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
      transform.scale_by_learning_rate(1.0),  # Only flips the sign.
  )
