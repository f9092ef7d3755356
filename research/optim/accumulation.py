"""Gradient accumulation: one optimizer step from several mini-batches.

``MultiSteps`` accumulates ``k`` gradients and then runs the wrapped optimizer
once, so its state advances once per ``k`` mini-steps (equal to a ``k`` times
larger batch). ``apply_every`` only delays the updates, so the transforms
before it in a chain still advance every mini-step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'ApplyEvery',
    'MultiSteps',
    'MultiStepsState',
    'ShouldSkipUpdateFunction',
    'apply_every',
    'skip_large_updates',
    'skip_not_finite',
]


class ApplyEvery(NamedTuple):
  """State of :func:`apply_every`."""

  count: jax.Array  # int32, mini-steps since the last emission, in [0, k)
  grad_acc: base.Updates


def apply_every(k: int = 1) -> base.GradientTransformationExtraArgs:
  r"""Sums the updates over ``k`` calls and emits the sum on every ``k``-th call.

  .. math::
    a_t = g_t + [t \bmod k \neq 0]\, a_{t-1}, \qquad
    u_t = [t \bmod k = k - 1]\, a_t

  (``t`` from 0), so the updates are zero in between.

  Args:
    k: ``k >= 1``.

  References:
    Ott et al., Scaling neural machine translation, 2018 (delayed updates).
  """
  checks.check_range('k', k, 1, None, fn='apply_every')

  def init_fn(params):
    return ApplyEvery(
        count=jnp.zeros([], jnp.int32), grad_acc=otu.tree_zeros_like(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    phase = state.count % k
    keep = phase != 0
    grad_acc = jax.tree.map(lambda g, a: keep * a + g, updates, state.grad_acc)
    emit = phase == (k - 1)
    updates = jax.tree.map(lambda a: emit * a, grad_acc)
    count = otu.safe_increment(state.count) % k
    return updates, ApplyEvery(count=count, grad_acc=grad_acc)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ShouldSkipUpdateFunction(Protocol):

  def __call__(
      self, updates: base.Updates, gradient_step: jax.Array,
      params: Optional[base.Params],
  ) -> tuple[jax.Array, Any]:
    """Returns ``(skip, info)``: a bool scalar, and a pytree stored in the
    state's ``skip_state`` (for monitoring)."""


def skip_not_finite(updates, gradient_step, params):
  """Skips a mini-step whose updates contain a NaN or an infinity.

  Returns ``(skip, {'should_skip': skip, 'num_not_finite': n})``, ``n`` the
  number of non-finite elements.
  """
  del gradient_step, params
  counts = [jnp.sum(~jnp.isfinite(x)) for x in jax.tree.leaves(updates)]
  num_not_finite = jnp.sum(jnp.array(counts))
  skip = num_not_finite > 0
  return skip, {'should_skip': skip, 'num_not_finite': num_not_finite}


def skip_large_updates(updates, gradient_step, params, max_squared_norm):
  """Skips a mini-step with ``||u||^2 >= max_squared_norm`` (or a NaN norm).

  Bind ``max_squared_norm`` with ``functools.partial``. Returns
  ``(skip, {'should_skip': skip, 'norm_squared': ||u||^2})``.
  """
  del gradient_step, params
  norm_sq = jnp.sum(jnp.array([jnp.sum(x**2) for x in jax.tree.leaves(updates)]))
  skip = jnp.logical_not(norm_sq < max_squared_norm)
  return skip, {'should_skip': skip, 'norm_squared': norm_sq}


class MultiStepsState(NamedTuple):
  """State of :class:`MultiSteps`.

  Attributes:
    mini_step: int32, mini-steps accumulated towards the next optimizer step.
    gradient_step: int32, optimizer steps taken.
    inner_opt_state: the wrapped optimizer's state.
    acc_grads: the running mean (or sum) of this cycle's gradients.
    skip_state: what ``should_skip_update_fn`` returned last.
  """

  mini_step: jax.Array
  gradient_step: jax.Array
  inner_opt_state: Any
  acc_grads: Any
  skip_state: Any = ()


def _never_skip(*args, **kwargs):
  del args, kwargs
  return jnp.array(False, jnp.bool_), ()


