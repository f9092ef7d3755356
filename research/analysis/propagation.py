"""The propagation probe: how activations and gradients travel through a
network at a given initialization.

For each layer ``l`` that sows its output ``a_l`` (every model in
``research.models`` does) the probe reports, over one batch:

* ``act_mean``, ``act_var``: mean and variance of the entries of ``a_l``;
* ``saturated``: fraction of entries within ``tol`` of an asymptote, as a
  fraction of the output range (sigmoid: ``a < tol`` or ``a > 1 - tol``;
  tanh: ``|a| > 1 - 2 tol``); the derivative there is below ``4 tol`` of its
  maximum. NaN for activations without two asymptotes;
* ``dead``: fraction of units (last axis) whose output is exactly zero for
  every example (and position) of the batch: a dead ReLU;
* ``grad_norm``: ``||dL/dW||_2`` over the kernels of the layer (for a block,
  the global norm of its kernels).

It also gives the gradient norm of every kernel in call order
(``kernels``, ``kernel_grad_norm``), e.g. the head's.

References:
  Glorot & Bengio, Understanding the difficulty of training deep feedforward
  neural networks, 2010; He et al., Delving deep into rectifiers, 2015;
  Klambauer et al., Self-normalizing neural networks, 2017.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from research import models as models_lib
from research.models import layers as layers_lib

__all__ = [
    'SATURATION',
    'cross_entropy_loss',
    'dead_unit_fractions',
    'probe_config',
    'propagation_probe',
]

# activation -> (a, tol) -> bool array of saturated entries.
SATURATION: dict[str, Callable[[jax.Array, float], jax.Array]] = {
    'sigmoid': lambda a, tol: (a < tol) | (a > 1.0 - tol),
    'tanh': lambda a, tol: jnp.abs(a) > 1.0 - 2.0 * tol,
}


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def _ordered_leaves(tree, prefix=''):
  """``(path, leaf)`` in insertion order (jax.tree sorts dict keys)."""
  if isinstance(tree, Mapping):
    for key, value in tree.items():
      yield from _ordered_leaves(value, f'{prefix}/{key}' if prefix else key)
  elif isinstance(tree, (tuple, list)):
    for value in tree:  # sow appends: one entry per call.
      yield from _ordered_leaves(value, prefix)
  else:
    yield prefix, tree


def _layer_stats(a, activation, tol):
  a = a.astype(jnp.float32)
  saturate = SATURATION.get(activation)
  saturated = (
      jnp.mean(saturate(a, tol)) if saturate else jnp.array(jnp.nan)
  )
  units = a.reshape((-1, a.shape[-1]))
  dead = jnp.mean(jnp.all(units == 0.0, axis=0))
  return jnp.stack([jnp.mean(a), jnp.var(a), saturated, dead])


def _is_kernel_module(module, method_name):
  return method_name == '__call__' and isinstance(module, (nn.Dense, nn.Conv))


def _grad_norms(grads, kernels):
  flat = {path: g for path, g in _ordered_leaves(grads)}
  return jnp.stack([
      jnp.sqrt(jnp.sum(jnp.square(flat[f'{k}/kernel'].astype(jnp.float32))))
      for k in kernels
  ])


def propagation_probe(
    model: nn.Module,
    variables: Mapping[str, Any],
    inputs: jax.Array,
    labels: jax.Array,
    *,
    activation: Optional[str] = None,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy_loss,
    train: bool = False,
    rngs: Optional[Mapping[str, jax.Array]] = None,
    saturation_tol: float = 0.01,
) -> dict[str, Any]:
  """Per-layer activation statistics and kernel-gradient norms (see above).

  Args:
    model: a flax module that sows its layer outputs into the
      ``'activations'`` collection and takes ``(x, train=...)``.
    variables: its variables (``params`` and maybe ``batch_stats``).
    inputs, labels: one batch.
    activation: the hidden activation's name (for ``saturated``); defaults
      to ``model.activation``.
    loss_fn: ``(logits, labels) -> scalar``.
    train: run in training mode (batch statistics in BatchNorm; dropout
      draws from ``rngs['dropout']``).
    rngs: PRNG streams for apply.
    saturation_tol: the ``tol`` of the saturation test.

  Returns:
    A dict of numpy arrays: ``layers`` (names), ``act_mean``, ``act_var``,
    ``saturated``, ``dead``, ``grad_norm`` (one entry per layer),
    ``kernels``, ``kernel_grad_norm`` (one per kernel), and ``loss``.
  """
  if activation is None:
    activation = getattr(model, 'activation', None)
  if not 0.0 < saturation_tol < 0.5:
    raise ValueError(
        f'propagation_probe: saturation_tol={saturation_tol!r} is out of '
        'range; allowed: (0, 0.5).'
    )
  params = variables['params']
  mutable = [layers_lib.ACTIVATIONS_COLLECTION, 'intermediates']
  # Sown values left in `variables` (e.g. by init) would be appended to.
  others = {
      k: v for k, v in variables.items() if k not in ['params'] + mutable
  }
  if train:
    mutable.append('batch_stats')
  # Filled while tracing; the jitted function is new on every call, so it is
  # traced (and these are filled) exactly once per call.
  names: dict[str, list[str]] = {}

  def loss_and_stats(p, others, inputs, labels, rngs):
    logits, state = model.apply(
        {'params': p, **others}, inputs, train=train, mutable=mutable,
        rngs=rngs, capture_intermediates=_is_kernel_module,
    )
    sown = list(_ordered_leaves(
        state.get(layers_lib.ACTIVATIONS_COLLECTION, {})))
    if not sown:
      raise ValueError(
          f'propagation_probe: {type(model).__name__} sows no layer outputs '
          f"into the '{layers_lib.ACTIVATIONS_COLLECTION}' collection; see "
          'research.models.layers.sow_activation.'
      )
    names['layers'] = [layers_lib.activation_layer(path) for path, _ in sown]
    called = _ordered_leaves(state['intermediates'])
    names['kernels'] = list(dict.fromkeys(
        path.rsplit('/', 1)[0] for path, _ in called
    ))
    stats = jnp.stack([
        _layer_stats(a, activation, saturation_tol) for _, a in sown
    ])
    return loss_fn(logits, labels), stats

  @jax.jit
  def run(p, others, inputs, labels, rngs):
    (loss, stats), grads = jax.value_and_grad(loss_and_stats, has_aux=True)(
        p, others, inputs, labels, rngs)
    return loss, stats, _grad_norms(grads, names['kernels'])

  loss, stats, kernel_norms = jax.device_get(
      run(params, others, inputs, labels, dict(rngs or {})))
  kernel_norms = np.asarray(kernel_norms)
  kernels = names['kernels']
  grad_norm = [
      np.sqrt(sum(
          kernel_norms[i] ** 2 for i, k in enumerate(kernels)
          if k == layer or k.startswith(layer + '/')
      ))
      for layer in names['layers']
  ]
  stats = np.asarray(stats)
  return {
      'layers': np.asarray(names['layers']),
      'act_mean': stats[:, 0],
      'act_var': stats[:, 1],
      'saturated': stats[:, 2],
      'dead': stats[:, 3],
      'grad_norm': np.asarray(grad_norm, dtype=np.float32),
      'kernels': np.asarray(kernels),
      'kernel_grad_norm': kernel_norms,
      'loss': np.asarray(loss),
  }


@functools.partial(jax.jit, static_argnames='apply_fn')
def _dead_fractions(stacked_variables, inputs, apply_fn):
  def one(variables):
    variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
    _, state = apply_fn(variables, inputs, train=False,
                        mutable=[layers_lib.ACTIVATIONS_COLLECTION])
    sown = list(_ordered_leaves(state.get(layers_lib.ACTIVATIONS_COLLECTION, {})))
    return jnp.stack([_layer_stats(a, None, 0.01)[3] for _, a in sown])
  return jax.vmap(one)(stacked_variables)


def dead_unit_fractions(apply_fn: Callable, stacked_variables: Mapping[str, Any],
                        inputs: jax.Array) -> np.ndarray:
  """``dead`` of :func:`propagation_probe` for a stack of M models at once:
  ``(M, layers)``, the fraction of units of each sown layer that output 0 on
  every example of ``inputs`` (evaluation mode). One compilation per model
  and stack shape, where the probe compiles on every call."""
  return np.asarray(_dead_fractions(dict(stacked_variables), inputs, apply_fn=apply_fn))


def probe_config(
    config,
    inputs: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    **kwargs,
) -> dict[str, Any]:
  """The probe at initialization of the model described by ``config``.

  ``config.init`` / ``config.init_scale`` choose the initialization; the
  keyword arguments go to ``propagation_probe``. Without ``rngs``, dropout
  (in training mode) draws from a key folded from ``rng``.
  """
  model, variables = models_lib.init_model(
      config, rng, input_shape=inputs.shape[1:]
  )
  kwargs.setdefault('activation', config.activation)
  kwargs.setdefault('rngs', {'dropout': jax.random.fold_in(rng, 1)})
  return propagation_probe(model, variables, inputs, labels, **kwargs)
