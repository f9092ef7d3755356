"""Hessian-vector products, the Hessian diagonal and the empirical Fisher diagonal.

The loss has the signature ``loss(params, inputs, targets) -> scalar``;
vectors are flat, in the order of ``jax.flatten_util.ravel_pytree(params)``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ['fisher_diag', 'hessian_diag', 'hvp']

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _warn(name: str) -> None:
  warnings.warn(
      f'{name} is deprecated in Optax 0.2.7 and removed in 0.2.9.',
      DeprecationWarning, stacklevel=3)


def _flat(tree: Any) -> jax.Array:
  return ravel_pytree(tree)[0]


def _hvp(loss, v, params, inputs, targets):
  _, unravel = ravel_pytree(params)
  grad_fn = jax.grad(lambda p: loss(p, inputs, targets))
  return jax.jvp(grad_fn, (params,), (unravel(v),))[1]


def hvp(
    loss: LossFn,
    v: jax.Array,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
) -> Any:
  r"""The Hessian-vector product ``H v``, by forward-over-reverse differentiation.

  .. math::
    H v = \frac{d}{d\epsilon} \nabla_\theta L(\theta + \epsilon v)
    \Big|_{\epsilon=0},

  at the cost of about two gradients, without forming ``H``.

  Args:
    loss: ``loss(params, inputs, targets) -> scalar``.
    v: a flat vector of the size of the raveled params.
    params: the point ``theta``.
    inputs: the inputs the loss is evaluated on.
    targets: the targets the loss is evaluated on.

  Returns:
    ``H v``, with the structure of ``params``.

  References:
    Pearlmutter, Fast Exact Multiplication by the Hessian, 1994.
  """
  _warn('hvp')
  return _hvp(loss, v, params, inputs, targets)


def hessian_diag(
    loss: LossFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
) -> jax.Array:
  r"""The diagonal of the Hessian, ``H_ii = e_i^T H e_i``, one HVP per coordinate.

  Exact but costs ``n`` Hessian-vector products (vmapped): for small models.

  Args:
    loss: ``loss(params, inputs, targets) -> scalar``.
    params: the point ``theta``.
    inputs: the inputs the loss is evaluated on.
    targets: the targets the loss is evaluated on.

  Returns:
    The flat ``[n]`` diagonal.

  References:
    Pearlmutter, Fast Exact Multiplication by the Hessian, 1994.
  """
  _warn('hessian_diag')
  basis = jnp.eye(_flat(params).size)
  return jax.vmap(
      lambda e: jnp.vdot(e, _flat(_hvp(loss, e, params, inputs, targets)))
  )(basis)


def fisher_diag(
    negative_log_likelihood: LossFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
) -> jax.Array:
  r"""The diagonal of the observed (empirical) Fisher information, ``g * g``.

  .. math::
    F_{ii} = (\partial_i \, \mathrm{NLL}(\theta; x, y))^2.

  Args:
    negative_log_likelihood: ``nll(params, inputs, targets) -> scalar``.
    params: the point ``theta``.
    inputs: the inputs the NLL is evaluated on.
    targets: the targets the NLL is evaluated on.

  Returns:
    The flat ``[n]`` diagonal.

  References:
    Amari, Natural Gradient Works Efficiently in Learning, 1998.
  """
  _warn('fisher_diag')
  return jnp.square(_flat(jax.grad(negative_log_likelihood)(params, inputs, targets)))
