"""Activation functions by name.

``get_activation(name, alpha)`` returns ``f(x)``; ``alpha`` is the negative
slope of ``leaky_relu`` (default 0.01) and the saturation value of ``elu``
(default 1.0), and is ignored by the others.

References:
  Maas et al., Rectifier nonlinearities improve neural network acoustic
  models, 2013 (leaky ReLU); Clevert et al., Fast and accurate deep network
  learning by exponential linear units (ELUs), 2016; Klambauer et al.,
  Self-normalizing neural networks, 2017 (SELU); Hendrycks & Gimpel, Gaussian
  error linear units (GELUs), 2016; Ramachandran et al., Searching for
  activation functions, 2017 (SiLU / swish).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

__all__ = ['ACTIVATIONS', 'DEFAULT_ALPHA', 'activation_names', 'get_activation']

Activation = Callable[[jax.Array], jax.Array]


def _identity(x):
  return x


def _gelu(x):
  # The exact form x * Phi(x) of the paper (and PyTorch's default), not
  # jax.nn.gelu's default tanh approximation.
  return jax.nn.gelu(x, approximate=False)


# name -> factory(alpha) -> activation.
ACTIVATIONS: dict[str, Callable[[Optional[float]], Activation]] = {
    'sigmoid': lambda alpha: jax.nn.sigmoid,
    'tanh': lambda alpha: jnp.tanh,
    'relu': lambda alpha: jax.nn.relu,
    'leaky_relu': lambda alpha: lambda x: jax.nn.leaky_relu(x, alpha),
    'elu': lambda alpha: lambda x: jax.nn.elu(x, alpha),
    'selu': lambda alpha: jax.nn.selu,
    'gelu': lambda alpha: _gelu,
    'silu': lambda alpha: jax.nn.silu,
    'swish': lambda alpha: jax.nn.silu,
    'softplus': lambda alpha: jax.nn.softplus,
    'identity': lambda alpha: _identity,
    'none': lambda alpha: _identity,
}

DEFAULT_ALPHA = {'leaky_relu': 0.01, 'elu': 1.0}


def activation_names() -> tuple[str, ...]:
  return tuple(ACTIVATIONS)


def get_activation(name: str, alpha: Optional[float] = None) -> Activation:
  """The activation called ``name``; ``alpha=None`` takes its default.

  Raises:
    ValueError: unknown ``name`` (the message lists the known names).
  """
  if name not in ACTIVATIONS:
    raise ValueError(
        f'activation={name!r} is not known; known: '
        f'{", ".join(sorted(ACTIVATIONS))}.'
    )
  if alpha is None:
    alpha = DEFAULT_ALPHA.get(name)
  return ACTIVATIONS[name](alpha)
