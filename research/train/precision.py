"""Precision policies: the dtypes of params, computation and loss, and
dynamic loss scaling for float16.

A policy is named by ``config.train.precision``:

  ``'float32'``   no casts: the model computes in its own dtypes (float32
                  unless its config says otherwise).
  ``'bfloat16'``  float32 params and optimizer state (the master copy), the
                  forward and backward passes in bfloat16; BatchNorm
                  statistics, the loss and the gradients in float32.
  ``'float16'``   as ``'bfloat16'`` with float16, plus dynamic loss scaling:
                  the loss is multiplied by a scale before differentiation
                  and the gradients divided by it; a step whose scaled
                  gradients overflow is skipped by the train step's
                  non-finite guard and halves the scale, and every
                  ``GROWTH_INTERVAL`` finite steps in a row double it.

The cast happens in the step (params and inputs to the compute dtype; the
gradient of the cast brings the gradients back to float32), so any Flax model
follows the policy as long as its own ``dtype`` is left to follow its inputs
(``model.dtype='auto'``, Flax's ``dtype=None``). The loss scale is state
(:class:`LossScale` in ``TrainState.loss_scale``), so a change of scale does
not recompile.

References:
  Micikevicius et al., Mixed precision training, 2018 (master weights, loss
  scaling); Kalamkar et al., A study of bfloat16 for deep learning
  training, 2019.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'LOSS_SCALINGS',
    'POLICIES',
    'LossScale',
    'Policy',
    'check_state',
    'get_policy',
    'initial_loss_scale',
    'prepare_state',
    'uses_loss_scaling',
    'update_loss_scale',
]

# jmp's DynamicLossScale defaults (Micikevicius et al. start at 2^15 too).
INITIAL_SCALE = 2.0**15
GROWTH_INTERVAL = 2000
FACTOR = 2.0
MIN_SCALE = 1.0

LOSS_SCALINGS = ('auto', 'dynamic', 'none')


@dataclasses.dataclass(frozen=True)
class Policy:
  """What is cast where. ``compute_dtype`` None: no casts at all."""
  name: str
  compute_dtype: Optional[Any]
  param_dtype: Optional[Any]
  needs_loss_scaling: bool = False

  def cast_to_compute(self, tree):
    """Floating leaves to the compute dtype (integers, keys untouched)."""
    if self.compute_dtype is None:
      return tree
    return jax.tree.map(lambda x: _cast(x, self.compute_dtype), tree)


def _cast(x, dtype):
  if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
    return x.astype(dtype)
  return x


POLICIES = {
    'float32': Policy('float32', None, None),
    'bfloat16': Policy('bfloat16', jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)),
    'float16': Policy('float16', jnp.dtype(jnp.float16), jnp.dtype(jnp.float32),
                      needs_loss_scaling=True),
}


def get_policy(name: str) -> Policy:
  if name not in POLICIES:
    raise ValueError(f'precision={name!r} is unknown; allowed: '
                     f'{", ".join(repr(p) for p in POLICIES)}.')
  return POLICIES[name]


def uses_loss_scaling(precision: str, loss_scaling: str = 'auto') -> bool:
  """Whether steps of this policy scale the loss; float16 without it is refused.

  ``loss_scaling``: ``'auto'`` (dynamic for float16 only), ``'dynamic'``
  or ``'none'``.
  """
  policy = get_policy(precision)
  if loss_scaling not in LOSS_SCALINGS:
    raise ValueError(f'loss_scaling={loss_scaling!r} is unknown; allowed: '
                     f'{", ".join(repr(s) for s in LOSS_SCALINGS)}.')
  if loss_scaling == 'none' and policy.needs_loss_scaling:
    raise ValueError(
        f"precision={precision!r} with loss_scaling='none' is refused: float16 "
        'gradients underflow and overflow without loss scaling; allowed: '
        "loss_scaling='auto' or 'dynamic', or precision='bfloat16'.")
  if loss_scaling == 'auto':
    return policy.needs_loss_scaling
  return loss_scaling == 'dynamic'


class LossScale(NamedTuple):
  """Dynamic loss scale: the scale and the finite steps since it changed."""
  scale: jax.Array        # float32 scalar
  good_steps: jax.Array   # int32 scalar


def initial_loss_scale(scale: float = INITIAL_SCALE) -> LossScale:
  return LossScale(jnp.asarray(scale, jnp.float32), jnp.zeros((), jnp.int32))


def update_loss_scale(ls: LossScale, finite: jax.Array) -> LossScale:
  """Halves the scale after a non-finite step (not below ``MIN_SCALE``);
  doubles it after ``GROWTH_INTERVAL`` finite steps in a row."""
  grow = finite & (ls.good_steps + 1 >= GROWTH_INTERVAL)
  scale = jnp.where(finite, jnp.where(grow, ls.scale * FACTOR, ls.scale),
                    jnp.maximum(ls.scale / FACTOR, MIN_SCALE))
  # A doubling that overflows float32 keeps the old scale.
  scale = jnp.where(jnp.isfinite(scale), scale, ls.scale)
  good = jnp.where(finite & ~grow, ls.good_steps + 1, 0)
  return LossScale(scale.astype(jnp.float32), good.astype(jnp.int32))


def _floating_dtypes(tree) -> set:
  return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)
          if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)}


def _module(apply_fn):
  module = getattr(apply_fn, '__self__', None)
  return module if hasattr(module, 'init') and hasattr(module, 'apply') else None


def check_state(state, precision: str, loss_scaling: bool) -> None:
  """Refuses a state and model that contradict the policy, before work starts.

  Under 'bfloat16' and 'float16' the params must be float32 (the master
  copy) and a Flax model's ``dtype`` must follow its inputs (None) or equal
  the compute dtype; float16 params or compute need loss scaling.
  """
  policy = get_policy(precision)
  params = _floating_dtypes(state.params)
  module = _module(state.apply_fn)
  model_dtypes = {}
  for field in ('dtype', 'param_dtype'):
    value = getattr(module, field, None) if module is not None else None
    if value is not None:
      model_dtypes[field] = jnp.dtype(value)
  f16 = jnp.dtype(jnp.float16)
  if not loss_scaling and (f16 in params or f16 in model_dtypes.values()):
    raise ValueError(
        f'float16 without loss scaling is refused (config.train.precision='
        f'{precision!r}; the model or its params are float16); allowed: '
        "precision='float16' (dynamic loss scaling) or float32/bfloat16 params "
        'and model dtypes.')
  if policy.compute_dtype is None:
    return
  other = sorted(str(d) for d in params - {policy.param_dtype})
  if other:
    raise ValueError(
        f'config.train.precision={precision!r} keeps float32 master params, but '
        f'the params hold {", ".join(other)} (model.param_dtype?); allowed: '
        "float32 params (model.param_dtype='float32'), or precision='float32' "
        'to train in the params\' own dtype.')
  dtype = model_dtypes.get('dtype')
  if dtype is not None and dtype != policy.compute_dtype:
    raise ValueError(
        f'config.train.precision={precision!r} computes in {policy.compute_dtype}, '
        f'but the model has dtype={dtype} (config.model.dtype); allowed: '
        f"model.dtype='auto' (follow the policy) or {str(policy.compute_dtype)!r}.")


def prepare_state(state, loss_scaling: bool):
  """``state`` with an initial :class:`LossScale` if the policy scales the
  loss and it has none (with a leading replica axis if the state has one)."""
  if not loss_scaling or getattr(state, 'loss_scale', None) is not None:
    return state
  ls = initial_loss_scale()
  if np.ndim(state.step) == 1:
    n = np.shape(state.step)[0]
    ls = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), ls)
  return state.replace(loss_scale=ls)
