"""Wrappers that change where or when an inner transformation applies.

``masked`` and ``freeze`` restrict a transformation to part of the params;
``flatten`` runs it on one concatenated vector; ``conditionally_transform``,
``conditionally_mask`` and ``apply_if_finite`` gate it on a runtime condition;
``lookahead`` wraps a fast optimizer in slow weights.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Union

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = [
    'ApplyIfFiniteState',
    'ConditionFn',
    'ConditionallyMaskState',
    'ConditionallyTransformState',
    'LookaheadParams',
    'LookaheadState',
    'MaskedNode',
    'MaskedState',
    'apply_if_finite',
    'conditionally_mask',
    'conditionally_transform',
    'flatten',
    'freeze',
    'lookahead',
    'masked',
]

MaskOrFn = Union[Any, Callable[[base.Params], Any]]


class MaskedState(NamedTuple):
  """The state of :func:`masked`: the inner state over the selected leaves."""

  inner_state: Any


class MaskedNode(NamedTuple):
  """Stands in for a leaf (or subtree) that a mask leaves out.

  A NamedTuple without fields is a pytree node with no children, so
  ``jax.tree.map`` passes over it: the inner transformation never sees it.
  """


def _is_mask_fn(mask: MaskOrFn) -> bool:
  # A callable mask, or a tree whose every leaf is callable (one per subtree).
  leaves = jax.tree.leaves(jax.tree.map(callable, mask))
  return bool(leaves) and all(leaves)


def _resolve_mask(mask: MaskOrFn, tree: Any) -> Any:
  return mask(tree) if _is_mask_fn(mask) else mask


def _select(tree: Any, mask_tree: Any) -> Any:
  """Keeps the subtrees where the mask is true; the rest become MaskedNode."""
  return jax.tree.map(lambda m, t: t if m else MaskedNode(), mask_tree, tree)


def masked(
    inner: base.GradientTransformation,
    mask: MaskOrFn,
    *,
    mask_compatible_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Applies ``inner`` to the selected leaves; the others pass through as is.

  .. math::
    u_i \leftarrow \begin{cases} \mathrm{inner}(u)_i & m_i \\ u_i & \neg m_i
    \end{cases}

  The inner state exists only for the selected leaves (the others are
  :class:`MaskedNode`), so e.g. ``masked(add_decayed_weights(wd), mask)``
  decays only the weights the mask names.

  Args:
    inner: the transformation to restrict.
    mask: a pytree of booleans with the params' structure (or a prefix of it),
      or a function ``params -> such a pytree``. It must be static (Python
      booleans), since it decides the structure of the inner state.
    mask_compatible_extra_args: also mask every extra keyword argument whose
      tree structure equals that of the updates.

  Returns:
    A :class:`GradientTransformationExtraArgs` with state :class:`MaskedState`.

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019 (the
    common use: no decay on biases and normalization scales).
  """
  inner = base.with_extra_args_support(inner)

  def mask_extra_args(extra_args, updates, mask_tree):
    if not mask_compatible_extra_args:
      return extra_args
    structure = jax.tree.structure(updates)
    return {
        k: _select(v, mask_tree) if jax.tree.structure(v) == structure else v
        for k, v in extra_args.items()
    }

  def init_fn(params):
    if type(params).__name__ == '_ParamsPlaceholder':
      # optax.tree.map_params calls init with a placeholder leaf to find which
      # parts of the state mirror the params; the mask cannot apply to it.
      return MaskedState(inner_state=inner.init(params))
    mask_tree = _resolve_mask(mask, params)
    return MaskedState(inner_state=inner.init(_select(params, mask_tree)))

  def update_fn(updates, state, params=None, **extra_args):
    mask_tree = _resolve_mask(mask, updates)
    extra_args = mask_extra_args(extra_args, updates, mask_tree)
    inner_params = None if params is None else _select(params, mask_tree)
    new_updates, inner_state = inner.update(
        _select(updates, mask_tree), state.inner_state, inner_params,
        **extra_args,
    )
    updates = jax.tree.map(
        lambda m, new, old: new if m else old, mask_tree, new_updates, updates
    )
    return updates, MaskedState(inner_state=inner_state)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def freeze(mask: MaskOrFn) -> base.GradientTransformationExtraArgs:
  r"""Freezes the selected params: their updates become zero.

  .. math::
    u_i \leftarrow \begin{cases} 0 & m_i \\ u_i & \neg m_i \end{cases}

  Place it last in a chain, so that nothing after it (weight decay, say) moves
  the frozen params. This is the transfer-learning tool: freeze a pretrained
  backbone, train the head. The optimizer state of the frozen params is still
  kept; :func:`selective_transform` drops it.

  Args:
    mask: ``True`` for params to freeze: a bool (all or nothing), a pytree of
      bools with the params' structure (or a prefix), or a function
      ``params -> such a pytree``.

  Returns:
    ``masked(set_to_zero(), mask)``.

  References:
    Yosinski et al., How transferable are features in deep neural networks?,
    2014.
  """
  return masked(base.set_to_zero(), mask)


