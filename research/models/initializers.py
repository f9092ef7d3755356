"""Weight initializers by name, shared by every model.

Each name maps to a factory ``scale -> initializer``; ``scale=None`` takes the
name's default. The variance of one weight, with ``n_in``/``n_out`` the fan-in
and fan-out (receptive field included for convolutions) and ``g`` the scale:

=================  ======================  ==================================
name               distribution            Var(w)
=================  ======================  ==================================
glorot_uniform     uniform                 g^2 * 2 / (n_in + n_out)
glorot_normal      truncated normal        g^2 * 2 / (n_in + n_out)
he_uniform         uniform                 g^2 * 2 / n_in
he_normal          truncated normal        g^2 * 2 / n_in
lecun_uniform      uniform                 g^2 / n_in
lecun_normal       truncated normal        g^2 / n_in
orthogonal         (semi-)orthogonal * g   g^2 / max(n_in, n_out)
normal             N(0, g^2), g=0.01       g^2
uniform            U(-g, g), g=0.01        g^2 / 3
zeros              0                       0
=================  ======================  ==================================

``auto`` picks by activation: Glorot uniform for sigmoid, tanh and identity,
He normal for ReLU and its relatives, LeCun normal for SELU.

References:
  Glorot & Bengio, Understanding the difficulty of training deep feedforward
  neural networks, 2010; He et al., Delving deep into rectifiers, 2015;
  LeCun et al., Efficient backprop, 1998; Saxe et al., Exact solutions to the
  nonlinear dynamics of learning in deep linear neural networks, 2014;
  Klambauer et al., Self-normalizing neural networks, 2017.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from research.models import activations as activations_lib

__all__ = [
    'AUTO_INIT',
    'INITIALIZERS',
    'bias_init',
    'get_initializer',
    'initializer_names',
    'resolve_init_name',
]

Initializer = Callable[..., jax.Array]


def _variance_scaling(variance: float, mode: str, distribution: str):
  def factory(scale: Optional[float]) -> Initializer:
    gain = 1.0 if scale is None else scale
    return nn.initializers.variance_scaling(
        variance * gain**2, mode, distribution
    )
  return factory


def _orthogonal(scale: Optional[float]) -> Initializer:
  return nn.initializers.orthogonal(1.0 if scale is None else scale)


def _normal(scale: Optional[float]) -> Initializer:
  return nn.initializers.normal(0.01 if scale is None else scale)


def _symmetric_uniform(scale: Optional[float]) -> Initializer:
  # flax's `uniform(scale)` draws from [0, scale): a biased baseline. Ours is
  # centred, as the naive baselines of the literature are.
  half_width = 0.01 if scale is None else scale

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -half_width, half_width)
  return init


def _zeros(scale: Optional[float]) -> Initializer:
  return nn.initializers.zeros


INITIALIZERS: dict[str, Callable[[Optional[float]], Initializer]] = {
    'glorot_uniform': _variance_scaling(1.0, 'fan_avg', 'uniform'),
    'glorot_normal': _variance_scaling(1.0, 'fan_avg', 'truncated_normal'),
    'he_uniform': _variance_scaling(2.0, 'fan_in', 'uniform'),
    'he_normal': _variance_scaling(2.0, 'fan_in', 'truncated_normal'),
    'lecun_uniform': _variance_scaling(1.0, 'fan_in', 'uniform'),
    'lecun_normal': _variance_scaling(1.0, 'fan_in', 'truncated_normal'),
    'orthogonal': _orthogonal,
    'normal': _normal,
    'uniform': _symmetric_uniform,
    'zeros': _zeros,
}

_GLOROT = ('sigmoid', 'tanh', 'identity', 'none')
_HE = ('relu', 'leaky_relu', 'elu', 'gelu', 'silu', 'swish', 'softplus')
AUTO_INIT: dict[str, str] = {
    **{a: 'glorot_uniform' for a in _GLOROT},
    **{a: 'he_normal' for a in _HE},
    'selu': 'lecun_normal',
}


def initializer_names() -> tuple[str, ...]:
  return ('auto',) + tuple(INITIALIZERS)


def resolve_init_name(name: str, activation: str = 'identity') -> str:
  """The registry name behind ``name`` (``auto`` becomes a concrete name)."""
  if name == 'auto':
    activations_lib.get_activation(activation)  # Unknown name: ValueError.
    return AUTO_INIT[activation]
  if name not in INITIALIZERS:
    raise ValueError(
        f'init={name!r} is not known; known: '
        f'{", ".join(initializer_names())}.'
    )
  return name


def get_initializer(
    name: str, scale: Optional[float] = None, activation: str = 'identity'
) -> Initializer:
  """The kernel initializer called ``name`` (see the table above).

  Args:
    name: a key of ``INITIALIZERS`` or ``'auto'``.
    scale: the gain, or the standard deviation for ``normal`` and the
      half-width for ``uniform``; ``None`` takes the default.
    activation: the activation that follows, used by ``'auto'``.

  Raises:
    ValueError: unknown ``name`` or ``activation`` (the message lists the
      known names).
  """
  return INITIALIZERS[resolve_init_name(name, activation)](scale)


bias_init = nn.initializers.zeros
