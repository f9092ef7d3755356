"""``research.optim.tree`` and ``tree_utils`` against ``optax.tree`` and
``optax.tree_utils``: every name resolves, and each utility gives Optax's
result on the same small trees (mixed shapes, a complex leaf, None leaves)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim import tree as otu
from research.optim import tree_utils

# One leaf shape throughout: eager JAX compiles each op once per shape.
X = {'a': jnp.array([1.0, -2.0, 3.0]), 'b': {'c': jnp.array([0.5, -4.0, 0.0])},
     'd': jnp.array([2.5, 0.1, -0.3])}
Y = {'a': jnp.array([0.5, 1.0, -1.0]), 'b': {'c': jnp.array([2.0, 1.0, 0.2])},
     'd': jnp.array([-1.5, 0.7, 1.1])}
Z = jax.tree.map(lambda x: x + 0.25, Y)
CPLX = {'u': jnp.array([1 + 2j, -0.5j, 1.0], jnp.complex64), 'v': jnp.array([3.0, 0, 1])}
CPLX2 = {'u': jnp.array([2 - 1j, 1 + 1j, 2j], jnp.complex64),
         'v': jnp.array([-2.0, 1, 1])}


def _public(module):
  return sorted(n for n in dir(module) if not n.startswith('_')
                and n not in ('functools', 'typing'))


def test_every_optax_tree_name_resolves():
  assert len(_public(optax.tree)) == 35
  missing = [n for n in _public(optax.tree) if not hasattr(otu, n)]
  assert not missing, missing


def test_every_optax_tree_utils_name_resolves():
  missing = [n for n in _public(optax.tree_utils) if not hasattr(tree_utils, n)]
  assert not missing, missing
  assert optim.tree_utils is tree_utils


def test_old_long_names_still_work():
  # Used across research/: they must not change.
  for name in ('tree_zeros_like', 'tree_norm', 'tree_add_scale', 'tree_cast',
               'tree_update_moment', 'safe_increment', 'abs_sq', 'global_norm',
               'tree_l2_norm', 'tree_bias_correction', 'safe_norm'):
    assert callable(getattr(otu, name)), name
  # tree_add_scale keeps casting to x's dtype; the Optax name promotes.
  x = {'a': jnp.ones(2, jnp.bfloat16)}
  y = {'a': jnp.ones(2, jnp.float32)}
  assert otu.tree_add_scale(x, 0.5, y)['a'].dtype == jnp.bfloat16
  assert otu.add_scale(x, 0.5, y)['a'].dtype == optax.tree.add_scale(x, 0.5, y)['a'].dtype


# (name, args): called as ours.<name>(*args) and optax.tree.<name>(*args).
CASES = [
    ('add', (X, Y)),
    ('add', (X, Y, Z)),
    ('sub', (X, Y)),
    ('mul', (X, Y)),
    ('div', (X, Y)),
    ('scale', (0.3, X)),
    ('add_scale', (X, 0.3, Y)),
    ('add_scale', ({'a': None, 'b': jnp.ones(2)}, 2.0, {'a': None, 'b': jnp.ones(2)})),
    ('vdot', (X, Y)),
    ('vdot', (CPLX, CPLX2)),
    ('sum', (X,)),
    ('max', (X,)),
    ('min', (X,)),
    ('max', ({'e': jnp.zeros((0,)), 'f': jnp.array([1.0, 4.0])},)),
    ('min', ({},)),
    ('size', (X,)),
    ('conj', (CPLX,)),
    ('real', (CPLX,)),
    ('norm', (X,)),
    ('norm', (X, 1)),
    ('norm', (X, 'inf')),
    ('norm', (X, jnp.inf, True)),
    ('norm', (CPLX, 2, True)),
    ('norm', (CPLX,)),
    ('clip', (X, -1.0, 2.0)),
    ('clip', (X, None, 0.0)),
    ('batch_shape', (X, (2,))),
    ('zeros_like', (X,)),
    ('zeros_like', (X, jnp.int32)),
    ('ones_like', (X,)),
    ('full_like', (X, 7.0)),
    ('full_like', (X, 7, jnp.bfloat16)),
    ('where', (True, X, Y)),
    ('where', (jnp.array(False), X, Y)),
    ('cast', (X, jnp.bfloat16)),
    ('cast', (X, None)),
    ('cast_like', (Y, otu.cast(X, jnp.bfloat16))),
    ('allclose', (X, X)),
    ('allclose', (X, Y)),
    ('allclose', (X, Z, 1.0, 1.0)),
    ('update_moment', (X, Y, 0.9, 2)),
    ('update_moment', ({'a': None, 'b': jnp.ones(2)}, {'a': None, 'b': jnp.ones(2)}, 0.5, 1)),
    ('update_infinity_moment', (X, Y, 0.9, 1e-3)),
    ('update_moment_per_elem_norm', (CPLX, jax.tree.map(jnp.abs, CPLX2), 0.9, 2)),
    ('update_moment_per_elem_norm', (X, jax.tree.map(jnp.abs, Y), 0.9, 3)),
    ('bias_correction', (X, 0.9, jnp.int32(3))),
    ('dtype', (X,)),
    ('dtype', ({'a': jnp.ones(1, jnp.bfloat16), 'b': jnp.ones(1)}, 'promote')),
    ('dtype', ({'a': jnp.ones(1, jnp.float16), 'b': jnp.ones(1)}, 'lowest')),
    ('dtype', ({'a': jnp.ones(1, jnp.float16), 'b': jnp.ones(1)}, 'highest')),
    ('dtype', ({},)),
    ('split_key_like', (jax.random.key(1), X)),
    ('random_like', (jax.random.key(2), X)),
    ('unwrap_random_key_data', ({'k': jax.random.key(4), 'x': X['a']},)),
]


def _same(ours, ref):
  ours = otu.unwrap_random_key_data(ours)
  ref = optax.tree.unwrap_random_key_data(ref)
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    if isinstance(b, np.dtype):
      assert a == b, (a, b)
      continue
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('name,args', CASES, ids=[f'{n}-{i}' for i, (n, _) in enumerate(CASES)])
def test_equals_optax(name, args):
  _same(getattr(otu, name)(*args), getattr(optax.tree, name)(*args))
  _same(getattr(tree_utils, 'tree_' + name)(*args),
        getattr(optax.tree_utils, 'tree_' + name)(*args))


def test_sum_associative_reduction_and_dtype_errors():
  _same(otu.sum(X, associative_reduction=True),
        optax.tree.sum(X, associative_reduction=True))
  mixed = {'a': jnp.ones(1, jnp.int32), 'b': jnp.ones(1, jnp.uint32)}
  with pytest.raises(ValueError, match='Expected dtype'):
    otu.dtype(mixed)
  with pytest.raises(ValueError, match='cannot be ordered'):
    otu.dtype({'a': jnp.ones(1, jnp.bfloat16), 'b': jnp.ones(1, jnp.float16)},
              'highest')
  with pytest.raises(ValueError, match="mixed_dtype_handler='largest'"):
    otu.dtype(mixed, 'largest')
  with pytest.raises(ValueError, match='ord'):
    otu.norm(X, ord=3)


# ---------------------------------------------------------------------------
# get / set / get_all_with_path / map_params on real optimizer states: ours
# on our states against Optax's on Optax's (same structure and field names).
# ---------------------------------------------------------------------------

PARAMS = {'w': jnp.ones((2, 3)), 'b': jnp.zeros(3)}


def _state(m):
  opt = m.chain(m.add_noise(1.0, 0.9, key=0), m.inject_hyperparams(m.sgd)(
      learning_rate=0.1, momentum=0.9), m.scale_by_adam())
  return opt, opt.init(PARAMS)


def _paths(found):
  return [(jax.tree_util.keystr(p), v) for p, v in found]


@pytest.mark.parametrize('key', ['count', 'learning_rate', 'mu', 'AddNoiseState',
                                 'ScaleByAdamState', 'absent'])
def test_get_all_with_path_equals_optax(key):
  ours = _paths(otu.get_all_with_path(_state(optim)[1], key))
  ref = _paths(optax.tree.get_all_with_path(_state(optax)[1], key))
  assert [p for p, _ in ours] == [p for p, _ in ref]
  assert len(ours) == (0 if key == 'absent' else len(ref)) and (key == 'absent' or ours)
  # Our state classes are not Optax's: compare the leaves.
  _same(jax.tree.leaves([v for _, v in ours]), jax.tree.leaves([v for _, v in ref]))


def test_get_with_filtering_and_errors():
  state = _state(optim)[1]
  with pytest.raises(KeyError, match="multiple values for 'count'"):
    otu.get(state, 'count')
  assert otu.get(state, 'absent', default=7) == 7
  in_adam = lambda path, _: 'ScaleByAdamState' in str(path[-1])  # noqa: E731
  count = otu.get(state, 'count', filtering=in_adam)
  ref_count = optax.tree.get(_state(optax)[1], 'count', filtering=in_adam)
  assert int(count) == int(ref_count) == 0
  assert isinstance(otu.get(state, 'AddNoiseState'), optim.AddNoiseState)


def test_set_equals_optax():
  is_array = lambda path, v: isinstance(v, jax.Array)  # noqa: E731
  for module, tree_mod in ((optim, otu), (optax, optax.tree)):
    _, state = _state(module)
    new = tree_mod.set(state, is_array, learning_rate=jnp.asarray(0.5))
    assert float(tree_mod.get(new, 'learning_rate', filtering=is_array)) == 0.5
    new = tree_mod.set(state, mu={'w': jnp.full((2, 3), 2.0), 'b': jnp.ones(3)})
    chex.assert_trees_all_close(tree_mod.get(new, 'mu')['w'], jnp.full((2, 3), 2.0))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    with pytest.raises(KeyError, match="no values matching 'absent'"):
      tree_mod.set(state, absent=1)
  # The same edits give the same leaves in ours and Optax's.
  ours = otu.set(_state(optim)[1], count=jnp.int32(5))
  ref = optax.tree.set(_state(optax)[1], count=jnp.int32(5))
  _same(jax.tree.leaves(otu.unwrap_random_key_data(ours)),
        jax.tree.leaves(optax.tree.unwrap_random_key_data(ref)))


def test_map_params_equals_optax():
  for module, tree_mod in ((optim, otu), (optax, optax.tree)):
    opt, state = _state(module)
    mapped = tree_mod.map_params(opt, lambda p: p + 1.0, state,
                                 transform_non_params=lambda _: None)
    # The moments (params-shaped) are mapped; counts and keys become None.
    assert float(tree_mod.get(mapped, 'mu')['w'][0, 0]) == 1.0
    assert tree_mod.get(mapped, 'AddNoiseState').count is None
  # Also with an init function and extra trees.
  opt, state = _state(optim)
  specs = jax.tree.map(lambda p: p.shape, PARAMS)
  shapes = otu.map_params(opt.init, lambda _, s: s, state, specs,
                          is_leaf=lambda x: isinstance(x, tuple))
  assert otu.get(shapes, 'nu') == specs


def test_named_tuple_key_prints_as_optax():
  key = tree_utils.NamedTupleKey('ScaleByAdamState', 'mu')
  assert str(key) == str(optax.tree_utils.NamedTupleKey('ScaleByAdamState', 'mu'))
