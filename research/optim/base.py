"""Gradient transformations: the protocol and the base combinators.

A gradient transformation is a pair of pure functions

    state = init(params)
    updates, state = update(updates, state, params=None, **extra_args)

bundled in a NamedTuple. Names and semantics follow Optax 0.2.8, so these
objects mix with Optax's in either library's ``chain``.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

Params = Any
Updates = Any
OptState = Any
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


class TransformInitFn(Protocol):
  def __call__(self, params: Params) -> OptState:
    """Returns the initial state for ``params``."""


class TransformUpdateFn(Protocol):
  def __call__(
      self, updates: Updates, state: OptState, params: Optional[Params] = None
  ) -> tuple[Updates, OptState]:
    """Transforms ``updates`` and returns them with the new state."""


class TransformUpdateExtraArgsFn(Protocol):
  def __call__(
      self,
      updates: Updates,
      state: OptState,
      params: Optional[Params] = None,
      **extra_args: Any,
  ) -> tuple[Updates, OptState]:
    """Like :class:`TransformUpdateFn`, with keyword arguments such as ``value``."""


class GradientTransformation(NamedTuple):
  """A pair of pure functions ``(init, update)``; all state lives in the state."""

  init: TransformInitFn
  update: TransformUpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
  """A transformation whose ``update`` accepts extra keyword arguments.

  Transforms that need e.g. the loss ``value`` read it from ``**extra_args``;
  all others accept and ignore any extra keyword argument.
  """

  update: TransformUpdateExtraArgsFn


class EmptyState(NamedTuple):
  """The state of a stateless transformation."""


def init_empty_state(params: Params) -> EmptyState:
  del params
  return EmptyState()


def identity() -> GradientTransformationExtraArgs:
  """Leaves the updates unchanged: ``u <- u``."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return updates, state

  return GradientTransformationExtraArgs(init_empty_state, update_fn)


def set_to_zero() -> GradientTransformationExtraArgs:
  """Maps the updates to zeros, so that the params stay where they are."""

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    return jax.tree.map(jnp.zeros_like, updates), state

  return GradientTransformationExtraArgs(init_empty_state, update_fn)


def stateless(
    f: Callable[[Updates, Optional[Params]], Updates],
) -> GradientTransformationExtraArgs:
  """A stateless transformation from ``f(updates, params) -> updates``."""

  def update_fn(updates, state, params=None, **extra_args):
    del state, extra_args
    return f(updates, params), EmptyState()

  return GradientTransformationExtraArgs(init_empty_state, update_fn)


def stateless_with_tree_map(
    f: Callable[[jax.Array, Optional[jax.Array]], jax.Array],
) -> GradientTransformationExtraArgs:
  """A stateless transformation from a per-leaf ``f(update, param) -> update``."""

  def update_fn(updates, state, params=None, **extra_args):
    del state, extra_args
    if params is None:
      return jax.tree.map(lambda u: f(u, None), updates), EmptyState()
    return jax.tree.map(f, updates, params), EmptyState()

  return GradientTransformationExtraArgs(init_empty_state, update_fn)


def with_extra_args_support(
    tx: GradientTransformation,
) -> GradientTransformationExtraArgs:
  """Wraps ``tx`` so that its ``update`` accepts and ignores extra arguments.

  Transformations that already take extra arguments (ours, or Optax's
  ``GradientTransformationExtraArgs``) are returned unchanged.
  """
  if _accepts_extra_args(tx):
    return tx

  def update(updates, state, params=None, **extra_args):
    del extra_args
    return tx.update(updates, state, params)

  return GradientTransformationExtraArgs(tx.init, update)


def _accepts_extra_args(tx) -> bool:
  # Optax's GradientTransformationExtraArgs is a different class with the same
  # contract; recognise it by name so that mixing the libraries keeps extras.
  return any(
      cls.__name__ == 'GradientTransformationExtraArgs'
      for cls in type(tx).__mro__
  )


def chain(*args: GradientTransformation) -> GradientTransformationExtraArgs:
  """Applies transformations in sequence: ``u <- t_n(...t_2(t_1(u)))``.

  The state is the tuple of the states of ``args``. Extra keyword arguments
  are passed to every transformation that accepts them.
  """
  transforms = [with_extra_args_support(t) for t in args]

  def init_fn(params):
    return tuple(t.init(params) for t in transforms)

  def update_fn(updates, state, params=None, **extra_args):
    if len(state) != len(transforms):
      raise ValueError(
          f'chain: got a state of {len(state)} parts for {len(transforms)} '
          'transformations; initialise the state with this chain\'s init.'
      )
    new_state = []
    for t, s in zip(transforms, state):
      updates, s = t.update(updates, s, params, **extra_args)
      new_state.append(s)
    return updates, tuple(new_state)

  return GradientTransformationExtraArgs(init_fn, update_fn)


def named_chain(
    *args: tuple[str, GradientTransformation],
) -> GradientTransformationExtraArgs:
  """Like :func:`chain`; the state is an ordered dict keyed by the given names."""
  names = [name for name, _ in args]
  if len(names) != len(set(names)):
    raise ValueError(f'named_chain: names must be unique, got {names}.')
  transforms = [(name, with_extra_args_support(t)) for name, t in args]

  def init_fn(params):
    return collections.OrderedDict(
        (name, t.init(params)) for name, t in transforms
    )

  def update_fn(updates, state, params=None, **extra_args):
    new_state = collections.OrderedDict()
    for name, t in transforms:
      updates, new_state[name] = t.update(
          updates, state[name], params, **extra_args
      )
    return updates, new_state

  return GradientTransformationExtraArgs(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
  """Returns ``params + updates``, each leaf cast back to its param's dtype."""
  return jax.tree.map(
      lambda p, u: (
          None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype)
      ),
      params,
      updates,
      is_leaf=lambda x: x is None,
  )


def incremental_update(
    new_tensors: Params, old_tensors: Params, step_size: jax.typing.ArrayLike
) -> Params:
  """Polyak averaging: ``step_size * new + (1 - step_size) * old``.

  References:
    Polyak & Juditsky, Acceleration of stochastic approximation by averaging,
    1992.
  """
  return jax.tree.map(
      lambda new, old: (
          None if new is None else step_size * new + (1.0 - step_size) * old
      ),
      new_tensors,
      old_tensors,
      is_leaf=lambda x: x is None,
  )


def periodic_update(
    new_tensors: Params,
    old_tensors: Params,
    steps: jax.typing.ArrayLike,
    update_period: jax.typing.ArrayLike,
) -> Params:
  """Returns ``new_tensors`` when ``steps % update_period == 0``, else ``old``.

  References:
    Mnih et al., Human-level control through deep reinforcement learning, 2015.
  """
  return jax.lax.cond(
      jnp.mod(steps, update_period) == 0,
      lambda _: new_tensors,
      lambda _: old_tensors,
      None,
  )
