"""Per-parameter learning-rate and weight-decay factors, and freezing, by path.

Rules are ``(regex, value)`` pairs matched (``re.fullmatch``) against each
parameter's path written ``'Dense_0/kernel'`` (dict keys, attribute names and
sequence indices joined by ``/``); the first matching rule wins, as in
big_vision's ``lr_mults``, ``wd_mults`` and ``frozen`` config fields::

    tx = optim.chain(
        optim.adam(1e-3),
        optim.scale_by_path([('head/.*', 10.0), ('.*/bias', 0.5)]),
        optim.freeze_by_path(['embed/.*']),
    )

With ``strict=True`` a leaf that no rule matches is an error that names every
such path (a typo in a pattern then fails loudly instead of silently falling
back to the default).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence, Union

import jax

from research.optim import adding
from research.optim import base
from research.optim import checks
from research.optim import wrappers

__all__ = [
    'add_decayed_weights_by_path',
    'freeze_by_path',
    'path_multipliers',
    'path_names',
    'scale_by_path',
]

Rules = Sequence[tuple[str, Any]]


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey.
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_names(tree: Any) -> Any:
  """A tree like ``tree`` whose leaves are their paths, ``'Dense_0/kernel'``."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: '/'.join(_key_name(k) for k in path), tree
  )


def _compile(rules: Rules, fn: str, numeric: bool) -> list[tuple[re.Pattern, Any]]:
  if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
    raise TypeError(
        f'{fn}: rules={rules!r}; allowed: a list of (regex, value) pairs.'
    )
  compiled = []
  for rule in rules:
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2
            and isinstance(rule[0], str)):
      raise TypeError(
          f'{fn}: rule {rule!r} is not allowed; allowed: a (regex, value) '
          'pair with a string regex.'
      )
    pattern, value = rule
    try:
      regex = re.compile(pattern)
    except re.error as e:
      raise ValueError(f'{fn}: pattern {pattern!r} is not a regex: {e}.') from e
    if numeric:
      checks.check_number(f'value of rule {pattern!r}', value, fn=fn)
    compiled.append((regex, value))
  return compiled


def _lookup(compiled, tree, default, strict, fn):
  names = path_names(tree)
  unmatched = []

  def first_match(name):
    for regex, value in compiled:
      if regex.fullmatch(name):
        return value
    unmatched.append(name)
    return default

  # The values may be None (no match): keep them as leaves of the result.
  values = jax.tree.map(first_match, names)
  if strict and unmatched:
    raise ValueError(
        f'{fn}: strict=True and no rule matches the params {unmatched}; '
        f'rules: {[r.pattern for r, _ in compiled]}.'
    )
  return values


def path_multipliers(
    rules: Rules, tree: Any, default: Any = 1.0, strict: bool = False
) -> Any:
  """The value of the first rule matching each leaf's path.

  Args:
    rules: ``(regex, value)`` pairs, tried in order (``re.fullmatch``).
    tree: the params (or any tree with their structure).
    default: the value of a leaf no rule matches.
    strict: raise ``ValueError`` naming every unmatched path instead.

  Returns:
    A tree with ``tree``'s structure holding the values.
  """
  compiled = _compile(rules, 'path_multipliers', numeric=False)
  return _lookup(compiled, tree, default, strict, 'path_multipliers')


def scale_by_path(
    rules: Rules, default: float = 1.0, strict: bool = False
) -> base.GradientTransformationExtraArgs:
  r"""Multiplies each leaf's update by the factor of its first matching rule.

  .. math::
    u_i \leftarrow c_{r(i)}\, u_i, \qquad r(i) = \min\{r : \mathrm{regex}_r
    \text{ matches path}_i\}

  After the learning rate (or anywhere in a chain of linear steps) this is a
  per-parameter learning-rate multiplier.

  Args:
    rules: ``(regex, factor)`` pairs; factors are numbers.
    default: the factor of unmatched leaves.
    strict: unmatched leaves are an error (raised by ``init``).

  References:
    Beyer, Zhai & Kolesnikov, Big Vision, 2022 (``lr_mults``).
  """
  fn = 'scale_by_path'
  compiled = _compile(rules, fn, numeric=True)
  checks.check_number('default', default, fn=fn)

  def init_fn(params):
    _lookup(compiled, params, default, strict, fn)
    return base.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    factors = _lookup(compiled, updates, default, strict, fn)
    return jax.tree.map(lambda u, c: u * c, updates, factors), state

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _as_patterns(patterns: Union[str, Sequence[str]]) -> list[tuple[str, bool]]:
  patterns = [patterns] if isinstance(patterns, str) else patterns
  return [(p, True) for p in patterns]


def freeze_by_path(
    patterns: Union[str, Sequence[str]], strict: bool = False
) -> base.GradientTransformationExtraArgs:
  r"""Zero updates for the leaves whose path matches one of ``patterns``.

  .. math::
    u_i \leftarrow 0 \text{ if a pattern matches path}_i

  Place it last in the chain so that nothing after it moves the frozen
  leaves (see :func:`freeze`).

  Args:
    patterns: a regex or a list of regexes (``re.fullmatch``).
    strict: every leaf must match a pattern (raised by ``init``); useful to
      check a list of frozen *and* trained patterns, written as a frozen
      list with :func:`path_multipliers` otherwise.

  References:
    Beyer, Zhai & Kolesnikov, Big Vision, 2022 (``frozen``).
  """
  fn = 'freeze_by_path'
  compiled = _compile(_as_patterns(patterns), fn, numeric=False)
  mask = lambda params: _lookup(compiled, params, False, strict, fn)  # noqa: E731
  return wrappers.freeze(mask)


def add_decayed_weights_by_path(
    weight_decay: base.ScalarOrSchedule,
    rules: Rules,
    default: float = 0.0,
    strict: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Weight decay with a factor per leaf: ``u_i <- u_i + lambda_t c_i p_i``.

  ``c_i`` is the factor of the first rule matching the leaf's path; leaves
  with ``c_i = 0`` (by default every unmatched leaf, as big_vision's
  ``wd_mults``) are not decayed at all.

  Args:
    weight_decay: ``lambda``, a number or a schedule (as
      :func:`add_decayed_weights`).
    rules: ``(regex, factor)`` pairs.
    default: the factor of unmatched leaves.
    strict: unmatched leaves are an error (raised by ``init``).

  References:
    Loshchilov & Hutter, Decoupled weight decay regularization, 2019;
    Beyer, Zhai & Kolesnikov, Big Vision, 2022 (``wd_mults``).
  """
  fn = 'add_decayed_weights_by_path'
  compiled = _compile(rules, fn, numeric=True)
  checks.check_number('default', default, fn=fn)
  decay = adding.add_decayed_weights(weight_decay)

  def factors(tree):
    return _lookup(compiled, tree, default, strict, fn)

  def init_fn(params):
    factors(params)
    return decay.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    checks.require_params(params, fn)
    scaled = jax.tree.map(lambda p, c: p * c, params, factors(params))
    return decay.update(updates, state, scaled, **extra_args)

  tx = base.GradientTransformationExtraArgs(init_fn, update_fn)
  return wrappers.masked(tx, lambda params: jax.tree.map(bool, factors(params)))
