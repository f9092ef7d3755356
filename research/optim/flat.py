"""Flat optimizer state (and flat params): one contiguous buffer per dtype.

Optax's program loops over the leaves one by one; on models of many small
leaves the update is then far from the machine's limit. :func:`flat` runs any
transformation on a :class:`FlatTree`: the leaves raveled into one 1-D buffer
per group (dtype, and sharding where a leaf has a non-replicated one), so
that an elementwise optimizer is one fused loop over contiguous memory and
its state is one buffer per moment and group. When the params themselves are
kept flat (``research.train``'s ``flat_params``), the update copies nothing:
the model reads slices of the buffers (:func:`unravel`), whose gradient is one
concatenation (a custom VJP, not a sum of pads). The slices are not free
everywhere: on XLA:CPU a matrix product takes whole buffers, so each kernel
view is one copy per step (a slice fusion in the compiled program) and the
gradient one more, about what the flat update saves inside a scanned loop
(see ``experiments/benchmarks/train_throughput.py``). Where the per-leaf cost
is one call per leaf, as in an update jitted on its own, the flat update is
many times faster (``optim_update``).

Which transformations run on the buffers. A transformation is *elementwise*
(it may also reduce over all elements, like a global norm) when its factory is
in :data:`ELEMENTWISE` (every alias of ``research.optim.alias`` except
``noisy_sgd``, the ``scale_by_*`` preconditioners, clipping by value or global
norm, weight decay without a mask, ...). :func:`classify` finds every
transformation inside ``inner`` by walking the closures of its functions (the
transformations of a ``chain``, the optimizer of ``inject_hyperparams`` or
``optim.make``) and names the first that is not elementwise. Such
transformations need the tree: per-layer norms (lamb, lars, fromage,
novograd, scale_by_trust_ratio, clip_by_block_rms, clip_by_norm,
adaptive_grad_clip, centralize), factored or per-axis moments (adafactor,
sm3, shampoo, soap), masks and partitions (masked, freeze, partition, the
``*_by_path`` transforms, an alias given a ``mask``), max_norm, per-leaf
noise (add_noise, noisy_sgd), line searches that call ``value_fn(params)``,
and anything unknown (a user's transformation, a function given to
``stateless``). With ``structural='views'`` (the default) they run on *segment
views*: the buffers sliced back into the tree, so they compute exactly what
they compute per leaf, their state stays per leaf, and only the slicing and
one concatenation of the updates are added. With ``structural='error'`` they
are refused with a ValueError naming the transformation.

The state converts both ways (:func:`state_to_flat`, :func:`state_to_tree`),
so a checkpoint of the per-leaf optimizer loads into the flat one and back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from research.optim import base

__all__ = [
    'ELEMENTWISE',
    'FlatLayout',
    'FlatTree',
    'classify',
    'flat',
    'flat_inner',
    'layout_of',
    'ravel',
    'state_to_flat',
    'state_to_tree',
    'unravel',
]


@dataclasses.dataclass(frozen=True)
class FlatLayout:
  """Where each leaf of a tree lives in the flat buffers (static, hashable)."""

  treedef: Any
  shapes: tuple      # per leaf
  groups: tuple      # per leaf: index of its buffer
  offsets: tuple     # per leaf: start in its buffer
  sizes: tuple       # per buffer: number of elements
  dtypes: tuple      # per buffer: the leaves' dtype name
  keys: tuple = ()   # per buffer: the group key (dtype, sharding spec or None)

  @property
  def num_leaves(self) -> int:
    return len(self.shapes)


@jax.tree_util.register_pytree_with_keys_class
class FlatTree:
  """A pytree of one buffer per group; ``layout`` says where the leaves are.

  ``jax.tree.map`` over it maps over the buffers, so any elementwise
  transformation, ``apply_updates`` and a gradient run on it unchanged.
  """

  __slots__ = ('buffers', 'layout')

  def __init__(self, buffers, layout: FlatLayout):
    self.buffers = tuple(buffers)
    self.layout = layout

  def tree_flatten_with_keys(self):
    return [(jax.tree_util.SequenceKey(i), b) for i, b in enumerate(self.buffers)], self.layout

  def tree_flatten(self):
    return self.buffers, self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(buffers, layout)

  def __repr__(self):
    return f'FlatTree({self.layout.num_leaves} leaves in {len(self.buffers)} buffers)'


def _is_flat(x) -> bool:
  return isinstance(x, FlatTree)


def _sharding_key(leaf):
  sharding = getattr(leaf, 'sharding', None)
  spec = getattr(sharding, 'spec', None)
  if spec is None or all(s is None for s in spec):
    return None  # unsharded or replicated: one group per dtype
  return (str(spec), id(getattr(sharding, 'mesh', None)))


def _dtype_name(x) -> str:
  """The dtype ``x`` has on a device (a leaf's ``dtype`` read directly: the
  general ``jnp.result_type`` was half of ``layout_of``'s time)."""
  dtype = getattr(x, 'dtype', None)
  if isinstance(dtype, np.dtype):
    return jax.dtypes.canonicalize_dtype(dtype).name
  return jnp.dtype(jnp.result_type(x)).name


def layout_of(tree) -> FlatLayout:
  """The layout of ``tree``: leaves grouped by dtype (and non-replicated
  sharding), in tree order within a group."""
  leaves, treedef = jax.tree.flatten(tree)
  shapes = tuple(tuple(np.shape(x)) for x in leaves)
  keys = tuple((_dtype_name(x), _sharding_key(x)) for x in leaves)
  return _layout(treedef, shapes, keys)


@functools.lru_cache(maxsize=256)
def _layout(treedef, shapes, keys) -> FlatLayout:
  order: dict = {}
  sizes: list = []
  groups, offsets = [], []
  for shape, key in zip(shapes, keys):
    g = order.setdefault(key, len(order))
    if g == len(sizes):
      sizes.append(0)
    groups.append(g)
    offsets.append(sizes[g])
    sizes[g] += math.prod(shape)
  group_keys = tuple(sorted(order, key=order.get))
  return FlatLayout(treedef, shapes, tuple(groups), tuple(offsets), tuple(sizes),
                    tuple(k[0] for k in group_keys), group_keys)


def _xp(leaves):
  return np if leaves and all(isinstance(x, np.ndarray) for x in leaves) else jnp


def ravel(tree, layout: Optional[FlatLayout] = None) -> FlatTree:
  """``tree`` as a :class:`FlatTree` (one concatenation per group). NumPy in,
  NumPy out, so host copies (checkpoints) need no device."""
  layout = layout_of(tree) if layout is None else layout
  leaves = layout.treedef.flatten_up_to(tree)
  xp = _xp(leaves)
  members = [[] for _ in layout.sizes]
  for g, x in zip(layout.groups, leaves):
    members[g].append(xp.reshape(x, (-1,)))
  buffers = [m[0] if len(m) == 1 else xp.concatenate(m) for m in members]
  return FlatTree(buffers, layout)


def _slices(buffers, layout):
  return [buffers[g][o:o + math.prod(s)].reshape(s)
          for g, o, s in zip(layout.groups, layout.offsets, layout.shapes)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _unravel_leaves(buffers, layout):
  return _slices(buffers, layout)


def _unravel_fwd(buffers, layout):
  return _slices(buffers, layout), None


def _unravel_bwd(layout, _, cotangents):
  # One concatenation per group; autodiff of the slices would add one padded
  # copy of the whole buffer per leaf.
  members = [[] for _ in layout.sizes]
  for g, c in zip(layout.groups, cotangents):
    members[g].append(jnp.reshape(c, (-1,)))
  return (tuple(m[0] if len(m) == 1 else jnp.concatenate(m) for m in members),)


_unravel_leaves.defvjp(_unravel_fwd, _unravel_bwd)


def unravel(flat_tree: FlatTree):
  """The tree of views (slices) of ``flat_tree``'s buffers."""
  layout = flat_tree.layout
  buffers = flat_tree.buffers
  if _xp(list(buffers)) is np or any(not hasattr(b, 'dtype') for b in buffers):
    leaves = _slices(buffers, layout)
  else:
    leaves = _unravel_leaves(tuple(buffers), layout)
  return jax.tree.unflatten(layout.treedef, leaves)


# --- what a transformation is ------------------------------------------------

# Factories whose transformations commute with raveling: they act on each
# element, or reduce over all of them (global norms, finiteness, counts).
ELEMENTWISE = frozenset({
    # combinators and wrappers that only route
    'chain', 'named_chain', 'identity', 'stateless', 'stateless_with_tree_map', 'set_to_zero', 'with_extra_args_support',
    'inject_hyperparams', 'inject_stateful_hyperparams', '_build_program',
    'apply_if_finite', 'conditionally_transform', 'conditionally_mask', '_gated',
    'apply_every', 'skip_not_finite', 'skip_large_updates', 'flatten', 'flat',
    'MultiSteps', 'reduce_on_plateau',
    # transform.py
    'scale', 'scale_by_schedule', 'scale_by_learning_rate', 'trace', 'scale_by_rss',
    'scale_by_rms', 'scale_by_stddev', 'scale_by_adadelta', 'scale_by_adam',
    'scale_by_amsgrad', 'scale_by_adamax', 'scale_by_belief', 'scale_by_yogi',
    'scale_by_radam', 'scale_by_adan', 'scale_by_lion', 'scale_by_sign', 'scale_by_rprop',
    'scale_by_polyak', 'scale_by_optimistic_gradient', 'ema', 'normalize_by_update_norm',
    'scale_by_nadam', 'scale_by_distance_over_gradients',
    # clipping, adding, constraints
    'clip', 'clip_by_global_norm', 'add_decayed_weights', 'add_l1_penalty',
    'keep_params_nonnegative', 'zero_nans',
    # aliases (their masks, if given, are found as ``masked`` inside)
    'sgd', 'adagrad', 'rmsprop', 'adadelta', 'adam', 'nadam', 'adamw', 'nadamw', 'adamax',
    'adamaxw', 'amsgrad', 'adabelief', 'adan', 'lion', 'radam', 'yogi', 'sign_sgd',
    'signum', 'rprop', 'polyak_sgd', 'optimistic_gradient_descent', 'optimistic_adam_v2',
    'optimistic_adam',
})

# Factories that wrap a per-leaf (or whole-tree) function of the user's.
_TREE_FN = frozenset({'stateless', 'stateless_with_tree_map'})
_UPDATE_NAMES = frozenset({'update_fn', 'update', 'update_function'})
_LIBRARIES = ('research.optim', 'optax')
_MAX_DEPTH = 12


def _is_library(fn) -> bool:
  return (getattr(fn, '__module__', None) or '').startswith(_LIBRARIES)


def _factory(fn) -> str:
  qualname = getattr(fn, '__qualname__', '') or ''
  return qualname.split('.<locals>')[0].split('.')[-1] if '<locals>' in qualname \
      else (getattr(fn, '__name__', '') or qualname)


_OPTIMIZER_MODULES = ('alias', 'contrib', 'layerwise', 'factorized', 'sm3', 'shampoo',
                      'soap', 'saddle', 'lbfgs')


def _is_optimizer_module(fn) -> bool:
  module = getattr(fn, '__module__', '') or ''
  return any(part in module for part in _OPTIMIZER_MODULES)


def classify(inner) -> Optional[str]:
  """None if ``inner`` can run on flat buffers; else the name of the first
  transformation (or function) found inside it that needs the tree."""
  seen = set()

  def visit(obj, parent_factory, depth) -> Optional[str]:
    if depth > _MAX_DEPTH or id(obj) in seen:
      return None
    seen.add(id(obj))
    if isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray, jax.Array)):
      return None
    if isinstance(obj, tuple) and hasattr(obj, '_fields') and hasattr(obj, 'update') \
        and callable(getattr(obj, 'update', None)) and callable(getattr(obj, 'init', None)):
      fn = obj.update
      if isinstance(fn, types.FunctionType) and not _is_library(fn):
        return f'{getattr(fn, "__qualname__", fn)!s} (a transformation not of research.optim)'
      for part in (obj.update, obj.init):
        found = visit(part, parent_factory, depth + 1)
        if found:
          return found
      return None
    if isinstance(obj, (list, tuple, set, frozenset)):
      for x in obj:
        found = visit(x, parent_factory, depth + 1)
        if found:
          return found
      return None
    if isinstance(obj, dict):
      return visit(tuple(obj.values()), parent_factory, depth + 1)
    if isinstance(obj, functools.partial):
      return visit((obj.func, obj.args, tuple(obj.keywords.values())), parent_factory, depth + 1)
    if isinstance(obj, types.MethodType):
      return visit(obj.__func__, parent_factory, depth + 1)
    if isinstance(obj, types.FunctionType):
      name = _factory(obj)
      if not _is_library(obj):
        if parent_factory in _TREE_FN:
          return f'{obj.__qualname__} (a function given to {parent_factory})'
        return None  # a schedule or another hyperparameter
      if parent_factory in _TREE_FN and name not in ELEMENTWISE:
        return name  # the function given to stateless decides
      if '<locals>' in obj.__qualname__:
        if name not in ELEMENTWISE and obj.__name__ in _UPDATE_NAMES:
          return name  # the update of a transformation that needs the tree
      elif name not in ELEMENTWISE and _is_optimizer_module(obj):
        return name  # an optimizer factory held for later (inject_hyperparams, make)
      cells = obj.__closure__ or ()
      for cell in cells:
        try:
          value = cell.cell_contents
        except ValueError:
          continue
        found = visit(value, name, depth + 1)
        if found:
          return found
      return None
    if callable(obj) and _is_library(type(obj)):  # e.g. factory._Init
      return visit(tuple(vars(obj).values()) if hasattr(obj, '__dict__') else (),
                   parent_factory, depth + 1)
    return None

  return visit(inner, None, 0)


