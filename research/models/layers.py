"""Building blocks shared by the models: dropout (standard and alpha, with
an MC-dropout stream), kernel initializers from a config, BatchNorm.

Randomness streams: training dropout draws from the ``'dropout'`` stream; MC
dropout (dropout kept at evaluation) draws from ``'mc_dropout'``, so that
sampling at evaluation never reuses the training keys.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from research.models import initializers as initializers_lib
from research.models import validation

__all__ = [
    'ACTIVATIONS_COLLECTION',
    'AlphaDropout',
    'Dropout',
    'DROPOUT_STREAM',
    'MC_DROPOUT_STREAM',
    'SELU_ALPHA',
    'SELU_SCALE',
    'activation_layer',
    'batch_norm',
    'dropout_stream',
    'kernel_init',
    'sow_activation',
]

DROPOUT_STREAM = 'dropout'
MC_DROPOUT_STREAM = 'mc_dropout'
# Models sow each layer's post-activation output here (read by the
# propagation probe in research/analysis), as `<layer>_act` next to the layer
# or `act` inside a block module; a sown name may not equal a submodule's.
ACTIVATIONS_COLLECTION = 'activations'

# The constants of SELU (Klambauer et al., 2017, eq. 14), as in jax.nn.selu.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def sow_activation(module: nn.Module, layer: str, x) -> None:
  """Records ``x`` as the output of ``layer`` (``''``: the module itself)."""
  module.sow(ACTIVATIONS_COLLECTION, f'{layer}_act' if layer else 'act', x)


def activation_layer(path: str) -> str:
  """The layer a sown path belongs to: ``'hidden_3_act' -> 'hidden_3'``,
  ``'stage1_block0/act' -> 'stage1_block0'``."""
  for suffix in ('/act', '_act'):
    if path.endswith(suffix):
      return path[: -len(suffix)]
  return path


def dropout_stream(train: bool, mc_dropout: bool) -> Optional[str]:
  """The PRNG stream dropout draws from, or None when dropout is off."""
  if train:
    return DROPOUT_STREAM
  return MC_DROPOUT_STREAM if mc_dropout else None


class Dropout(nn.Module):
  r"""Inverted dropout: :math:`y = x \cdot m / (1 - p)`, :math:`m \sim
  \mathrm{Bernoulli}(1 - p)`, in training or MC-dropout mode; the identity
  otherwise.

  Attributes:
    rate: drop probability ``p`` in ``[0, 1)``.

  References:
    Srivastava et al., Dropout: a simple way to prevent neural networks from
    overfitting, 2014; Gal & Ghahramani, Dropout as a Bayesian approximation,
    2016 (MC dropout).
  """
  rate: float

  def _check(self):
    validation.check_rate('rate', self.rate, fn=type(self).__name__)

  @nn.compact
  def __call__(self, x, train: bool = False, mc_dropout: bool = False):
    self._check()
    stream = dropout_stream(train, mc_dropout)
    if stream is None or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng(stream), keep, x.shape)
    return self._combine(x, mask, keep)

  def _combine(self, x, mask, keep):
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class AlphaDropout(Dropout):
  r"""Alpha dropout, which keeps SELU's zero mean and unit variance.

  Dropped units are set to SELU's negative saturation
  :math:`\alpha' = -\lambda\alpha`, then an affine map restores the moments:

  .. math::
    y = a\,(x m + \alpha'(1 - m)) + b, \quad
    a = \big(q\,(1 + (1 - q)\,\alpha'^2)\big)^{-1/2}, \quad
    b = -a\,(1 - q)\,\alpha'

  with keep probability :math:`q = 1 - p`.

  References:
    Klambauer et al., Self-normalizing neural networks, 2017.
  """

  def _combine(self, x, mask, keep):
    saturation = -SELU_SCALE * SELU_ALPHA
    a = (keep * (1.0 + (1.0 - keep) * saturation**2)) ** -0.5
    b = -a * (1.0 - keep) * saturation
    dropped = jnp.where(mask, x, jnp.full_like(x, saturation))
    return (a * dropped + b).astype(x.dtype)


def kernel_init(spec: Any):
  """The kernel initializer named by ``spec.init_name`` and ``init_scale``.

  ``spec`` is a model with the fields ``init_name``, ``init_scale`` and
  ``activation`` (``init`` would shadow ``Module.init``).
  """
  return initializers_lib.get_initializer(
      spec.init_name, getattr(spec, 'init_scale', None),
      getattr(spec, 'activation', 'relu'),
  )


def batch_norm(spec: Any, train: bool, name: Optional[str] = None):
  """BatchNorm whose running statistics change only in training.

  ``spec.bn_momentum`` follows flax: ``ra <- m * ra + (1 - m) * batch``
  (PyTorch's ``momentum=0.1`` is ``m=0.9``); ``spec.bn_axis_name`` names the
  pmap axis for cross-replica statistics. The output has ``spec.dtype``;
  the batch statistics are reduced and the running ones kept in float32
  whatever the compute dtype (Flax's ``force_float32_reductions``).
  """
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=getattr(spec, 'bn_momentum', 0.9),
      epsilon=1e-5,
      axis_name=getattr(spec, 'bn_axis_name', None),
      name=name,
      **dtype_kwargs(spec),
  )


# Model config dtype names; 'auto' (Flax's dtype=None) computes in the dtype
# of the inputs and params, i.e. follows config.train.precision.
DTYPES = ('float32', 'bfloat16', 'float16')
AUTO_DTYPE = 'auto'


def resolve_dtype(name: str) -> Optional[Any]:
  """A config dtype name -> a jnp dtype (``'auto'`` -> None)."""
  return None if name == AUTO_DTYPE else jnp.dtype(name)


def dtype_kwargs(spec: Any) -> dict:
  """``dtype`` and ``param_dtype`` of a model, for its Flax layers."""
  return dict(dtype=getattr(spec, 'dtype', None),
              param_dtype=getattr(spec, 'param_dtype', jnp.float32))


def common_config(name: str, input_shape, **fields) -> dict:
  """The config fields every model has (name, input, classes, activation,
  init, max-norm, dtypes), then the model's own ``fields``."""
  return dict(
      name=name,
      input_shape=tuple(input_shape),
      num_classes=10,
      activation='relu',
      activation_alpha=None,
      init='auto',
      init_scale=None,
      max_norm=0.0,
      max_norm_layers='hidden',
      dtype=AUTO_DTYPE,          # compute: 'auto' (the inputs' and params') or DTYPES
      param_dtype='float32',     # DTYPES
      **fields,
  )
