"""Finding, replacing and mapping values inside optimizer states.

An optimizer state is a pytree of NamedTuples, dicts and tuples. These helpers
address its values by field or key name (``'count'``, ``'learning_rate'``) or
by the name of a state class (``'ScaleByAdamState'``), as Optax 0.2.8's
``optax.tree.get``, ``set``, ``get_all_with_path`` and ``map_params`` do.
Paths name the NamedTuple of every field they pass through
(:class:`NamedTupleKey`), so two ``count`` fields of different states can be
told apart by a ``filtering(path, value)`` function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax

__all__ = [
    'NamedTupleKey',
    'tree_get',
    'tree_get_all_with_path',
    'tree_map_params',
    'tree_set',
]


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
  """A path entry: field ``name`` of a NamedTuple of class ``tuple_name``."""

  tuple_name: str
  name: str

  def __str__(self):
    return f'{self.tuple_name}.{self.name}'


def _is_named_tuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, '_fields')


def _has_any_key(node, keys) -> bool:
  if _is_named_tuple(node):
    return type(node).__name__ in keys or any(k in node._fields for k in keys)
  return isinstance(node, dict) and any(k in node for k in keys)


def _named_leaves_with_path(tree, is_leaf=None):
  """``jax.tree_util.tree_leaves_with_path`` whose paths through a NamedTuple
  field are one :class:`NamedTupleKey` (jax gives a bare index)."""
  stop = is_leaf or (lambda _: False)
  out = []
  flat = jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: stop(x) or _is_named_tuple(x)
  )
  for path, node in flat:
    if stop(node) or not _is_named_tuple(node):
      out.append((path, node))
      continue
    for field in node._fields:
      key = NamedTupleKey(type(node).__name__, field)
      for sub_path, leaf in _named_leaves_with_path(getattr(node, field), is_leaf):
        out.append(((*path, key, *sub_path), leaf))
  return out


def _children_with_path(path, node):
  if _is_named_tuple(node):
    name = type(node).__name__
    return [((*path, NamedTupleKey(name, f)), getattr(node, f)) for f in node._fields]
  if isinstance(node, dict):
    return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]
  raise ValueError(f'Subtree must be a dict or a NamedTuple. Got {type(node)}')


def _select(path, node, key):
  """The path and value of ``key`` in a node known to hold it."""
  if _is_named_tuple(node):
    name = type(node).__name__
    if key == name:
      return path, node
    return (*path, NamedTupleKey(name, key)), getattr(node, key)
  return (*path, jax.tree_util.DictKey(key)), node[key]


def _find(tree, key):
  has_key = lambda node: _has_any_key(node, (key,))  # noqa: E731
  holders = [
      (path, node) for path, node in _named_leaves_with_path(tree, has_key)
      if has_key(node)
  ]
  found = [_select(path, node, key) for path, node in holders]
  # A value under a match may itself hold the key (a chain inside a chain).
  for path, node in holders:
    for child_path, child in _children_with_path(path, node):
      found += [((*child_path, *p), v) for p, v in _find(child, key)]
  return found


def tree_get_all_with_path(
    tree: Any, key: Any, filtering: Optional[Callable[..., bool]] = None
) -> list[tuple[tuple[Any, ...], Any]]:
  """Every ``(path, value)`` of ``tree`` stored under ``key``.

  Args:
    tree: the pytree (an optimizer state) to search.
    key: a dict key, a NamedTuple field name, or a NamedTuple class name (the
      value is then the NamedTuple itself).
    filtering: optional ``filtering(path, value) -> bool`` keeping a subset.

  Returns:
    A list of ``(path, value)``; a path is a tuple of jax key entries and
    :class:`NamedTupleKey`, printable with ``jax.tree_util.keystr``.
  """
  found = _find(tree, key)
  if filtering:
    found = [(p, v) for p, v in found if filtering(p, v)]
  return found


def tree_get(
    tree: Any,
    key: Any,
    default: Optional[Any] = None,
    filtering: Optional[Callable[..., bool]] = None,
) -> Any:
  """The one value of ``tree`` under ``key``; ``default`` if there is none.

  Raises:
    KeyError: if several values match (narrow them with ``filtering``).
  """
  found = tree_get_all_with_path(tree, key, filtering=filtering)
  if len(found) > 1:
    raise KeyError(f"Found multiple values for '{key}' in {tree}.")
  return found[0][1] if found else default


def _key_name(entry):
  if isinstance(entry, jax.tree_util.DictKey):
    if isinstance(entry.key, (str, int)):
      return entry.key
    raise KeyError('Hashable keys not supported')
  for attr in ('name', 'idx', 'key'):  # NamedTuple/GetAttr, Sequence, Flattened.
    if hasattr(entry, attr):
      return getattr(entry, attr)
  raise KeyError(f"Tree key '{entry}' of type '{type(entry)}' not valid.")


def tree_set(
    tree: Any, filtering: Optional[Callable[..., bool]] = None, /, **kwargs: Any
) -> Any:
  """A copy of ``tree`` with the values under each key of ``kwargs`` replaced.

  Args:
    tree: the pytree (an optimizer state) to edit.
    filtering: optional ``filtering(path, value) -> bool``; only matching
      values are replaced.
    **kwargs: ``key=new_value``; a key is a dict key, a field name or a
      NamedTuple class name (the whole NamedTuple is replaced).

  Raises:
    KeyError: if a key (after ``filtering``) matches nothing.
  """
  for key in kwargs:
    if not tree_get_all_with_path(tree, key, filtering):
      given = ' given the filtering operation' if filtering else ''
      raise KeyError(f"Found no values matching '{key}'{given} in {tree}")
  keys = tuple(kwargs)
  has_any = lambda node: _has_any_key(node, keys)  # noqa: E731
  wanted = lambda path, node: filtering is None or filtering(path, node)  # noqa: E731

  def replace(path, node):
    if not has_any(node):
      return node
    if _is_named_tuple(node) and type(node).__name__ in kwargs and wanted(path, node):
      return kwargs[type(node).__name__]
    children = {}
    for child_path, child in _children_with_path(path, node):
      name = _key_name(child_path[-1])
      if name in kwargs and wanted(child_path, child):
        children[name] = kwargs[name]
      elif isinstance(child, (dict, list, tuple)):
        children[name] = replace(child_path, child)
      else:
        children[name] = child
    return node._replace(**children) if _is_named_tuple(node) else children

  treedef = jax.tree.structure(tree, is_leaf=has_any)
  return treedef.unflatten(
      replace(path, node) for path, node in _named_leaves_with_path(tree, has_any)
  )


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
  """Stands in for the params in ``init``: a pytree node with no leaves.

  (``research.optim.masked`` recognizes it by this class name, which Optax's
  own placeholder shares.)
  """

  def tree_flatten(self):
    return (), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux, children
    return cls()


def tree_map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Optional[Callable[..., Any]] = None,
    is_leaf: Optional[Callable[[Any], bool]] = None,
) -> Any:
  """Applies ``f`` to every copy of the params inside an optimizer state.

  The parts of ``state`` that mirror the params (moments, traces) are found by
  calling ``init`` on a placeholder; each gets ``jax.tree.map(f, part, *rest,
  is_leaf=is_leaf)``. The typical use: sharding specs for the state from
  those of the params.

  Args:
    initable: a transformation (anything with ``init``) or an init function.
    f: applied leaf by leaf to each params-shaped part of ``state``.
    state: the optimizer state.
    *rest: trees with the params' structure, passed to ``f`` as well.
    transform_non_params: applied to every other part of the state (counts,
      keys); ``None`` keeps them.
    is_leaf: passed to ``jax.tree.map`` over the params-shaped parts.
  """
  init = initable.init if hasattr(initable, 'init') else initable
  template = init(_ParamsPlaceholder())

  def map_part(marker, value):
    if isinstance(marker, _ParamsPlaceholder):
      return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
    return value if transform_non_params is None else transform_non_params(value)

  return jax.tree.map(
      map_part, template, state,
      is_leaf=lambda v: isinstance(v, _ParamsPlaceholder),
  )