def flatten(inner: base.GradientTransformation) -> base.GradientTransformationExtraArgs:
  """Runs ``inner`` on one vector: all leaves raveled and concatenated.

  Fewer, larger arrays can be faster for optimizers with many small leaves.
  The inner state is that of a single vector; the updates are split and
  reshaped back to the updates' structure.

  Args:
    inner: the transformation to run on the flat vector.
  """
  inner = base.with_extra_args_support(inner)

  def ravel(tree):
    return jnp.concatenate([jnp.reshape(x, [-1]) for x in jax.tree.leaves(tree)])

  def unravel(like, flat):
    leaves, treedef = jax.tree.flatten(like)
    ends = np.cumsum([np.size(x) for x in leaves])[:-1]
    pieces = jnp.split(flat, ends)
    return jax.tree.unflatten(
        treedef, [jnp.reshape(f, jnp.shape(x)) for f, x in zip(pieces, leaves)]
    )

  def init_fn(params):
    return inner.init(ravel(params))

  def update_fn(updates, state, params=None, **extra_args):
    flat_params = None if params is None else ravel(params)
    flat_updates, state = inner.update(
        ravel(updates), state, flat_params, **extra_args
    )
    return unravel(updates, flat_updates), state

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ConditionFn(Protocol):
  def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array:
    """Given the int32 number of previous updates, whether to transform now."""


class ConditionallyTransformState(NamedTuple):
  inner_state: Any
  step: jax.Array  # int32, number of updates so far


class ConditionallyMaskState(NamedTuple):
  step: jax.Array  # int32, number of updates so far
  inner_state: Any


def _gated(inner, should_transform_fn, forward_extra_args, on_reject):
  """``update -> (updates, inner_state)`` under ``lax.cond`` on the condition."""
  inner = base.with_extra_args_support(inner)

  def gated_update(updates, inner_state, step, params, extra_args):
    condition_args = extra_args if forward_extra_args else {}
    return jax.lax.cond(
        should_transform_fn(step, **condition_args),
        lambda: inner.update(updates, inner_state, params, **extra_args),
        lambda: (on_reject(updates), inner_state),
    )

  return inner, gated_update


