"""Multilayer perceptrons: the deep MLP of the propagation studies and the
small MLP of MNIST-1D."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from research.models import activations as activations_lib
from research.models import initializers as initializers_lib
from research.models import layers

__all__ = ['MLP', 'mlp_config', 'mnist1d_mlp_config']


class MLP(nn.Module):
  r"""``depth`` hidden layers of ``width`` units, then a linear head.

  Hidden layer ``i`` (named ``hidden_i``):

  .. math::
    z = W h + b, \; [z = \mathrm{BN}(z)], \; a = \phi(z), \;
    a = \mathrm{dropout}(a), \; h \leftarrow [h +]\, a

  the residual sum (``residual=True``) around every hidden layer but the
  first, where ``h`` and ``a`` have the same shape. The head
  is ``head``. Each hidden output is sown into the ``'activations'``
  collection under its layer name.

  Attributes:
    depth, width, num_classes: sizes.
    activation, activation_alpha: see ``research.models.activations``.
    init_name, init_scale: see ``research.models.initializers`` (the
      config field is ``init``).
    dropout_rates: one drop rate per hidden layer.
    input_dropout_rate: drop rate of the inputs.
    alpha_dropout: alpha dropout (for SELU) instead of standard dropout.
    batch_norm, bn_momentum, bn_axis_name: BatchNorm after each hidden Dense.
    residual: identity skip connections around hidden layers.
    dtype, param_dtype: Flax's: the compute dtype (None: that of the inputs
      and params) and the params' dtype.

  References:
    Srivastava et al., Dropout, 2014 (input and hidden dropout); Ioffe &
    Szegedy, Batch normalization, 2015; He et al., Deep residual learning
    for image recognition, 2016.
  """
  depth: int = 3
  width: int = 256
  num_classes: int = 10
  activation: str = 'relu'
  activation_alpha: Optional[float] = None
  init_name: str = 'auto'
  init_scale: Optional[float] = None
  dropout_rates: Sequence[float] = ()
  input_dropout_rate: float = 0.0
  alpha_dropout: bool = False
  batch_norm: bool = False
  bn_momentum: float = 0.9
  bn_axis_name: Optional[str] = None
  dtype: Optional[Any] = None      # compute; None: the inputs' and params'
  param_dtype: Any = jnp.float32
  residual: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    act = activations_lib.get_activation(self.activation, self.activation_alpha)
    drop = layers.AlphaDropout if self.alpha_dropout else layers.Dropout
    rates = tuple(self.dropout_rates) or (0.0,) * self.depth
    h = x.reshape((x.shape[0], -1))
    h = drop(self.input_dropout_rate, name='input_dropout')(h, train, mc_dropout)
    for i in range(self.depth):
      name = f'hidden_{i}'
      z = nn.Dense(
          self.width,
          use_bias=not self.batch_norm,
          kernel_init=layers.kernel_init(self),
          **layers.dtype_kwargs(self),
          bias_init=initializers_lib.bias_init,
          name=name,
      )(h)
      if self.batch_norm:
        z = layers.batch_norm(self, train, name=f'bn_{i}')(z)
      a = act(z)
      layers.sow_activation(self, name, a)
      a = drop(rates[i], name=f'dropout_{i}')(a, train, mc_dropout)
      h = h + a if self.residual and i > 0 and h.shape == a.shape else a
    return nn.Dense(
        self.num_classes,
        kernel_init=layers.kernel_init(self),
        **layers.dtype_kwargs(self),
        bias_init=initializers_lib.bias_init,
        name='head',
    )(h)


def mlp_config() -> ml_collections.ConfigDict:
  """The deep MLP of the initialization and activation studies."""
  return ml_collections.ConfigDict(layers.common_config(
      'mlp', (784,),
      depth=3,
      width=256,
      dropout_rate=0.0,
      dropout_rates=(),
      input_dropout_rate=0.0,
      alpha_dropout=False,
      batch_norm=False,
      bn_momentum=0.9,
      bn_axis_name=None,
      residual=False,
  ))


def mnist1d_mlp_config() -> ml_collections.ConfigDict:
  """The MLP baseline of MNIST-1D: two hidden layers of 100 ReLU units.

  The reference code (``MLPBase``) adds a skip connection around the second
  hidden layer, ``h = h + relu(W2 h)``; ``residual=True`` reproduces it
  (with two hidden layers, that is the only skip). 15,210
  parameters for 40 inputs and 10 classes.

  References:
    Greydanus, Scaling down deep learning, 2020.
  """
  config = mlp_config()
  config.name = 'mnist1d_mlp'
  config.input_shape = (40,)
  config.depth = 2
  config.width = 100
  config.residual = True
  return config
