"""second_order, perturbations and assignment against Optax's submodules.

Each call of ours and Optax's runs in one compiled program per library (see
``batched``); outputs are compared at rtol 1e-6 (float32), assignments
exactly, and checked against an independent reference: ``jax.hessian`` for
the Hessian diagonal, SciPy's ``linear_sum_assignment`` for the optimal cost.
"""

import functools
import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from scipy.optimize import linear_sum_assignment

from research import optim
from research.optim import assignment
from research.optim import perturbations
from research.optim import second_order
from tests.optim import batched
from tests.optim import harness

TOL = harness.TOLERANCES[jnp.dtype('float32')]
_rng = np.random.default_rng(0)


def _f32(*shape, scale=1.0):
  return jnp.asarray((_rng.normal(size=shape) * scale).astype(np.float32))


def _assert_close(ours, ref, what=''):
  assert jax.tree.structure(ours) == jax.tree.structure(ref), what
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=what)


@pytest.mark.parametrize('name', ['second_order', 'perturbations', 'assignment'])
def test_every_optax_name_resolves(name):
  ref = importlib.import_module(f'optax.{name}')
  public = {n for n in dir(ref) if not n.startswith('_')}
  assert len(public) >= 2
  ours = getattr(optim, name)
  assert ours is importlib.import_module(f'research.optim.{name}')
  assert public <= set(dir(ours)), sorted(public - set(dir(ours)))


# --- second_order. ---------------------------------------------------------------

PARAMS = {'w1': _f32(3, 4), 'b1': _f32(4), 'w2': _f32(4)}
INPUTS = _f32(5, 3)
TARGETS = _f32(5)
V = _f32(3 * 4 + 4 + 4)


def _mlp_loss(params, inputs, targets):
  hidden = jnp.tanh(inputs @ params['w1'] + params['b1'])
  return jnp.mean((hidden @ params['w2'] - targets) ** 2)


def _jax_reference(inputs, targets):
  """hvp, diag(H) and g*g from jax.hessian and jax.grad on the flat params."""
  flat, unravel = ravel_pytree(PARAMS)
  hessian = jax.hessian(lambda p: _mlp_loss(unravel(p), inputs, targets))(flat)
  grad = ravel_pytree(jax.grad(_mlp_loss)(PARAMS, inputs, targets))[0]
  return unravel(hessian @ V), jnp.diag(hessian), grad**2


def _second_order_program(module):
  def run(v, params, inputs, targets):
    return (module.hvp(_mlp_loss, v, params, inputs, targets),
            module.hessian_diag(_mlp_loss, params, inputs, targets),
            module.fisher_diag(_mlp_loss, params, inputs, targets))
  return run