# --- the wrapper ---------------------------------------------------------------


def _same_structure_as(tree, like) -> bool:
  try:
    return jax.tree.structure(tree) == jax.tree.structure(like)
  except Exception:  # noqa: BLE001 - any unusual extra argument
    return False


def flat(inner: base.GradientTransformation, *,
         structural: str = 'views') -> base.GradientTransformationExtraArgs:
  """Runs ``inner`` on flat buffers, one per dtype (see the module docstring).

  Equal in value to ``inner`` per leaf (up to the order of a global sum).
  ``updates`` and ``params`` may be ordinary trees (they are raveled, and the
  updates come back as a tree) or :class:`FlatTree` s (nothing is copied and
  the updates stay flat). The state is ``inner``'s state over the buffers:
  each moment is a FlatTree (:func:`state_to_tree` turns it into ``inner``'s
  per-leaf state and :func:`state_to_flat` back).

  Args:
    inner: any gradient transformation.
    structural: what to do when ``inner`` needs the tree structure (see
      :func:`classify`): 'views' runs it on segment views of the buffers
      (exact, state per leaf, no speed-up); 'error' refuses it.

  Raises:
    ValueError: ``structural`` is neither 'views' nor 'error', or it is
      'error' and ``inner`` holds a transformation that needs the tree.
  """
  if structural not in ('views', 'error'):
    raise ValueError(f"flat: structural={structural!r} is invalid; allowed: 'views', 'error'.")
  needs_tree = classify(inner)
  if needs_tree and structural == 'error':
    raise ValueError(
        f'flat: the transformation {needs_tree!r} needs the tree structure (per-leaf '
        "statistics, masks or per-leaf randomness); allowed with structural='error': "
        "elementwise transformations only. Use structural='views' to run it on segment "
        'views of the flat buffers.')
  elementwise = needs_tree is None
  inner = base.with_extra_args_support(inner)

  def init_fn(params):
    if elementwise:
      return inner.init(params if _is_flat(params) else ravel(params))
    return inner.init(unravel(params) if _is_flat(params) else params)

  def update_fn(updates, state, params=None, **extra_args):
    given_flat = _is_flat(updates)
    if elementwise:
      flat_updates = updates if given_flat else ravel(updates)
      flat_params = None if params is None else (
          params if _is_flat(params) else ravel(params, flat_updates.layout))
      if extra_args and not given_flat:
        extra_args = {k: ravel(v, flat_updates.layout) if _same_structure_as(v, updates)
                      else v for k, v in extra_args.items()}
      out, state = inner.update(flat_updates, state, flat_params, **extra_args)
      return (out if given_flat else unravel(out)), state
    tree_updates = unravel(updates) if given_flat else updates
    tree_params = unravel(params) if _is_flat(params) else params
    if extra_args and given_flat:
      extra_args = {k: unravel(v) if _is_flat(v) else v for k, v in extra_args.items()}
    out, state = inner.update(tree_updates, state, tree_params, **extra_args)
    return (ravel(out, updates.layout) if given_flat else out), state

  update_fn.flat_inner = inner
  update_fn.flat_elementwise = elementwise
  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def flat_inner(tx) -> Optional[base.GradientTransformation]:
  """The transformation that :func:`flat` wrapped, or None for any other."""
  return getattr(getattr(tx, 'update', None), 'flat_inner', None)


def state_to_flat(flat_tx, state, params):
  """``inner``'s per-leaf state (of ``params``, a tree) -> ``flat_tx``'s."""
  template = jax.eval_shape(flat_tx.init, params)
  return jax.tree.map(
      lambda t, s: ravel(s, t.layout) if _is_flat(t) else s, template, state,
      is_leaf=_is_flat)


def state_to_tree(state):
  """A flat state -> the per-leaf state of the wrapped transformation."""
  return jax.tree.map(lambda x: unravel(x) if _is_flat(x) else x, state, is_leaf=_is_flat)
