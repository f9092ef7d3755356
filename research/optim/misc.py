"""Small top-level names of Optax 0.2.8 that belong to no transformation family.

A diagonal Gaussian parametrized by its log-scale (what Optax's Monte Carlo
gradient estimators sample), a gradient-scaling identity, and state aliases.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import jax.scipy.stats.norm as jax_norm

from research.optim import base

__all__ = [
    'MultiNormalDiagFromLogScale',
    'ScaleByTrustRatioState',
    'ScaleState',
    'multi_normal',
    'scale_gradient',
]

# Optax names these states although their transformations keep no state.
ScaleByTrustRatioState = base.EmptyState
ScaleState = base.EmptyState


class MultiNormalDiagFromLogScale:
  r"""``N(loc, diag(exp(log_scale))^2)``, exposing its own parameters.

  ``sample(shape, key)`` has shape ``shape + param_shape``; ``log_prob(x)``
  sums the per-coordinate log-densities over the parameter axes.
  """

  def __init__(self, loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike):
    self._log_scale = jnp.asarray(log_scale)
    self._scale = jnp.exp(log_scale)
    self._mean = jnp.asarray(loc)
    self._param_shape = jax.lax.broadcast_shapes(
        self._mean.shape, self._scale.shape
    )

  def sample(self, shape: Sequence[int], key: jax.Array) -> jax.Array:
    noise = jax.random.normal(key, shape=tuple(shape) + self._param_shape)
    return noise * self._scale + self._mean

  def log_prob(self, x: jax.typing.ArrayLike) -> jax.Array:
    per_coordinate = jax_norm.logpdf(x, loc=self._mean, scale=self._scale)
    axes = [-(i + 1) for i in range(len(self._param_shape))]
    return jnp.sum(per_coordinate, axis=axes)

  @property
  def log_scale(self) -> jax.Array:
    return self._log_scale

  @property
  def params(self) -> Sequence[jax.Array]:
    return [self._mean, self._log_scale]


def multi_normal(
    loc: jax.typing.ArrayLike, log_scale: jax.typing.ArrayLike
) -> MultiNormalDiagFromLogScale:
  """A diagonal Gaussian with mean ``loc`` and standard deviation ``exp(log_scale)``."""
  return MultiNormalDiagFromLogScale(loc=loc, log_scale=log_scale)


@jax.custom_vjp
def _scaled_identity(inputs, scale):
  del scale
  return inputs


def _scaled_identity_fwd(inputs, scale):
  return inputs, scale


def _scaled_identity_bwd(scale, cotangent):
  return jax.tree.map(lambda g: g * scale, cotangent), None


_scaled_identity.defvjp(_scaled_identity_fwd, _scaled_identity_bwd)


def scale_gradient(inputs, scale):
  r"""The identity forward; the gradient is multiplied by ``scale`` backward.

  .. math::
    f(x) = x, \qquad \partial L / \partial x \leftarrow s\, \partial L / \partial f

  ``scale == 0`` is ``stop_gradient``; ``scale == 1`` returns ``inputs``.

  Args:
    inputs: a pytree of arrays.
    scale: ``s``.

  References:
    Ganin & Lempitsky, Unsupervised domain adaptation by backpropagation,
    2015 (the gradient reversal layer, ``s = -1``).
  """
  if scale == 1.0:
    return inputs
  if scale == 0.0:
    return jax.lax.stop_gradient(inputs)
  return _scaled_identity(inputs, scale)