@functools.cache
def _second_order():
  """ours, Optax's and jax's (hvp, hessian_diag, fisher_diag), one program."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    return batched.run_calls([
        (_second_order_program(second_order), (V, PARAMS, INPUTS, TARGETS), {}),
        (_second_order_program(optax.second_order), (V, PARAMS, INPUTS, TARGETS), {}),
        (_jax_reference, (INPUTS, TARGETS), {}),
    ])


NAMES = ['hvp', 'hessian_diag', 'fisher_diag']


@pytest.mark.parametrize('k', range(3), ids=NAMES)
def test_second_order_equals_optax_and_jax(k):
  ours, ref, exact = (out[k] for out in _second_order())
  _assert_close(ours, ref, NAMES[k])
  assert np.any(np.asarray(ravel_pytree(ours)[0]) != 0), NAMES[k]
  # Another route to the same numbers: rounding differs, hence 1e-5.
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(exact)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=NAMES[k])


@pytest.mark.parametrize('name', NAMES)
def test_second_order_is_deprecated_as_in_optax(name):
  run = {
      'hvp': lambda: second_order.hvp(_mlp_loss, V, PARAMS, INPUTS, TARGETS),
      'hessian_diag': lambda: second_order.hessian_diag(
          _mlp_loss, PARAMS, INPUTS, TARGETS),
      'fisher_diag': lambda: second_order.fisher_diag(
          _mlp_loss, PARAMS, INPUTS, TARGETS),
  }[name]
  with pytest.warns(DeprecationWarning, match=f'{name} is deprecated'):
    jax.eval_shape(run)


# --- perturbations. ------------------------------------------------------------

KEY = jax.random.key(3)
X = {'a': _f32(4), 'b': _f32(2, 3)}
W = {'a': _f32(4), 'b': _f32(2, 3)}


def _argmax_one_hot(tree):
  """A piecewise-constant function of a tree: no useful gradient of its own."""
  return jax.tree.map(
      lambda x: jax.nn.one_hot(jnp.argmax(x.ravel()), x.size).reshape(x.shape), tree)


PERTURB_ROWS = [
    ('gumbel-baseline', 'Gumbel', dict(num_samples=64, sigma=0.5)),
    ('normal', 'Normal', dict(num_samples=32, sigma=0.3, use_baseline=False)),
]


def _perturbed_value_and_grad(module, noise, kwargs):
  fn = module.make_perturbed_fun(_argmax_one_hot, noise=getattr(module, noise)(),
                                 **kwargs)

  def run(key, x, w):
    objective = lambda y: optim.tree.tree_vdot(w, fn(key, y))  # noqa: E731
    return fn(key, x), jax.grad(objective)(x)

  return run


@functools.cache
def _perturbed(library):
  module = perturbations if library == 'ours' else optax.perturbations
  return dict(zip([r[0] for r in PERTURB_ROWS], batched.run_calls(
      [(_perturbed_value_and_grad(module, noise, kw), (KEY, X, W), {})
       for _, noise, kw in PERTURB_ROWS])))


@pytest.mark.parametrize('row', [r[0] for r in PERTURB_ROWS])
def test_perturbed_fun_equals_optax(row):
  value, grad = _perturbed('ours')[row]
  ref_value, ref_grad = _perturbed('optax')[row]
  _assert_close(value, ref_value, f'{row}: value')
  _assert_close(grad, ref_grad, f'{row}: gradient')
  # A mean of one-hot vectors sums to 1; the gradient is not identically 0.
  for leaf in jax.tree.leaves(value):
    np.testing.assert_allclose(jnp.sum(leaf), 1.0, rtol=1e-5)
  assert np.any(ravel_pytree(grad)[0] != 0)


@pytest.mark.parametrize('noise', ['Gumbel', 'Normal'])
def test_noise_equals_optax(noise):
  ours, ref = getattr(perturbations, noise)(), getattr(optax.perturbations, noise)()
  sample = ours.sample(KEY, (3,), jnp.float32)
  _assert_close(sample, ref.sample(KEY, (3,), jnp.float32))
  _assert_close(ours.log_prob(sample), ref.log_prob(sample))


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_samples=0), 'num_samples=0'),
    (dict(num_samples=2.5), 'num_samples=2.5'),
    (dict(sigma=0.0), 'sigma=0.0'),
])
def test_perturbed_fun_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    perturbations.make_perturbed_fun(_argmax_one_hot, **kwargs)


# --- assignment. ---------------------------------------------------------------

# Square, wide and tall float costs; an integer cost (Optax's docstring example).
COSTS = {
    'square': _f32(6, 6),
    'wide': _f32(3, 7),
    'tall': _f32(7, 3),
    'column': _f32(4, 1),
    'int': jnp.array([[8, 4, 7], [5, 2, 3], [9, 6, 7], [9, 4, 8]]),
}
FUNCTIONS = ['hungarian_algorithm', 'base_hungarian_algorithm']


@functools.cache
def _assignments(library):
  module = assignment if library == 'ours' else optax.assignment
  calls = [(getattr(module, fn), (cost,), {}) for fn in FUNCTIONS
           for cost in COSTS.values()]
  out = batched.run_calls(calls)
  keys = [(fn, shape) for fn in FUNCTIONS for shape in COSTS]
  return dict(zip(keys, out))


@pytest.mark.parametrize('fn', FUNCTIONS)
@pytest.mark.parametrize('shape', list(COSTS))
def test_assignment_equals_optax_and_is_optimal(fn, shape):
  i, j = _assignments('ours')[fn, shape]
  ref_i, ref_j = _assignments('optax')[fn, shape]
  # The same pairs in the same order (the optimum is unique for these costs).
  np.testing.assert_array_equal(i, ref_i)
  np.testing.assert_array_equal(j, ref_j)
  cost = np.asarray(COSTS[shape])
  rows, cols = linear_sum_assignment(cost)
  assert len(i) == min(cost.shape)
  assert len(set(np.asarray(i).tolist())) == len(i) == len(set(np.asarray(j).tolist()))
  np.testing.assert_allclose(cost[i, j].sum(), cost[rows, cols].sum(), rtol=1e-6)


def test_assignment_of_empty_matrix():
  for fn in FUNCTIONS:
    i, j = getattr(assignment, fn)(jnp.zeros((0, 3)))
    ref_i, ref_j = getattr(optax.assignment, fn)(jnp.zeros((0, 3)))
    assert i.shape == j.shape == ref_i.shape == ref_j.shape == (0,)


def test_assignment_needs_a_matrix():
  with pytest.raises(ValueError, match=r'cost_matrix has shape \(4,\)'):
    assignment.hungarian_algorithm(jnp.ones(4))