def conditionally_transform(
    inner: base.GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Runs ``inner`` only at the steps the condition selects.

  .. math::
    (u, s) \leftarrow \begin{cases} \mathrm{inner}(u, s) & f(t) \\
    (u, s) & \text{otherwise} \end{cases}

  where ``t`` counts previous calls (0 first). On rejected steps the updates
  pass through unchanged and the inner state is kept.

  Args:
    inner: the transformation to gate.
    should_transform_fn: ``f(step, **extra_args) -> bool`` scalar.
    forward_extra_args: also pass the update's extra arguments to ``f``.
  """
  inner, gated = _gated(inner, should_transform_fn, forward_extra_args, lambda u: u)

  def init_fn(params):
    return ConditionallyTransformState(
        inner_state=inner.init(params), step=jnp.zeros([], jnp.int32)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates, inner_state = gated(
        updates, state.inner_state, state.step, params, extra_args
    )
    return updates, ConditionallyTransformState(
        inner_state, otu.safe_increment(state.step)
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def conditionally_mask(
    inner: base.GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Runs ``inner`` at the steps the condition selects; zero updates otherwise.

  .. math::
    (u, s) \leftarrow \begin{cases} \mathrm{inner}(u, s) & f(t) \\
    (0, s) & \text{otherwise} \end{cases}

  Args:
    inner: the transformation to gate.
    should_transform_fn: ``f(step, **extra_args) -> bool`` scalar, ``step``
      counting previous calls from 0.
    forward_extra_args: also pass the update's extra arguments to ``f``.
  """
  inner, gated = _gated(
      inner, should_transform_fn, forward_extra_args, otu.tree_zeros_like
  )

  def init_fn(params):
    return ConditionallyMaskState(
        step=jnp.zeros([], jnp.int32), inner_state=inner.init(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    updates, inner_state = gated(
        updates, state.inner_state, state.step, params, extra_args
    )
    return updates, ConditionallyMaskState(
        step=otu.safe_increment(state.step), inner_state=inner_state
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class ApplyIfFiniteState(NamedTuple):
  """State of :func:`apply_if_finite`.

  Attributes:
    notfinite_count: int32, consecutive non-finite updates so far (0 after a
      finite one).
    last_finite: bool, whether the last update was finite.
    total_notfinite: int32, all non-finite updates since init.
    inner_state: the state of the wrapped transformation.
  """

  notfinite_count: jax.Array
  last_finite: jax.Array
  total_notfinite: jax.Array
  inner_state: Any


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def apply_if_finite(
    inner: base.GradientTransformation, max_consecutive_errors: int
) -> base.GradientTransformationExtraArgs:
  r"""Skips updates that contain a NaN or an infinity, up to a limit.

  With ``n`` the number of consecutive non-finite updates (this one included),

  .. math::
    (u, s) \leftarrow \begin{cases} \mathrm{inner}(u, s) & u \text{ finite or }
    n > N \\ (0, s) & \text{otherwise} \end{cases}

  so a skipped step leaves the params and the inner state unchanged; after more
  than ``N`` bad steps in a row the update is let through.

  Args:
    inner: the transformation to protect.
    max_consecutive_errors: ``N >= 0``.

  References:
    Micikevicius et al., Mixed precision training, 2018 (skipping steps whose
    gradients overflow).
  """
  checks.check_non_negative(
      'max_consecutive_errors', max_consecutive_errors, fn='apply_if_finite'
  )
  inner = base.with_extra_args_support(inner)

  def init_fn(params):
    return ApplyIfFiniteState(
        notfinite_count=jnp.zeros([], jnp.int32),
        last_finite=jnp.array(True, jnp.bool_),
        total_notfinite=jnp.zeros([], jnp.int32),
        inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    finite = _all_finite(updates)
    notfinite_count = jnp.where(
        finite, jnp.zeros([], jnp.int32), otu.safe_increment(state.notfinite_count)
    )
    new_updates, inner_state = jax.lax.cond(
        jnp.logical_or(finite, notfinite_count > max_consecutive_errors),
        lambda: inner.update(updates, state.inner_state, params, **extra_args),
        lambda: (otu.tree_zeros_like(updates), state.inner_state),
    )
    total = jnp.where(
        finite, state.total_notfinite, otu.safe_increment(state.total_notfinite)
    )
    return new_updates, ApplyIfFiniteState(
        notfinite_count=notfinite_count,
        last_finite=finite,
        total_notfinite=total,
        inner_state=inner_state,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


class LookaheadState(NamedTuple):
  """State of :func:`lookahead`.

  Attributes:
    fast_state: the fast optimizer's state.
    steps_since_sync: int32, fast steps since the last synchronisation.
  """

  fast_state: Any
  steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
  """Fast weights (take gradients here) and slow weights (evaluate these)."""

  fast: base.Params
  slow: base.Params

  @classmethod
  def init_synced(cls, params: base.Params) -> 'LookaheadParams':
    """Both copies equal to ``params``."""
    return cls(fast=params, slow=params)


def _lookahead_updates(updates, sync, params, slow_step_size):
  # diff = (fast after this step) - slow; at a sync the slow weights move
  # alpha * diff and the fast weights are reset onto them.
  diff = jax.tree.map(lambda f, u, s: f + u - s, params.fast, updates, params.slow)
  slow = jax.tree.map(lambda d: slow_step_size * sync * d, diff)
  fast = jax.tree.map(
      lambda u, d: u - sync * (1 - slow_step_size) * d, updates, diff
  )
  return LookaheadParams(fast=fast, slow=slow)


def lookahead(
    fast_optimizer: base.GradientTransformation,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Lookahead: ``k`` fast steps forward, then one step back towards the slow weights.

  .. math::
    \phi_{t+1} = \phi_t + \mathrm{fast}(g_t), \qquad
    \text{every } k \text{ steps: } \theta \leftarrow \theta + \alpha
    (\phi - \theta), \; \phi \leftarrow \theta

  The params are :class:`LookaheadParams`; gradients are taken at ``fast``.
  The returned updates are a :class:`LookaheadParams` too: apply them as they
  are (any change breaks the synchronisation).

  Args:
    fast_optimizer: the inner optimizer of the fast weights.
    sync_period: ``k >= 1``, fast steps between synchronisations.
    slow_step_size: ``alpha`` in ``[0, 1]``.
    reset_state: re-initialise the fast optimizer's state at each sync.

  References:
    Zhang et al., Lookahead optimizer: k steps forward, 1 step back, 2019.
  """
  checks.check_range('sync_period', sync_period, 1, None, fn='lookahead')
  checks.check_range('slow_step_size', slow_step_size, 0.0, 1.0, fn='lookahead')
  fast_optimizer = base.with_extra_args_support(fast_optimizer)

  def init_fn(params):
    fast = getattr(params, 'fast', None)
    if fast is None:
      logging.warning(
          'lookahead: params have no `fast` field; treating them as the fast '
          'params. Pass LookaheadParams.init_synced(params).'
      )
      fast = params
    return LookaheadState(
        fast_state=fast_optimizer.init(fast),
        steps_since_sync=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    checks.require_params(params, 'lookahead')
    updates, fast_state = fast_optimizer.update(
        updates, state.fast_state, params.fast, **extra_args
    )
    sync = state.steps_since_sync == (sync_period - 1)
    updates = _lookahead_updates(updates, sync, params, slow_step_size)
    if reset_state:
      fresh = fast_optimizer.init(params.fast)
      fast_state = jax.tree.map(
          lambda cur, new: (1 - sync) * cur + sync * new, fast_state, fresh
      )
    steps = (state.steps_since_sync + 1) % sync_period
    return updates, LookaheadState(fast_state, steps)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)
