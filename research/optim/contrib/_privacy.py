"""Differentially private SGD: clip each example's gradient, sum, add noise."""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'DifferentiallyPrivateAggregateState',
    'differentially_private_aggregate',
    'dpsgd',
]


class DifferentiallyPrivateAggregateState(NamedTuple):
  rng_key: jax.Array  # the key for the next step's noise


def _check_args(fn, l2_norm_clip, noise_multiplier):
  checks.check_non_negative('l2_norm_clip', l2_norm_clip, fn=fn)
  checks.check_non_negative('noise_multiplier', noise_multiplier, fn=fn)


def _clipped_sum(leaves, l2_norm_clip):
  """Sums per-example gradients (axis 0), each first scaled to norm <= C."""
  batch = leaves[0].shape[0]
  if any(x.ndim < 1 or x.shape[0] != batch for x in leaves):
    raise ValueError(
        'differentially_private_aggregate: updates must be per-example '
        'gradients with one batch axis first, the same in every leaf; got '
        f'shapes {[x.shape for x in leaves]}.')
  norms = jax.vmap(otu.tree_norm)(leaves)
  # A zero gradient gives C / 0 = inf or 0 / 0 = nan: keep it as it is.
  factors = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
  return [jnp.tensordot(factors, x, axes=1) for x in leaves]


def differentially_private_aggregate(
    l2_norm_clip: jax.typing.ArrayLike,
    noise_multiplier: jax.typing.ArrayLike,
    key: Union[jax.Array, int, None] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Averages per-example gradients after clipping each and adding noise.

  The updates carry a leading batch axis of size ``B`` (per-example
  gradients, e.g. from ``jax.vmap(jax.grad(loss))``):

  .. math::
    \bar g_i = g_i \min\big(1, C / \|g_i\|\big), \qquad
    u = \frac{1}{B}\Big(\sum_{i=1}^B \bar g_i + \sigma C\, \xi\Big),
    \quad \xi \sim \mathcal{N}(0, I)

  ``||g_i||`` is the norm over all leaves of example ``i``. Put it first in
  a chain; gradient accumulation (``MultiSteps``, ``apply_every``) breaks
  its guarantee.

  Args:
    l2_norm_clip: ``C >= 0``, the largest norm of one example's gradient.
    noise_multiplier: ``sigma >= 0``, the noise's std in units of ``C``.
    key: a PRNG key or an int seed; ``None`` warns and uses seed 0.
    seed: deprecated alias of ``key``.

  References:
    Abadi et al., Deep learning with differential privacy, 2016.
  """
  fn = 'differentially_private_aggregate'
  _check_args(fn, l2_norm_clip, noise_multiplier)
  if seed is not None:
    warnings.warn(f'{fn}: seed is deprecated; pass key instead.',
                  DeprecationWarning)
    if key is not None:
      raise ValueError(f'{fn}: give key or seed, not both.')
    key = seed
  if key is None:
    warnings.warn(f'{fn}: no key given; using key 0.')
    key = 0
  key = adding._canonical_key(key)  # pylint: disable=protected-access
  noise_std = l2_norm_clip * noise_multiplier

  def init_fn(params):
    del params
    return DifferentiallyPrivateAggregateState(rng_key=key)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    leaves, treedef = jax.tree.flatten(updates)
    batch = leaves[0].shape[0]
    summed = _clipped_sum(leaves, l2_norm_clip)
    next_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
    noisy = [(x + noise_std * jax.random.normal(k, x.shape, x.dtype)) / batch
             for x, k in zip(summed, keys)]
    return (jax.tree.unflatten(treedef, noisy),
            DifferentiallyPrivateAggregateState(rng_key=next_key))

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def dpsgd(
    learning_rate: base.ScalarOrSchedule,
    l2_norm_clip: jax.typing.ArrayLike,
    noise_multiplier: jax.typing.ArrayLike,
    seed: int,
    momentum: Optional[jax.typing.ArrayLike] = None,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""DP-SGD: :func:`differentially_private_aggregate`, momentum, learning rate.

  .. math::
    m_t = \tilde g_t + \mu m_{t-1}, \qquad \theta_t = \theta_{t-1} - \eta_t m_t

  with ``tilde g_t`` the clipped, noised mean of the per-example gradients
  (no momentum when ``momentum`` is ``None``).

  Args:
    learning_rate: ``eta >= 0``, a scalar or a schedule.
    l2_norm_clip: ``C >= 0``, the largest norm of one example's gradient.
    noise_multiplier: ``sigma >= 0``, the noise's std in units of ``C``.
    seed: the int seed of the noise.
    momentum: ``mu`` in ``[0, 1)`` or ``None``.
    nesterov: use Nesterov momentum.

  References:
    Abadi et al., Deep learning with differential privacy, 2016.
  """
  fn = 'dpsgd'
  checks.check_learning_rate(learning_rate, fn)
  _check_args(fn, l2_norm_clip, noise_multiplier)
  checks.check_decay('momentum', momentum, fn=fn)
  return base.chain(
      differentially_private_aggregate(
          l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, key=seed),
      (base.identity() if momentum is None
       else transform.trace(decay=momentum, nesterov=nesterov)),
      transform.scale_by_learning_rate(learning_rate),
  )
