"""Complex params optimized as pairs of real params.

JAX's gradient of a real loss with respect to a complex ``z = x + iy`` is
``conj(dL/dx + i dL/dy)`` (PyTorch's is without the conjugate): conjugate
the gradients before ``update`` to get the real-pair gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base

__all__ = [
    'SplitRealAndImaginaryState',
    'split_real_and_imaginary',
]


class SplitRealAndImaginaryArrays(NamedTuple):
  """The real and the imaginary part of a complex array, as a pytree node."""

  real: jax.Array
  imaginary: jax.Array


class SplitRealAndImaginaryState(NamedTuple):
  inner_state: base.OptState  # the inner transformation's state


def _split(x):
  if jnp.iscomplexobj(x):
    return SplitRealAndImaginaryArrays(jnp.real(x), jnp.imag(x))
  return x


def _merge(x):
  if isinstance(x, SplitRealAndImaginaryArrays):
    return x.real + x.imaginary * 1j
  return x


def split_real_and_imaginary(
    inner: base.GradientTransformation,
) -> base.GradientTransformationExtraArgs:
  r"""Runs ``inner`` on the real and imaginary parts of complex leaves.

  .. math::
    u = \mathrm{inner}(\Re u, \Im u)_\Re + i\, \mathrm{inner}(\Re u, \Im u)_\Im

  Each complex leaf of the updates and params becomes two real leaves before
  ``inner`` sees them, and the two results are joined into one complex leaf
  again, so e.g. Adam keeps separate second moments for the two parts
  (instead of one for :math:`|g|^2`). Real leaves pass through unchanged.
  Extra keyword arguments of ``update`` are not passed to ``inner`` (they
  would refer to complex params).

  Args:
    inner: the transformation to run on the real pairs.

  Returns:
    A transformation with state :class:`SplitRealAndImaginaryState`.

  References:
    Kreutz-Delgado, The Complex Gradient Operator and the CR-Calculus, 2009.
  """

  def init_fn(params):
    return SplitRealAndImaginaryState(inner.init(jax.tree.map(_split, params)))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    updates, inner_state = inner.update(
        jax.tree.map(_split, updates), state.inner_state,
        jax.tree.map(_split, params))
    updates = jax.tree.map(
        _merge, updates,
        is_leaf=lambda x: isinstance(x, SplitRealAndImaginaryArrays))
    return updates, SplitRealAndImaginaryState(inner_state)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
