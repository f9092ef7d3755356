"""Every public name of Optax 0.2.8 resolves under the same path in ours.

``from research import optim as optax`` works for every name ``dir(optax)``
lists, and for every public name of each public submodule. A public name is
one ``dir()`` lists without a leading underscore, except a module the
submodule merely imports (``functools``, ``jnp``, ``optax._src.base``): a
module counts only when it is the submodule's own child (``optax.contrib``,
or ``optax.experimental._aggregating`` served as ``aggregating``). Paths are
followed by attribute, as user code reaches them (``optax.experimental.
aggregating`` is an attribute, not an importable module). Imports only:
nothing is traced or compiled.
"""

import functools
import types
import warnings

import optax
import pytest

from research import optim

SUBMODULES = [
    'contrib', 'losses', 'tree', 'tree_utils', 'projections', 'second_order',
    'transforms', 'perturbations', 'assignment', 'microbatching',
    'experimental', 'experimental.aggregating', 'schedules',
]

# Names Optax serves only through a module ``__getattr__`` (deprecated: not in
# its ``dir()``, a DeprecationWarning on access). Left out of ours: new code
# should use the name each message points to.
LEFT_OUT = {
    '': {
        'differentially_private_aggregate': 'deprecated; use contrib.<same name>',
        'DifferentiallyPrivateAggregateState': 'deprecated; use contrib.<same name>',
        'dpsgd': 'deprecated; use contrib.dpsgd',
    },
    'tree_utils': {
        'tree_scalar_mul': 'deprecated; use tree_scale',
        'tree_add_scalar_mul': 'deprecated; use tree_add_scale',
        'tree_l1_norm': "deprecated; use tree_norm(..., ord=1)",
        'tree_l2_norm': 'deprecated; use tree_norm',
        'tree_linf_norm': "deprecated; use tree_norm(..., ord='inf')",
    },
}


# Public names we do not have yet under that path: gaps to close (in the
# module of ours named by the key), not choices. Each is reachable from the
# top level of ours (test_gaps_are_reachable_at_the_top_level).
GAPS: dict = {}  # names of an optax submodule we have only at the top level


def public_names(module):
  names = []
  for name in dir(module):
    if name.startswith('_'):
      continue
    value = getattr(module, name)
    if (isinstance(value, types.ModuleType) and value.__name__ not in (
        f'{module.__name__}.{name}', f'{module.__name__}._{name}')):
      continue  # an import of the module, not part of its API
    names.append(name)
  return names


def modules(path):
  """Optax's and our module at ``path`` ('' for the top level)."""
  parts = path.split('.') if path else []
  return (functools.reduce(getattr, parts, optax),
          functools.reduce(getattr, parts, optim))


@pytest.mark.parametrize('path', ['', *SUBMODULES], ids=['optax', *SUBMODULES])
def test_every_public_name_resolves(path):
  theirs, ours = modules(path)
  names = public_names(theirs)
  assert names  # the rule above left something to check
  missing = [n for n in names
             if not hasattr(ours, n) and n not in GAPS.get(path, ())]
  assert not missing, f'optax.{path or ""} names missing from ours: {missing}'


def test_public_submodules_are_modules_of_ours():
  for path in SUBMODULES:
    assert isinstance(modules(path)[1], types.ModuleType), path


def test_gaps_are_still_gaps():
  for path in sorted(GAPS):
    theirs, ours = modules(path)
    for name in sorted(GAPS[path]):
      assert name in public_names(theirs), name
      assert not hasattr(ours, name), f'{path}.{name} exists now: drop it from GAPS'


def test_gaps_are_reachable_at_the_top_level():
  for names in GAPS.values():
    for name in names:
      assert hasattr(optim, name), name


@pytest.mark.parametrize('path', sorted(LEFT_OUT))
def test_left_out_names_are_deprecated_getattr_only(path):
  theirs, ours = modules(path)
  for name in LEFT_OUT[path]:
    assert name not in dir(theirs), name
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      getattr(theirs, name)  # Optax still resolves it, with a warning
    assert any(issubclass(w.category, DeprecationWarning) for w in caught), name
    assert not hasattr(ours, name), f'{name} exists now: drop it from LEFT_OUT'


def test_the_left_out_names_point_to_names_we_have():
  assert hasattr(optim.contrib, 'differentially_private_aggregate')
  assert hasattr(optim.contrib, 'DifferentiallyPrivateAggregateState')
  assert hasattr(optim.contrib, 'dpsgd')
  for name in ('tree_scale', 'tree_add_scale', 'tree_norm'):
    assert hasattr(optim.tree_utils, name)
