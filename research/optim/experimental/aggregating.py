"""Aggregators: transformations from per-example updates to one update.

An :class:`Aggregator` takes updates with leading per-example axes,
``[*batch, *params_shape]`` (from ``jax.vmap(jax.grad(loss))``), and returns
one update shaped like the params. :func:`process` runs a per-example
preprocessor, an aggregator and an ordinary optimizer in sequence; an
aggregator that accumulates microbatches holds the optimizer back (its state's
``ready`` flag) until a full batch has been seen. Names and semantics follow
Optax 0.2.8's ``optax.experimental.aggregating``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol, Sequence, Union

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import tree as otu

__all__ = [
    'AccumulateAvgUpdatesState',
    'AggregatedUpdates',
    'Aggregator',
    'AggregatorUpdateFn',
    'MaybeAxis',
    'PerElementMeanAndSumSqDiffGradsState',
    'PerElementMeanAndVarianceEMAState',
    'PerElementUpdates',
    'accumulate_avg_updates',
    'add_mean_variance_to_opt',
    'average_incrementally_updates',
    'average_per_element_updates',
    'get_batch_size_from_per_elt_updates',
    'get_per_element_mean_and_sum_sq_diff_grads',
    'get_unbiased_mean_and_variance_ema',
    'process',
    'track_per_element_mean_and_variance_with_ema',
]

PerElementUpdates = Any
AggregatedUpdates = Any
MaybeAxis = Union[int, Sequence[int], None]


class AggregatorUpdateFn(Protocol):

  def __call__(
      self, per_elt_updates: PerElementUpdates, state: Any, params: Any = None,
      **extra_args: Any,
  ) -> tuple[AggregatedUpdates, Any]:
    """Per-example updates in, one aggregated update (and the state) out."""


class Aggregator(base.GradientTransformationExtraArgs):
  """A transformation whose ``update`` takes per-example updates.

  Same fields as a transformation; the distinct type tells :func:`process`
  and the user that the input has leading per-example axes.
  """

  init: base.TransformInitFn
  update: AggregatorUpdateFn


def process(
    preprocessor: base.GradientTransformation,
    aggregator: Union[base.GradientTransformation, Aggregator],
    postprocessor: base.GradientTransformation,
    aggregator_has_aux: bool = False,
):
  r"""``postprocessor(aggregator(preprocessor(per-example grads)))``.

  .. math::
    u = P\big(A(\{T(g_i)\}_i)\big), \quad \text{P skipped (zeros) while }
    A\text{'s state has } \mathrm{ready} = \mathrm{False}

  Args:
    preprocessor: per-example updates to per-example updates (e.g. clipping).
    aggregator: per-example updates to one update.
    postprocessor: an ordinary optimizer on the aggregated update.
    aggregator_has_aux: the aggregator returns ``(update, aux dict)``; the
      dict is passed to the postprocessor as extra keyword arguments.

  Returns:
    An :class:`Aggregator` if ``aggregator`` is one, else a transformation;
    its state is ``(pre, aggregator, post)`` states.

  References:
    Abadi et al., Deep learning with differential privacy, 2016 (clip each
    example, then aggregate).
  """

  def init_fn(params):
    return (preprocessor.init(params), aggregator.init(params),
            postprocessor.init(params))

  def update_fn(per_elt_grads, state, params=None, **extra_args):
    pre_state, agg_state, post_state = state
    per_elt_updates, pre_state = preprocessor.update(
        per_elt_grads, pre_state, params, **extra_args
    )
    aggregated, agg_state = aggregator.update(
        per_elt_updates, agg_state, params, **extra_args
    )
    if aggregator_has_aux:
      aggregated, aux = aggregated
      extra_args = extra_args | aux
    ready = otu.tree_get(agg_state, 'ready', True)
    updates, post_state = jax.lax.cond(
        ready,
        lambda g, s, p, kw: postprocessor.update(g, s, p, **kw),
        lambda g, s, *_: (otu.tree_zeros_like(aggregated), s),
        aggregated, post_state, params, extra_args,
    )
    return updates, (pre_state, agg_state, post_state)

  if isinstance(aggregator, Aggregator):
    return Aggregator(init_fn, update_fn)
  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def average_per_element_updates(per_elt_axis: Union[int, Sequence[int]] = 0) -> Aggregator:
  """The mean over the per-example axis (or axes): ``u = mean_i g_i``."""

  def update_fn(per_elt_updates, state, params=None):
    del params
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=per_elt_axis), per_elt_updates)
    return mean, state

  return Aggregator(base.init_empty_state, update_fn)


class AccumulateAvgUpdatesState(NamedTuple):
  micro_step: jax.Array  # int
  ready: jax.Array  # bool
  avg_grad: Any


def _emit_when_full(full, outputs, full_state, partial_state):
  """``(outputs, full_state)`` on the last microbatch, else zeros and the
  partial state."""
  return otu.tree_where(
      full, (outputs, full_state), (otu.tree_zeros_like(outputs), partial_state)
  )


def accumulate_avg_updates(accumulation_steps: int) -> base.GradientTransformation:
  r"""Averages ``accumulation_steps`` successive updates, emitting every k-th.

  .. math::
    a_j = a_{j-1} + (u_j - a_{j-1}) / j, \qquad
    \text{output } a_k \text{ at } j = k \text{ (then reset), else } 0

  The state's ``ready`` is true on the emitting step (what :func:`process`
  reads). ``accumulation_steps == 1`` is the identity.

  Args:
    accumulation_steps: ``k >= 1``.

  References:
    Ott et al., Scaling neural machine translation, 2018 (accumulating
    gradients over microbatches).
  """
  if accumulation_steps < 1:
    raise ValueError(
        'accumulation_steps must be larger than or equal to 1; got '
        f'{accumulation_steps}.'
    )
  if accumulation_steps == 1:
    return base.identity()

  def init_fn(params):
    return AccumulateAvgUpdatesState(
        jnp.asarray(0), jnp.asarray(False), otu.tree_zeros_like(params)
    )

  def update_fn(updates, state, params=None):
    del params
    step = state.micro_step + 1
    avg = jax.tree.map(lambda u, a: a + (u - a) / step, updates, state.avg_grad)
    full_state = AccumulateAvgUpdatesState(
        jnp.asarray(0), jnp.asarray(True), otu.tree_zeros_like(avg)
    )
    partial_state = AccumulateAvgUpdatesState(step, jnp.asarray(False), avg)
    return _emit_when_full(step == accumulation_steps, avg, full_state, partial_state)

  return base.GradientTransformation(init_fn, update_fn)


def average_incrementally_updates(per_elt_axis: MaybeAxis, accumulation_steps: int):
  """The mean over the examples (unless ``per_elt_axis`` is None), then over
  ``accumulation_steps`` microbatches (:func:`accumulate_avg_updates`)."""
  if per_elt_axis is None:
    return accumulate_avg_updates(accumulation_steps)
  both = base.chain(
      average_per_element_updates(per_elt_axis),
      accumulate_avg_updates(accumulation_steps),
  )
  return Aggregator(both.init, both.update)


def get_batch_size_from_per_elt_updates(per_elt_updates: Any, per_elt_axis) -> int:
  """The number of examples: the size of the per-example axis (or axes).

  Raises:
    ValueError: if the leaves disagree.
  """

  def size(u):
    if isinstance(per_elt_axis, int):
      return u.shape[per_elt_axis]
    return math.prod(u.shape[i] for i in per_elt_axis)

  sizes = jax.tree.leaves(jax.tree.map(size, per_elt_updates))
  if any(s != sizes[0] for s in sizes):
    raise ValueError(
        f'Per-element updates must have the same batch size. Got: {sizes}'
    )
  return sizes[0]


class PerElementMeanAndSumSqDiffGradsState(NamedTuple):
  micro_step: jax.Array  # int
  ready: jax.Array  # bool
  mean_grads: Any
  sum_sq_diff_grads: Any


def _batch_mean_and_sum_sq_diff(per_elt_updates, per_elt_axis):
  mean = jax.tree.map(
      lambda x: jnp.mean(x, axis=per_elt_axis, keepdims=True), per_elt_updates
  )
  sum_sq = jax.tree.map(
      lambda x, m: jnp.sum(jnp.square(x - m), axis=per_elt_axis),
      per_elt_updates, mean,
  )
  return jax.tree.map(lambda m: m.squeeze(axis=per_elt_axis), mean), sum_sq


def get_per_element_mean_and_sum_sq_diff_grads(
    per_elt_axis: Union[int, Sequence[int]] = 0, accumulation_steps: int = 1
) -> Aggregator:
  r"""The mean of the per-example gradients and their summed squared
  deviations, pooled over ``accumulation_steps`` microbatches.

  .. math::
    \bar g = \frac{1}{n} \sum_i g_i, \qquad S = \sum_i (g_i - \bar g)^2

  pooled across microbatches with Chan et al.'s update
  ``S <- S + S_b + delta^2 n_b j / (j + 1)`` (``delta`` the difference of the
  means, ``j`` microbatches seen). Output ``(mean, {'sum_sq_diff_grads': S,
  'sample_size': n})``; use with ``process(..., aggregator_has_aux=True)``.

  Args:
    per_elt_axis: the per-example axis (or axes).
    accumulation_steps: microbatches per emitted update.

  References:
    Chan, Golub & LeVeque, Updating formulae and a pairwise algorithm for
    computing sample variances, 1979.
  """

  def one_batch(per_elt_updates, state, params):
    del params
    n = get_batch_size_from_per_elt_updates(per_elt_updates, per_elt_axis)
    mean, sum_sq = _batch_mean_and_sum_sq_diff(per_elt_updates, per_elt_axis)
    return (mean, {'sum_sq_diff_grads': sum_sq, 'sample_size': n}), state

  if accumulation_steps == 1:
    return Aggregator(base.init_empty_state, one_batch)

  def init_fn(params):
    return PerElementMeanAndSumSqDiffGradsState(
        jnp.asarray(0, jnp.int32), jnp.asarray(False),
        otu.tree_zeros_like(params), otu.tree_zeros_like(params),
    )

  def update_fn(per_elt_updates, state, params=None):
    del params
    n = get_batch_size_from_per_elt_updates(per_elt_updates, per_elt_axis)
    step = state.micro_step + 1
    batch_mean, batch_sum_sq = _batch_mean_and_sum_sq_diff(
        per_elt_updates, per_elt_axis
    )
    delta = otu.tree_sub(batch_mean, state.mean_grads)
    mean = jax.tree.map(lambda a, d: a + d / step, state.mean_grads, delta)
    weight = state.micro_step * n / step
    sum_sq = jax.tree.map(
        lambda a, s, d: a + s + d**2 * weight,
        state.sum_sq_diff_grads, batch_sum_sq, delta,
    )
    outputs = (mean, {'sum_sq_diff_grads': sum_sq, 'sample_size': n * step})
    full_state = PerElementMeanAndSumSqDiffGradsState(
        jnp.asarray(0, jnp.int32), jnp.asarray(True),
        otu.tree_zeros_like(mean), otu.tree_zeros_like(sum_sq),
    )
    partial_state = PerElementMeanAndSumSqDiffGradsState(
        step, jnp.asarray(False), mean, sum_sq
    )
    return _emit_when_full(step == accumulation_steps, outputs, full_state,
                           partial_state)

  return Aggregator(init_fn, update_fn)


class PerElementMeanAndVarianceEMAState(NamedTuple):
  count: jax.Array  # int
  ema_decay: jax.Array  # float
  mean_grads_ema: Any
  variance_grads_ema: Any


def track_per_element_mean_and_variance_with_ema(
    ema_decay: jax.typing.ArrayLike = 0.9,
) -> base.GradientTransformationExtraArgs:
  r"""EMAs of the gradient mean and of the per-example variance ``S / (n - 1)``.

  .. math::
    \mu_t = \beta \mu_{t-1} + (1 - \beta) \bar g_t, \qquad
    \sigma^2_t = \beta \sigma^2_{t-1} + (1 - \beta) \frac{S_t}{n_t - 1}

  Reads ``sum_sq_diff_grads`` and ``sample_size`` from the extra arguments
  (given by :func:`get_per_element_mean_and_sum_sq_diff_grads` through
  :func:`process`); the updates pass unchanged. Debiased values:
  :func:`get_unbiased_mean_and_variance_ema`.

  Args:
    ema_decay: ``beta``.

  References:
    McCandlish et al., An empirical model of large-batch training, 2018
    (tracking the gradient noise).
  """

  def init_fn(params):
    return PerElementMeanAndVarianceEMAState(
        jnp.zeros([], jnp.int32), jnp.asarray(ema_decay),
        otu.tree_zeros_like(params), otu.tree_zeros_like(params),
    )

  def update_fn(updates, state, params=None, *, sum_sq_diff_grads, sample_size):
    del params
    ema = lambda x, y: (1.0 - ema_decay) * x + ema_decay * y  # noqa: E731
    mean = jax.tree.map(ema, updates, state.mean_grads_ema)
    variance = otu.tree_scale(1 / (sample_size - 1), sum_sq_diff_grads)
    variance = jax.tree.map(ema, variance, state.variance_grads_ema)
    return updates, state._replace(
        count=otu.safe_increment(state.count),
        mean_grads_ema=mean,
        variance_grads_ema=variance,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def get_unbiased_mean_and_variance_ema(state: Any) -> tuple[Any, Any]:
  """The EMAs of :func:`track_per_element_mean_and_variance_with_ema` in
  ``state``, each divided by ``1 - beta^t``.

  Raises:
    ValueError: if ``state`` holds no ``PerElementMeanAndVarianceEMAState``.
  """
  found = otu.tree_get(state, 'PerElementMeanAndVarianceEMAState', None)
  if found is None:
    raise ValueError(
        'State must have PerElementMeanAndVarianceEMAState to compute unbiased'
        ' mean and variance EMA.'
    )
  debias = lambda x: x / (1 - found.ema_decay**found.count)  # noqa: E731
  return (jax.tree.map(debias, found.mean_grads_ema),
          jax.tree.map(debias, found.variance_grads_ema))


def add_mean_variance_to_opt(
    opt: base.GradientTransformation,
    ema_decay: jax.typing.ArrayLike = 0.9,
    per_elt_axis: Union[int, Sequence[int]] = 0,
    accumulation_steps: int = 1,
):
  """``opt`` on the mean of per-example gradients, tracking their mean and
  variance EMAs in the state (read them with
  :func:`get_unbiased_mean_and_variance_ema`).

  References:
    McCandlish et al., An empirical model of large-batch training, 2018.
  """
  return process(
      preprocessor=base.identity(),
      aggregator=get_per_element_mean_and_sum_sq_diff_grads(
          per_elt_axis, accumulation_steps
      ),
      postprocessor=base.chain(
          track_per_element_mean_and_variance_with_ema(ema_decay), opt
      ),
      aggregator_has_aux=True,
  )