class MultiSteps:
  r"""Accumulates gradients over ``k`` mini-steps, then steps the inner optimizer.

  With ``j`` the mini-step in the cycle (0 to ``k - 1``),

  .. math::
    a_j = a_{j-1} + (g_j - a_{j-1}) / (j + 1) \;\; (\text{mean; or }
    a_{j-1} + g_j), \qquad
    u = \begin{cases} \mathrm{opt}(a_{k-1}) & j = k - 1 \\ 0 & \text{otherwise}
    \end{cases}

  The inner optimizer's state advances only on the ``k``-th mini-step, so the
  params change once every ``k`` calls. ``k`` may follow a schedule of the
  optimizer step count (growing batch sizes).

  Args:
    opt: the inner optimizer.
    every_k_schedule: ``k >= 1``, an int or a function
      ``gradient_step -> k``.
    use_grad_mean: average the gradients (``True``) or sum them.
    should_skip_update_fn: ``f(updates, gradient_step, params) -> (skip,
      info)``; a skipped mini-step leaves the state as it was (except
      ``skip_state``) and returns zero updates. E.g. :func:`skip_not_finite`.
    accumulator_dtype: dtype of the accumulated gradients.

  References:
    Ott et al., Scaling neural machine translation, 2018; Smith et al., Don't
    decay the learning rate, increase the batch size, 2018.
  """

  def __init__(
      self,
      opt: base.GradientTransformation,
      every_k_schedule: Union[int, Callable[[jax.Array], jax.Array]],
      use_grad_mean: bool = True,
      should_skip_update_fn: Optional[ShouldSkipUpdateFunction] = None,
      accumulator_dtype: Any = jnp.float32,
  ):
    self._opt = base.with_extra_args_support(opt)
    if callable(every_k_schedule):
      self._every_k_schedule = every_k_schedule
    else:
      checks.check_range(
          'every_k_schedule', every_k_schedule, 1, None, fn='MultiSteps'
      )
      self._every_k_schedule = lambda step: every_k_schedule
    self._use_grad_mean = use_grad_mean
    self._accumulator_dtype = (
        None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)
    )
    self._should_skip_update_fn = should_skip_update_fn or _never_skip

  @property
  def inner_opt(self):
    return self._opt

  def _accumulate(self, grad, acc, n):
    if self._use_grad_mean:
      return acc + (grad - acc) / (n + 1)
    return grad + acc

  def init(self, params: base.Params) -> MultiStepsState:
    gradient_step = jnp.zeros([], jnp.int32)
    _, skip_state = self._should_skip_update_fn(
        otu.tree_zeros_like(params), gradient_step, params
    )
    return MultiStepsState(
        mini_step=jnp.zeros([], jnp.int32),
        gradient_step=gradient_step,
        inner_opt_state=self._opt.init(params),
        acc_grads=otu.tree_zeros_like(params, dtype=self._accumulator_dtype),
        skip_state=skip_state,
    )

  def update(self, updates, state, params=None, **extra_args):
    """Accumulates ``updates``; returns the inner update on every ``k``-th call."""
    k_steps = self._every_k_schedule(state.gradient_step)
    skip, skip_state = self._should_skip_update_fn(
        updates, state.gradient_step, params
    )
    skip = jnp.asarray(skip)
    if (skip.dtype, skip.shape) != (jnp.bool_, ()):
      raise ValueError(
          'MultiSteps: should_skip_update_fn must return a bool scalar first; '
          f'got dtype {skip.dtype} and shape {skip.shape}.'
      )

    def accept(updates, state, params):
      acc_grads = jax.tree.map(
          lambda g, a: self._accumulate(g, a, state.mini_step),
          updates, state.acc_grads,
      )
      # The inner update runs every mini-step; only the k-th result is kept,
      # which keeps the control flow free of data-dependent branches.
      inner_updates, inner_state = self._opt.update(
          otu.tree_cast_like(acc_grads, updates), state.inner_opt_state,
          params=params, **extra_args,
      )
      emit = state.mini_step == (k_steps - 1)
      new_state = MultiStepsState(
          mini_step=otu.safe_increment(state.mini_step) % k_steps,
          gradient_step=emit * otu.safe_increment(state.gradient_step)
          + (1 - emit) * state.gradient_step,
          inner_opt_state=jax.tree.map(
              lambda old, new: jnp.where(emit, new, old).astype(old.dtype),
              state.inner_opt_state, inner_state,
          ),
          acc_grads=jax.tree.map(
              lambda a: ((1 - emit) * a).astype(self._accumulator_dtype or a.dtype),
              acc_grads,
          ),
          skip_state=skip_state,
      )
      return jax.tree.map(lambda u: emit * u, inner_updates), new_state

    def reject(updates, state, params):
      # Zeros shaped like the inner optimizer's output, which need not have the
      # structure of the input (e.g. lookahead returns fast and slow parts).
      arrays = {k: v for k, v in extra_args.items() if isinstance(v, jax.Array)}
      others = {k: v for k, v in extra_args.items() if k not in arrays}
      shapes, _ = jax.eval_shape(
          functools.partial(self._opt.update, **others),
          otu.tree_cast_like(state.acc_grads, updates), state.inner_opt_state,
          params=params, **arrays,
      )
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
      return zeros, state._replace(skip_state=skip_state)

    return jax.lax.cond(skip, reject, accept, updates, state, params)

  def has_updated(self, state: MultiStepsState) -> jax.Array:
    """True right after a step of the inner optimizer."""
    return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

  def gradient_transformation(self) -> base.GradientTransformationExtraArgs:
    """This wrapper as a plain ``(init, update)`` pair, e.g. to put in a chain."""
    return base.GradientTransformationExtraArgs(init=self.init, update=self.update)
