"""Small convolutional networks: the MNIST-1D reference CNN and a 2-D CNN
for MNIST and Fashion-MNIST."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from research.models import activations as activations_lib
from research.models import initializers as initializers_lib
from research.models import layers

__all__ = ['CNN', 'CNN1D', 'cnn_config', 'mnist1d_cnn_config']


def _norm_act(module, h, train, act, layer, bn_name):
  """[BatchNorm ``bn_name`` if ``module.batch_norm``], then ``act``, recorded
  as the activation of ``layer``."""
  if module.batch_norm:
    h = layers.batch_norm(module, train, name=bn_name)(h)
  h = act(h)
  layers.sow_activation(module, layer, h)
  return h


def _head(module, h):
  """The linear head (``head``): ``module.num_classes`` logits."""
  return nn.Dense(
      module.num_classes, kernel_init=layers.kernel_init(module),
      bias_init=initializers_lib.bias_init, name='head',
      **layers.dtype_kwargs(module),
  )(h)


class CNN1D(nn.Module):
  """The MNIST-1D reference CNN (``ConvBase`` of the paper's code).

  Three 1-D convolutions of ``channels`` channels (kernels 5, 3, 3, stride 2,
  zero padding 1, named ``conv_i``), each followed by [BatchNorm ``bn_i``,
  without the convolution's bias, then] the activation, then a
  linear head on the flattened features (``head``). For length-40 inputs the
  feature lengths are 19, 10, 5 and the model has 5,210 parameters. Features
  are flattened length-major (PyTorch flattens channel-major): the same model
  up to a permutation of the head's rows.

  Inputs: ``(batch, length)`` or ``(batch, length, 1)``.

  References:
    Greydanus, Scaling down deep learning, 2020.
  """
  num_classes: int = 10
  channels: int = 25
  kernel_sizes: Sequence[int] = (5, 3, 3)
  stride: int = 2
  padding: int = 1
  activation: str = 'relu'
  activation_alpha: Optional[float] = None
  init_name: str = 'auto'
  init_scale: Optional[float] = None
  dropout_rates: Sequence[float] = ()
  batch_norm: bool = False
  bn_momentum: float = 0.9
  bn_axis_name: Optional[str] = None
  dtype: Optional[Any] = None      # compute; None: the inputs' and params'
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    act = activations_lib.get_activation(self.activation, self.activation_alpha)
    rates = tuple(self.dropout_rates) or (0.0,) * len(self.kernel_sizes)
    h = x.reshape((x.shape[0], -1, 1)) if x.ndim == 2 else x
    for i, k in enumerate(self.kernel_sizes):
      name = f'conv_{i}'
      h = nn.Conv(
          self.channels, (k,), strides=(self.stride,),
          padding=((self.padding, self.padding),), use_bias=not self.batch_norm,
          kernel_init=layers.kernel_init(self),
          **layers.dtype_kwargs(self),
          bias_init=initializers_lib.bias_init, name=name,
      )(h)
      h = _norm_act(self, h, train, act, name, f'bn_{i}')
      h = layers.Dropout(rates[i], name=f'dropout_{i}')(h, train, mc_dropout)
    h = h.reshape((h.shape[0], -1))
    return _head(self, h)


class CNN(nn.Module):
  """A small 2-D CNN for 28x28 grey images (MNIST, Fashion-MNIST).

  For each entry of ``features``: 3x3 convolution (SAME padding, ``conv_i``),
  [BatchNorm], activation, 2x2 max pooling, dropout; then a hidden Dense
  layer of ``hidden`` units (``dense``), [BatchNorm], activation, dropout,
  and the linear head (``head``). ``dropout_rates`` has one rate per conv
  block and one for the hidden Dense layer.

  Inputs: ``(batch, h, w)`` or ``(batch, h, w, c)``.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  activation: str = 'relu'
  activation_alpha: Optional[float] = None
  init_name: str = 'auto'
  init_scale: Optional[float] = None
  dropout_rates: Sequence[float] = ()
  batch_norm: bool = False
  bn_momentum: float = 0.9
  bn_axis_name: Optional[str] = None
  dtype: Optional[Any] = None      # compute; None: the inputs' and params'
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    act = activations_lib.get_activation(self.activation, self.activation_alpha)
    rates = tuple(self.dropout_rates) or (0.0,) * (len(self.features) + 1)
    h = x[..., None] if x.ndim == 3 else x
    for i, f in enumerate(self.features):
      name = f'conv_{i}'
      h = nn.Conv(
          f, (3, 3), padding='SAME', use_bias=not self.batch_norm,
          kernel_init=layers.kernel_init(self),
          **layers.dtype_kwargs(self),
          bias_init=initializers_lib.bias_init, name=name,
      )(h)
      h = _norm_act(self, h, train, act, name, f'bn_{i}')
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
      h = layers.Dropout(rates[i], name=f'dropout_{i}')(h, train, mc_dropout)
    h = h.reshape((h.shape[0], -1))
    h = nn.Dense(
        self.hidden, use_bias=not self.batch_norm,
        kernel_init=layers.kernel_init(self),
        **layers.dtype_kwargs(self),
        bias_init=initializers_lib.bias_init, name='dense',
    )(h)
    h = _norm_act(self, h, train, act, 'dense', 'bn_dense')
    h = layers.Dropout(rates[-1], name='dropout_dense')(h, train, mc_dropout)
    return _head(self, h)


def _common(name, input_shape):
  return layers.common_config(name, input_shape, dropout_rate=0.0, dropout_rates=())


def mnist1d_cnn_config() -> ml_collections.ConfigDict:
  """The MNIST-1D reference CNN: 25 channels, kernels (5, 3, 3), stride 2."""
  return ml_collections.ConfigDict(dict(
      _common('mnist1d_cnn', (40,)),
      channels=25,
      kernel_sizes=(5, 3, 3),
      stride=2,
      padding=1,
      batch_norm=False,  # not in the reference model
      bn_momentum=0.9,
      bn_axis_name=None,
  ))


def cnn_config() -> ml_collections.ConfigDict:
  """The 2-D CNN for MNIST and Fashion-MNIST."""
  return ml_collections.ConfigDict(dict(
      _common('cnn', (28, 28, 1)),
      features=(32, 64),
      hidden=128,
      batch_norm=False,
      bn_momentum=0.9,
      bn_axis_name=None,
  ))
