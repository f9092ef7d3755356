"""Terms added to the updates: weight decay, an L1 penalty, annealed noise."""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'AddDecayedWeightsState',
    'AddNoiseState',
    'WeightDecaySchedule',
    'add_decayed_weights',
    'add_l1_penalty',
    'add_noise',
]

_is_none = lambda x: x is None  # noqa: E731


class WeightDecaySchedule(NamedTuple):
  count: jax.Array  # int32, number of updates so far; read by the schedule


AddDecayedWeightsState = base.EmptyState  # the state with a constant decay


def add_decayed_weights(
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adds the params scaled by the weight decay: ``u <- u + lambda_t p``.

  Placed before the learning rate, this is decoupled weight decay (AdamW).

  Args:
    weight_decay: ``lambda``, a scalar or a schedule of the update count (the
      schedule sees ``count = 0`` on the first update, and the state is then
      a :class:`WeightDecaySchedule`).
    mask: a tree of booleans with the params' structure (or a prefix of it),
      or a callable ``params -> such a tree``; ``True`` where decay applies.

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019.
  """
  checks.check_learning_rate(
      weight_decay, 'add_decayed_weights', name='weight_decay'
  )
  scheduled = callable(weight_decay)
  # A zero constant is skipped, so that the update needs no arithmetic.
  is_zero = isinstance(weight_decay, (int, float)) and weight_decay == 0.0

  def init_fn(params):
    del params
    if scheduled:
      return WeightDecaySchedule(count=jnp.zeros([], jnp.int32))
    return base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'add_decayed_weights')
    if scheduled:
      rate = weight_decay(state.count)
      state = WeightDecaySchedule(count=otu.safe_increment(state.count))
    else:
      rate = weight_decay
    if is_zero:
      return updates, state
    updates = jax.tree.map(
        lambda g, p: None if g is None else g + rate * p,
        updates,
        params,
        is_leaf=_is_none,
    )
    return updates, state

  tx = base.GradientTransformationExtraArgs(init_fn, update_fn)
  if mask is None:
    return tx
  # Imported here: wrappers builds on this module's neighbours.
  from research.optim import wrappers  # pylint: disable=g-import-not-at-top

  return wrappers.masked(tx, mask)


def add_l1_penalty(l1: jax.typing.ArrayLike) -> base.GradientTransformationExtraArgs:
  r"""Adds the subgradient of an L1 penalty: ``u <- u + l1 * sign(p)``.

  The subgradient of ``l1 * sum |p|``; at ``p = 0`` it is ``0``. For complex
  ``p``, ``sign(p) = p / |p|``. Not part of Optax.

  Args:
    l1: the penalty strength, ``>= 0``.

  References:
    Tibshirani, Regression shrinkage and selection via the lasso, 1996.
  """
  checks.check_non_negative('l1', l1, fn='add_l1_penalty')

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'add_l1_penalty')
    updates = jax.tree.map(
        lambda g, p: None if g is None else g + l1 * jnp.sign(p).astype(g.dtype),
        updates,
        params,
        is_leaf=_is_none,
    )
    return updates, state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class AddNoiseState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  rng_key: jax.Array


def _canonical_key(key_or_seed) -> jax.Array:
  if isinstance(key_or_seed, jax.Array) and jnp.issubdtype(
      key_or_seed.dtype, jax.dtypes.prng_key
  ):
    return key_or_seed
  return jax.random.key(key_or_seed)


def add_noise(
    eta: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Adds annealed Gaussian noise to the updates.

  .. math::
    u_t \leftarrow u_t + \sigma_t \xi_t, \qquad
    \sigma_t = \sqrt{\eta / t^{\gamma}}, \qquad \xi_t \sim \mathcal{N}(0, I)

  Args:
    eta: the base variance, ``>= 0``.
    gamma: the annealing exponent of the variance.
    key: a PRNG key or an int seed. ``None`` warns and uses seed ``0``.
    seed: deprecated alias of ``key``.

  References:
    Neelakantan et al., Adding gradient noise improves learning for very deep
    networks, 2015.
  """
  checks.check_non_negative('eta', eta, fn='add_noise')
  checks.check_numbers('add_noise', gamma=gamma, key=key, seed=seed)
  if seed is not None:
    warnings.warn(
        'add_noise: seed is deprecated; pass key instead.', DeprecationWarning
    )
    if key is not None:
      raise ValueError('add_noise: give key or seed, not both.')
    key = seed
  if key is None:
    warnings.warn('add_noise: no key given; using key 0.')
    key = 0

  def init_fn(params):
    del params
    return AddNoiseState(
        count=jnp.zeros([], jnp.int32), rng_key=_canonical_key(key)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    count = otu.safe_increment(state.count)
    std = jnp.sqrt(eta / count**gamma)
    rng_key, sample_key = jax.random.split(state.rng_key)
    keys = otu.tree_split_key_like(sample_key, updates)
    noise = jax.tree.map(
        lambda g, k: jax.random.normal(k, g.shape, g.dtype), updates, keys
    )
    updates = otu.tree_add_scale(updates, std, noise)
    return updates, AddNoiseState(count=count, rng_key=rng_key)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
