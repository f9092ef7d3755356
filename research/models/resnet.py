"""CIFAR ResNets (He et al., 2016) and Wide ResNets (Zagoruyko & Komodakis,
2016).

Convolutions have no bias (BatchNorm follows or precedes each). Stage ``s``
block ``b`` is named ``stage{s}_block{b}``; each block sows its output into
the ``'activations'`` collection.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from research.models import activations as activations_lib
from research.models import initializers as initializers_lib
from research.models import layers

__all__ = [
    'RESNET_DEPTHS',
    'ResNet',
    'WideResNet',
    'resnet_config',
    'resnet_blocks_per_stage',
    'wide_resnet_blocks_per_stage',
    'wide_resnet_config',
]

# CIFAR ResNet depth -> basic blocks per stage (depth = 6n + 2), as published.
RESNET_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
SHORTCUTS = ('A', 'B')


def resnet_blocks_per_stage(depth: int) -> int:
  if depth not in RESNET_DEPTHS:
    raise ValueError(
        f'resnet: depth={depth!r} is not a CIFAR ResNet depth; allowed: '
        f'{", ".join(str(d) for d in RESNET_DEPTHS)}.'
    )
  return RESNET_DEPTHS[depth]


def wide_resnet_blocks_per_stage(depth: int) -> int:
  ok = isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0
  if not ok:
    raise ValueError(
        f'wide_resnet: depth={depth!r} is not allowed; allowed: 6n + 4 with '
        'n >= 1 (10, 16, 22, 28, 40, ...).'
    )
  return (depth - 4) // 6


def _conv(module, features, kernel, strides, name):
  return nn.Conv(
      features, (kernel, kernel), strides=(strides, strides),
      padding=((kernel // 2, kernel // 2),) * 2, use_bias=False,
      kernel_init=layers.kernel_init(module), name=name,
      **layers.dtype_kwargs(module),
  )


class _Spec(NamedTuple):
  """The settings a block shares with its network (hashable, not a Module)."""
  activation: str
  activation_alpha: Optional[float]
  init_name: str
  init_scale: Optional[float]
  bn_momentum: float
  bn_axis_name: Optional[str]
  preact: bool = True
  shortcut: str = 'B'
  dtype: Optional[Any] = None
  param_dtype: Any = jnp.float32


def _spec(model) -> _Spec:
  return _Spec(
      model.activation, model.activation_alpha, model.init_name,
      model.init_scale, model.bn_momentum, model.bn_axis_name,
      getattr(model, 'preact', True), getattr(model, 'shortcut', 'B'),
      model.dtype, model.param_dtype,
  )


def _zero_pad_shortcut(x, features, strides):
  """Option A: subsample, then zero-pad the new channels (no parameters)."""
  x = x[:, ::strides, ::strides, :]
  extra = features - x.shape[-1]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions and a shortcut; post- or pre-activation."""
  features: int
  strides: int
  spec: _Spec

  @nn.compact
  def __call__(self, x, train: bool):
    m = self.spec
    act = activations_lib.get_activation(m.activation, m.activation_alpha)
    reshape = self.strides != 1 or x.shape[-1] != self.features
    if m.preact:
      pre = act(layers.batch_norm(m, train, name='bn_0')(x))
      y = _conv(m, self.features, 3, self.strides, 'conv_0')(pre)
      y = act(layers.batch_norm(m, train, name='bn_1')(y))
      y = _conv(m, self.features, 3, 1, 'conv_1')(y)
    else:
      pre = x
      y = _conv(m, self.features, 3, self.strides, 'conv_0')(x)
      y = act(layers.batch_norm(m, train, name='bn_0')(y))
      y = _conv(m, self.features, 3, 1, 'conv_1')(y)
      y = layers.batch_norm(m, train, name='bn_1')(y)
    if not reshape:
      shortcut = x
    elif m.shortcut == 'A':
      shortcut = _zero_pad_shortcut(x, self.features, self.strides)
    else:
      shortcut = _conv(m, self.features, 1, self.strides, 'proj')(pre)
      if not m.preact:
        shortcut = layers.batch_norm(m, train, name='bn_proj')(shortcut)
    out = y + shortcut if m.preact else act(y + shortcut)
    layers.sow_activation(self, '', out)
    return out


