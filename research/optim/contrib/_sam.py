"""SAM: sharpness-aware minimization as a wrapper of two optimizers.

An adversarial optimizer climbs from the current (outer) params for
``sync_period - 1`` steps; the outer optimizer then steps from the outer
params with the gradient found at the adversarial point.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'NormalizeState',
    'SAMState',
    'normalize',
    'sam',
]

NormalizeState = base.EmptyState


def normalize() -> base.GradientTransformationExtraArgs:
  r"""Divides the updates by their global L2 norm: :math:`u \leftarrow u / \|u\|`.

  With ``sgd(rho)`` after it, this is SAM's adversarial step (see :func:`sam`).
  A zero gradient gives NaN, as in Optax.

  References:
    Foret, Kleiner, Mobahi & Neyshabur, Sharpness-Aware Minimization for
    Efficiently Improving Generalization, 2021.
  """

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    norm = otu.tree_norm(updates)
    return jax.tree.map(lambda u: u / norm, updates), state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


class SAMState(NamedTuple):
  steps_since_sync: jax.Array  # int32, calls since the last outer step
  opt_state: base.OptState  # the outer optimizer's state
  adv_state: base.OptState  # the adversarial optimizer's state
  cache: Optional[base.Params]  # the outer params (None in opaque mode)


GradFn = Callable[[base.Params, int], base.Updates]


def sam(
    optimizer: base.GradientTransformation,
    adv_optimizer: base.GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: Optional[str] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Sharpness-aware minimization (SAM).

  SAM minimizes :math:`\max_{\|\epsilon\| \le \rho} L(w + \epsilon)`. With
  ``optimizer = sgd(lr)`` and ``adv_optimizer = chain(normalize(),
  sgd(rho))`` (the paper's method), each SAM step is two steps:

  .. math::
    w_\text{adv} &= w + \rho \frac{g}{\|g\|}, \qquad g = \nabla L(w) \\
    w &\leftarrow w - \text{lr}\, \nabla L(w_\text{adv})

  (:math:`\|g\|` is the L2 norm over all leaves). In general the adversarial
  optimizer's update is *subtracted* (an ascent) for ``sync_period - 1``
  steps from :math:`w`, then ``optimizer`` steps from :math:`w` (its update
  sees :math:`w` as ``params``) with the last gradient.

  By default (transparent mode) each call of ``update`` is one of these
  steps: the first ``sync_period - 1`` calls return the ascent steps, so
  the caller's params *are* the adversarial points and the next gradient is
  taken there; the ``sync_period``-th call returns the update that moves the
  params back to :math:`w` and applies the outer step. With
  ``opaque_mode=True`` one call does a whole SAM step: ``update`` gets
  ``grad_fn(params, i)`` and evaluates the gradient at the ``i``-th
  adversarial point itself, so the caller only ever sees outer params (needed
  when each call has side effects, e.g. BatchNorm statistics).

  With ``sync_period=1`` there is no ascent and ``sam`` is ``optimizer``
  (Optax 0.2.8 instead keeps returning to the params of its first call).

  Args:
    optimizer: the outer optimizer.
    adv_optimizer: the adversarial optimizer, whose update is subtracted.
    sync_period: ascent steps plus one, ``>= 1``.
    reset_state: re-initialize the adversarial state after each outer step
      (else it resumes where the last ascent ended).
    opaque_mode: do the ascent inside ``update`` with ``grad_fn``.
    batch_axis_name: in opaque mode under ``pmap``, average each adversarial
      gradient over this axis.

  Returns:
    A transformation with state :class:`SAMState`; in opaque mode its
    ``update`` needs ``grad_fn=``.

  References:
    Foret, Kleiner, Mobahi & Neyshabur, Sharpness-Aware Minimization for
    Efficiently Improving Generalization, 2021.
  """
  checks.check_range('sync_period', sync_period, 1, None, fn='sam')

  def init_fn(params):
    return SAMState(
        steps_since_sync=jnp.zeros([], jnp.int32),
        opt_state=optimizer.init(params),
        adv_state=adv_optimizer.init(params),
        cache=None if opaque_mode else params,
    )

  def ascent(updates, adv_state, params):
    updates, adv_state = adv_optimizer.update(updates, adv_state, params)
    return jax.tree.map(jnp.negative, updates), adv_state

  def transparent_update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'sam')
    first = state.steps_since_sync == 0
    last = state.steps_since_sync == sync_period - 1
    outer = otu.tree_where(first, params, state.cache)
    adv_updates, adv_state = ascent(updates, state.adv_state, params)
    opt_updates, opt_state = optimizer.update(updates, state.opt_state, outer)
    # Back from the adversarial point to the outer params, then the step.
    opt_updates = jax.tree.map(
        lambda w, p, u: w - p + u, outer, params, opt_updates)
    if reset_state:
      after_sync = adv_optimizer.init(params)
    else:
      after_sync = state.adv_state  # the outer gradient does not enter it
    return otu.tree_where(last, opt_updates, adv_updates), SAMState(
        steps_since_sync=(state.steps_since_sync + 1) % sync_period,
        opt_state=otu.tree_where(last, opt_state, state.opt_state),
        adv_state=otu.tree_where(last, after_sync, adv_state),
        cache=outer,
    )

  def opaque_update_fn(updates, state, params=None, *,
                       grad_fn: Optional[GradFn] = None, **extra_args):
    del extra_args
    checks.require_params(params, 'sam')
    if grad_fn is None:
      raise ValueError(
          'sam: with opaque_mode=True, update needs grad_fn=, a function '
          '(params, adversarial_step) -> gradients.'
      )
    adv_params, adv_state = params, state.adv_state
    for i in range(sync_period - 1):
      step, adv_state = ascent(updates, adv_state, adv_params)
      adv_params = base.apply_updates(adv_params, step)
      updates = grad_fn(adv_params, i)
      if batch_axis_name is not None:
        updates = jax.lax.pmean(updates, axis_name=batch_axis_name)
    if reset_state:
      adv_state = adv_optimizer.init(params)
    updates, opt_state = optimizer.update(updates, state.opt_state, params)
    return updates, SAMState(
        steps_since_sync=jnp.zeros([], jnp.int32), opt_state=opt_state,
        adv_state=adv_state, cache=None,
    )

  update_fn = opaque_update_fn if opaque_mode else transparent_update_fn
  return base.GradientTransformationExtraArgs(init_fn, update_fn)
