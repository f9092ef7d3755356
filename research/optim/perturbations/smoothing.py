r"""Monte-Carlo smoothing of a function by perturbing its input.

For noise ``z ~ mu`` and scale ``sigma``,
``f_sigma(x) = E_z f(x + sigma z)`` is smooth even if ``f`` is not (piecewise
constant, argmax, ...). Its derivatives are estimated from values of ``f``
only, by the score function: with ``y = x + sigma z``,
``grad f_sigma(x) = E[f(y) grad_x log p(y | x)]``.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp

from research.optim import checks
from research.optim import tree as otu

__all__ = ['Gumbel', 'Normal', 'make_perturbed_fun']


class Normal:
  """The standard normal noise, ``log p(z) = -z^2 / 2`` up to a constant."""

  def sample(self, key, sample_shape=(), dtype=float) -> jax.Array:
    return jax.random.normal(key, sample_shape, dtype)

  def log_prob(self, inputs: jax.Array) -> jax.Array:
    return -0.5 * inputs**2


class Gumbel:
  """The standard Gumbel noise, ``log p(z) = -z - exp(-z)``."""

  def sample(self, key, sample_shape=(), dtype=float) -> jax.Array:
    return jax.random.gumbel(key, sample_shape, dtype)

  def log_prob(self, inputs: jax.Array) -> jax.Array:
    return -inputs - jnp.exp(-inputs)


def _magic_box(x):
  """1 in value, with the derivatives of ``exp(x)``: ``d box = box * dx``."""
  return jnp.exp(x - jax.lax.stop_gradient(x))


def make_perturbed_fun(
    fun: Callable[[Any], Any],
    num_samples: int = 1000,
    sigma: jax.typing.ArrayLike = 0.1,
    noise=Gumbel(),  # noqa: B008 -- Optax's default; the class has no state.
    use_baseline=True,
) -> Callable[[jax.Array, Any], Any]:
  r"""A stochastic, differentiable estimate of ``f_sigma(x) = E f(x + sigma z)``.

  The returned ``g(key, x)`` averages, over ``num_samples`` draws of ``z``,

  .. math::
    \square(\log \mu(z)) \, f(y) + (1 - \square(\log \mu(z))) \, f(x),
    \qquad y = \mathrm{sg}(x + \sigma z), \; z = (y - x) / \sigma,

  where ``square`` is the DiCE magic box (1 in value, ``d box = box * d(.)``)
  and ``sg`` stops gradients; so values and derivatives of any order of ``g``
  are unbiased score-function estimates of those of ``f_sigma``, using only
  values of ``f``. ``f(x)`` (unperturbed, without gradient) is the control
  variate when ``use_baseline``.

  Args:
    fun: ``pytree -> pytree`` of arrays; need not be differentiable.
    num_samples: the number of perturbations averaged.
    sigma: the scale of the perturbation.
    noise: an object with ``sample(key, shape, dtype)`` and ``log_prob(z)``,
      e.g. :class:`Gumbel` (default) or :class:`Normal`.
    use_baseline: subtract the unperturbed value as a control variate.

  Returns:
    ``g(key, x)`` with the output structure of ``fun``.

  References:
    Berthet et al., Learning with Differentiable Perturbed Optimizers, 2020;
    Foerster et al., DiCE: The Infinitely Differentiable Monte Carlo
    Estimator, 2018.
  """
  fn = 'make_perturbed_fun'
  if (isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral)
      or num_samples < 1):
    raise ValueError(
        f'{fn}: num_samples={num_samples!r}; allowed: an int >= 1.')
  if checks.is_concrete_number(sigma) and float(sigma) == 0.0:
    raise ValueError(f'{fn}: sigma={sigma!r}; allowed: a nonzero scale.')

  def one_sample(key, x, baseline):
    keys = otu.tree_split_key_like(key, x)
    z = jax.tree.map(lambda leaf, k: noise.sample(k, leaf.shape, leaf.dtype),
                     x, keys)
    y = jax.lax.stop_gradient(jax.tree.map(lambda a, b: a + sigma * b, x, z))
    # z again, now as a function of x, which carries the score's gradient.
    z = jax.tree.map(lambda a, b: (b - a) / sigma, x, y)
    box = _magic_box(otu.tree_sum(jax.tree.map(noise.log_prob, z)))
    out = otu.tree_scale(box, fun(y))
    if use_baseline:
      out = jax.tree.map(lambda o, b: o + (1 - box) * b, out, baseline)
    return out

  def perturbed_fun(key, x):
    baseline = fun(jax.lax.stop_gradient(x)) if use_baseline else None
    samples = jax.vmap(one_sample, in_axes=(0, None, None))(
        jax.random.split(key, num_samples), x, baseline)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), samples)

  return perturbed_fun