class ResNet(nn.Module):
  """The CIFAR ResNet of He et al. (2016): depth ``6n + 2``.

  A 3x3 convolution of ``width`` channels, three stages of ``n`` basic blocks
  with ``width``, ``2 width``, ``4 width`` channels (stride 2 at the start of
  stages 2 and 3), global average pooling and a linear head.

  Shortcuts where the shape changes: option ``'A'`` (identity, subsampling
  and zero-padded channels, parameter-free; the published 0.27M / 0.46M /
  0.66M / 0.85M / 1.7M parameters of ResNet-20/32/44/56/110 are for it) or
  ``'B'`` (1x1 projection convolution and BatchNorm). ``preact=True`` uses
  the pre-activation block (BN, ReLU, conv; He et al., Identity mappings in
  deep residual networks, 2016) and a final BN and activation before pooling.

  References:
    He et al., Deep residual learning for image recognition, 2016.
  """
  depth: int = 20
  num_classes: int = 10
  width: int = 16
  shortcut: str = 'A'
  preact: bool = False
  activation: str = 'relu'
  activation_alpha: Optional[float] = None
  init_name: str = 'auto'
  init_scale: Optional[float] = None
  bn_momentum: float = 0.9
  bn_axis_name: Optional[str] = None
  dtype: Optional[Any] = None      # compute; None: the inputs' and params'
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    n = resnet_blocks_per_stage(self.depth)
    act = activations_lib.get_activation(self.activation, self.activation_alpha)
    h = _conv(self, self.width, 3, 1, 'conv_init')(x)
    if not self.preact:
      h = act(layers.batch_norm(self, train, name='bn_init')(h))
    for s in range(3):
      for b in range(n):
        name = f'stage{s + 1}_block{b}'
        strides = 2 if s > 0 and b == 0 else 1
        h = BasicBlock(
            self.width * 2**s, strides, _spec(self), name=name)(h, train)
    if self.preact:
      h = act(layers.batch_norm(self, train, name='bn_final')(h))
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(
        self.num_classes, kernel_init=layers.kernel_init(self),
        bias_init=initializers_lib.bias_init, name='head',
        **layers.dtype_kwargs(self),
    )(h)


class WideBlock(nn.Module):
  """Pre-activation wide block: BN-act-conv3x3-BN-act-dropout-conv3x3."""
  features: int
  strides: int
  dropout_rate: float
  spec: _Spec

  @nn.compact
  def __call__(self, x, train: bool, mc_dropout: bool):
    m = self.spec
    act = activations_lib.get_activation(m.activation, m.activation_alpha)
    pre = act(layers.batch_norm(m, train, name='bn_0')(x))
    y = _conv(m, self.features, 3, self.strides, 'conv_0')(pre)
    y = act(layers.batch_norm(m, train, name='bn_1')(y))
    y = layers.Dropout(self.dropout_rate, name='dropout')(y, train, mc_dropout)
    y = _conv(m, self.features, 3, 1, 'conv_1')(y)
    if self.strides == 1 and x.shape[-1] == self.features:
      out = y + x
    else:
      out = y + _conv(m, self.features, 1, self.strides, 'proj')(pre)
    layers.sow_activation(self, '', out)
    return out


class WideResNet(nn.Module):
  """Wide ResNet WRN-``depth``-``widen_factor`` (depth ``6n + 4``).

  A 3x3 convolution of 16 channels, three stages of ``n`` pre-activation
  wide blocks of ``16 k``, ``32 k``, ``64 k`` channels (stride 1, 2, 2; a
  1x1 projection shortcut where the shape changes), a final BN and
  activation, global average pooling and a linear head. WRN-16-4 has 2.7M
  parameters, WRN-28-10 36.5M. ``dropout_rate`` is the dropout between the
  two convolutions of each block (0.3 in the paper's dropout runs).

  References:
    Zagoruyko & Komodakis, Wide residual networks, 2016.
  """
  depth: int = 28
  widen_factor: int = 10
  num_classes: int = 10
  dropout_rate: float = 0.0
  activation: str = 'relu'
  activation_alpha: Optional[float] = None
  init_name: str = 'auto'
  init_scale: Optional[float] = None
  bn_momentum: float = 0.9
  bn_axis_name: Optional[str] = None
  dtype: Optional[Any] = None      # compute; None: the inputs' and params'
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    n = wide_resnet_blocks_per_stage(self.depth)
    act = activations_lib.get_activation(self.activation, self.activation_alpha)
    h = _conv(self, 16, 3, 1, 'conv_init')(x)
    for s in range(3):
      for b in range(n):
        name = f'stage{s + 1}_block{b}'
        strides = 2 if s > 0 and b == 0 else 1
        features = 16 * 2**s * self.widen_factor
        h = WideBlock(
            features, strides, self.dropout_rate, _spec(self), name=name
        )(h, train, mc_dropout)
    h = act(layers.batch_norm(self, train, name='bn_final')(h))
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(
        self.num_classes, kernel_init=layers.kernel_init(self),
        bias_init=initializers_lib.bias_init, name='head',
        **layers.dtype_kwargs(self),
    )(h)


def _common(name):
  return layers.common_config(name, (32, 32, 3), bn_momentum=0.9, bn_axis_name=None)


def resnet_config(depth: int = 20) -> ml_collections.ConfigDict:
  """ResNet-``depth`` for CIFAR, option A shortcuts, post-activation."""
  return ml_collections.ConfigDict(dict(
      _common('resnet'), depth=depth, width=16, shortcut='A', preact=False,
  ))


def wide_resnet_config(
    depth: int = 28, widen_factor: int = 10
) -> ml_collections.ConfigDict:
  """WRN-``depth``-``widen_factor`` for CIFAR."""
  return ml_collections.ConfigDict(dict(
      _common('wide_resnet'), depth=depth, widen_factor=widen_factor,
      dropout_rate=0.0,
  ))
