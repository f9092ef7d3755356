"""research.optim.projections against optax.projections, and each defining property.

Every projection is run on a small pytree (a vector and a matrix) outside and
inside its set; ours must equal Optax's (rtol 1e-6), lie in the set, and be
no farther from the input than other points of the set.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim import projections
from tests.optim import batched
from tests.optim import harness

TOL = harness.TOLERANCES[jnp.dtype('float32')]
_rng = np.random.default_rng(0)


def _tree(scale=1.0):
  return {'w': jnp.asarray(_rng.normal(size=5).astype(np.float32) * scale),
          'b': jnp.asarray(_rng.normal(size=(2, 3)).astype(np.float32) * scale)}


X = _tree(2.0)  # Outside the unit balls.
SMALL = _tree(0.05)  # Inside them.
A = _tree()
LOWER = {'w': jnp.full(5, -0.5), 'b': jnp.full((2, 3), -1.0)}
UPPER = {'w': jnp.full(5, 0.5), 'b': jnp.full((2, 3), 0.2)}
VECTOR = jnp.asarray(_rng.normal(size=7).astype(np.float32) * 3)

# (id, name, args): ours and Optax's ``name(*args)``.
CASES = [
    ('non-negative', 'projection_non_negative', (X,)),
    ('box', 'projection_box', (X, LOWER, UPPER)),
    ('box-vector', 'projection_box', (VECTOR, -1.0, 2.0)),
    ('hypercube', 'projection_hypercube', (VECTOR,)),
    ('hypercube-scale', 'projection_hypercube', (VECTOR, 0.5)),
    ('simplex', 'projection_simplex', (X,)),
    ('simplex-scale', 'projection_simplex', (X, 3.0)),
    ('simplex-vector', 'projection_simplex', (VECTOR,)),
    ('simplex-large', 'projection_simplex', (VECTOR * 1e4,)),
    ('simplex-zeros', 'projection_simplex', (jnp.zeros(7),)),
    ('l1-sphere', 'projection_l1_sphere', (X,)),
    ('l1-sphere-inside', 'projection_l1_sphere', (SMALL, 2.0)),
    ('l1-ball', 'projection_l1_ball', (X,)),
    ('l1-ball-scale', 'projection_l1_ball', (X, 2.5)),
    ('l1-ball-inside', 'projection_l1_ball', (SMALL,)),
    ('l2-sphere', 'projection_l2_sphere', (X,)),
    ('l2-sphere-inside', 'projection_l2_sphere', (SMALL, 2.0)),
    ('l2-ball', 'projection_l2_ball', (X,)),
    ('l2-ball-inside', 'projection_l2_ball', (SMALL, 2.0)),
    ('linf-ball', 'projection_linf_ball', (X,)),
    ('linf-ball-scale', 'projection_linf_ball', (X, 0.3)),
    ('vector', 'projection_vector', (X, A)),
    ('hyperplane', 'projection_hyperplane', (X, A, 0.7)),
    ('halfspace-outside', 'projection_halfspace', (X, A, -20.0)),
    ('halfspace-inside', 'projection_halfspace', (X, A, 20.0)),
]
CASE_IDS = [c[0] for c in CASES]


@functools.cache
def _outputs(library: str) -> dict:
  module = projections if library == 'ours' else optax.projections
  out = batched.run_calls(
      [(getattr(module, name), args, {}) for _, name, args in CASES])
  return dict(zip(CASE_IDS, out))


def _case(case_id):
  return {c[0]: c for c in CASES}[case_id]


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize('case_id', CASE_IDS)
def test_equals_optax(case_id):
  ours, ref = _outputs('ours')[case_id], _outputs('optax')[case_id]
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=case_id)
    assert a.dtype == b.dtype


def test_every_projection_is_tested():
  public = {n for n in dir(optax.projections) if not n.startswith('_')}
  assert public - {c[1] for c in CASES} == set()


def test_every_optax_name_resolves():
  public = {n for n in dir(optax.projections) if not n.startswith('_')}
  assert len(public) == 12
  assert public <= set(dir(optim.projections))
  assert optim.projections is projections


# Membership of each set, on the flat result y (args: the case's arguments
# after the input), with a float32 slack.
def _scale(args, default=1.0):
  return float(args[0]) if args else default


def _in_halfspace(y, args):
  a = _flat(args[0])
  return a @ y <= args[1] + 1e-4


IN_SET = {
    'projection_non_negative': lambda y, args: np.all(y >= 0),
    'projection_box': lambda y, args: np.all(
        (y >= _flat(args[0])) & (y <= _flat(args[1]))),
    'projection_hypercube': lambda y, args: np.all(
        (y >= 0) & (y <= _scale(args) + 1e-6)),
    'projection_simplex': lambda y, args: np.all(y >= 0) and np.isclose(
        y.sum(), _scale(args), rtol=1e-5),
    'projection_l1_sphere': lambda y, args: np.isclose(
        np.abs(y).sum(), _scale(args), rtol=1e-5),
    'projection_l1_ball': lambda y, args: (
        np.abs(y).sum() <= _scale(args) * (1 + 1e-5)),
    'projection_l2_sphere': lambda y, args: np.isclose(
        np.linalg.norm(y), _scale(args), rtol=1e-5),
    'projection_l2_ball': lambda y, args: (
        np.linalg.norm(y) <= _scale(args) * (1 + 1e-5)),
    'projection_linf_ball': lambda y, args: np.abs(y).max() <= _scale(args),
    'projection_vector': lambda y, args: np.allclose(
        y, (y @ _flat(args[0])) / (_flat(args[0]) @ _flat(args[0])) * _flat(args[0]),
        atol=1e-5),
    'projection_hyperplane': lambda y, args: np.isclose(
        _flat(args[0]) @ y, args[1], atol=1e-4),
    'projection_halfspace': _in_halfspace,
}


@pytest.mark.parametrize('case_id', CASE_IDS)
def test_result_is_in_the_set(case_id):
  _, name, args = _case(case_id)
  y = _flat(_outputs('ours')[case_id])
  assert IN_SET[name](y, args[1:]), f'{case_id}: {y} is not in the set'


CONVEX = {'projection_non_negative', 'projection_box', 'projection_hypercube',
          'projection_simplex', 'projection_l1_ball', 'projection_l2_ball',
          'projection_linf_ball', 'projection_hyperplane', 'projection_halfspace'}
CONVEX_IDS = [c[0] for c in CASES if c[1] in CONVEX]


@functools.cache
def _projected_random_points() -> dict:
  """Three random points per case, projected by ours (so in the set)."""
  rng = np.random.default_rng(1)
  calls, ids = [], []
  for case_id, name, args in CASES:
    if case_id in CONVEX_IDS:
      for _ in range(3):
        z = jax.tree.map(lambda leaf: jnp.asarray(
            rng.normal(size=jnp.shape(leaf)).astype(np.float32) * 3), args[0])
        calls.append((getattr(projections, name), (z, *args[1:]), {}))
        ids.append(case_id)
  out = batched.run_calls(calls)
  return {i: [_flat(o) for o, j in zip(out, ids) if j == i] for i in CONVEX_IDS}


@pytest.mark.parametrize('case_id', CONVEX_IDS)
def test_nearest_point_of_a_convex_set(case_id):
  """Optimality of y = P(x): <x - y, z - y> <= 0 for every z in the set."""
  x, y = _flat(_case(case_id)[2][0]), _flat(_outputs('ours')[case_id])
  for z in _projected_random_points()[case_id]:
    assert (x - y) @ (z - y) <= 1e-4 * (1 + np.abs(x).sum() + np.abs(z).sum()), case_id


def test_inside_points_are_kept():
  out = _outputs('ours')
  for case_id in ('l1-ball-inside', 'l2-ball-inside'):
    np.testing.assert_allclose(_flat(out[case_id]), _flat(SMALL), rtol=TOL)
  np.testing.assert_allclose(_flat(out['halfspace-inside']), _flat(X), rtol=TOL)


def test_box_clips_each_leaf_and_takes_scalar_bounds_on_a_tree():
  out = _outputs('ours')['box']
  for k in X:
    np.testing.assert_array_equal(out[k], np.clip(X[k], LOWER[k], UPPER[k]))
  # Scalar bounds on a tree: Optax maps them leaf by leaf only for a single
  # array; here they broadcast to every leaf.
  scalar = projections.projection_hypercube(X, 0.5)
  for k in X:
    np.testing.assert_array_equal(scalar[k], np.clip(X[k], 0.0, 0.5))


def test_simplex_gradient_equals_optax():
  """The custom JVP: the Jacobian of the projection on its support."""
  def jac(module):
    return jax.jacfwd(module.projection_simplex)(VECTOR * 0.1)
  ours, ref = batched.run_fast(lambda: (jac(projections), jac(optax.projections)))
  np.testing.assert_allclose(ours, ref, rtol=TOL, atol=TOL)
  # Several coordinates stay in the support, so the Jacobian is not 0.
  assert np.count_nonzero(np.diag(ours)) > 1
