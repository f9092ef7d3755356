"""Hessian-vector products, Lanczos, spectral density and critical points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import saddle_escape
from research.analysis import hessian


def _mlp_loss():
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  params = dict(w1=jax.random.normal(k1, (3, 4)), b1=jnp.zeros(4),
                w2=jax.random.normal(k2, (4, 2)))
  x = jax.random.normal(k3, (5, 3))
  y = jax.random.normal(k4, (5, 2))

  def loss(p):
    h = jnp.tanh(x @ p['w1'] + p['b1'])
    return jnp.mean((h @ p['w2'] - y) ** 2)

  return loss, params


def test_hvp_equals_full_hessian_times_v():
  loss, params = _mlp_loss()
  v = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), params)
  hv = hessian.hessian_vector_product(loss, params, v)
  full = hessian.full_hessian(loss, params)
  n = hessian.num_params(params)
  assert full.shape == (n, n) == (24, 24)
  v_flat, _ = ravel_pytree(v)
  np.testing.assert_allclose(ravel_pytree(hv)[0], full @ v_flat, rtol=1e-5, atol=1e-6)
  matvec, dim = hessian.hvp_operator(loss, params)
  assert dim == n
  np.testing.assert_allclose(matvec(v_flat), full @ v_flat, rtol=1e-5, atol=1e-6)


def test_lanczos_extreme_eigenvalues_match_eigh():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(200, 200))
  a = jnp.asarray((a + a.T) / 2, jnp.float32)
  exact = np.linalg.eigvalsh(np.asarray(a, np.float64))
  run = jax.jit(lambda v0: hessian.lanczos(lambda v: a @ v, v0, 80, jax.random.key(1)))
  result = run(jnp.asarray(rng.normal(size=200), jnp.float32))
  theta, tau = hessian.ritz_pairs(result)
  np.testing.assert_allclose(theta[0], exact[0], rtol=1e-4)
  np.testing.assert_allclose(theta[-1], exact[-1], rtol=1e-4)
  np.testing.assert_allclose(jnp.sum(tau), 1.0, rtol=1e-5)
  v = result.vectors  # full re-orthogonalization keeps V orthonormal
  np.testing.assert_allclose(v @ v.T, np.eye(80), atol=1e-5)


def test_lanczos_breakdown_keeps_exact_eigenvalues():
  # Two distinct eigenvalues: the Krylov space of any start has dimension 2.
  diag = jnp.asarray([-2.0] * 3 + [1.0] * 17)
  result = hessian.lanczos(lambda v: diag * v, jnp.ones(20), 6, jax.random.key(0))
  theta, _ = hessian.ritz_pairs(result)
  assert result.betas[1] == 0.0
  np.testing.assert_allclose(np.sort(theta), [-2, -2, -2, 1, 1, 1], atol=1e-5)


def test_hessian_lanczos_on_quadratic_and_order_check():
  lam = jnp.linspace(-3.0, 5.0, 30)
  fn = lambda p: 0.5 * jnp.sum(lam * p['x'] ** 2)  # noqa: E731
  params = dict(x=jnp.ones(30))
  lo, hi = hessian.extreme_eigenvalues(fn, params, 30, jax.random.key(0))
  np.testing.assert_allclose([lo, hi], [-3.0, 5.0], rtol=1e-4)
  with pytest.raises(ValueError, match='order=31'):
    hessian.hessian_lanczos(fn, params, 31, jax.random.key(0))
  with pytest.raises(ValueError, match='order=0'):
    hessian.lanczos(lambda v: v, jnp.ones(3), 0)


def test_spectral_density_and_index():
  lam = jnp.concatenate([-jnp.ones(10), 2 * jnp.ones(30)])
  fn = lambda x: 0.5 * jnp.sum(lam * x ** 2)  # noqa: E731
  d = hessian.spectral_density(fn, jnp.zeros(40), 10, 8, jax.random.key(0))
  assert d.ritz_values.shape == d.ritz_weights.shape == (8, 10)
  # Gauss quadrature of the step at 0: the index is 1/4 up to the sampling
  # error of 8 Gaussian starts in 40 dimensions (std about 0.07 / sqrt(8)).
  assert abs(float(hessian.critical_point_index(d)) - 0.25) < 0.08
  grid = jnp.linspace(-4, 5, 2001)
  phi = hessian.density_on_grid(d, grid, 0.1)
  np.testing.assert_allclose(jnp.sum(phi) * (grid[1] - grid[0]), 1.0, rtol=1e-3)
  assert float(hessian.critical_point_index(lam)) == 0.25


@pytest.mark.parametrize('name', sorted(saddle_escape.FUNCTIONS))
def test_known_critical_points_of_test_functions(name):
  spec = saddle_escape.FUNCTIONS[name]
  for point, kind in spec.critical_points:
    got = hessian.classify_critical_point(spec.fn, jnp.asarray(point))
    assert got.kind == kind, (name, point, got)


def test_critical_points_of_strict_saddle_and_chain():
  spec = saddle_escape.strict_saddle(6, 2)
  cp = hessian.classify_critical_point(spec.fn, jnp.zeros(6))
  assert cp.kind == 'saddle' and cp.index == pytest.approx(2 / 6)
  assert hessian.classify_critical_point(
      saddle_escape.strict_saddle(3, 3).fn, jnp.zeros(3)).kind == 'maximum'
  chain = saddle_escape.saddle_chain(4)
  for point, kind in chain.critical_points:
    cp = hessian.classify_critical_point(chain.fn, jnp.asarray(point), grad_tol=1e-5)
    assert cp.kind == kind and cp.index == pytest.approx(1 / 4)
  with pytest.raises(ValueError, match='not a critical point'):
    hessian.classify_critical_point(chain.fn, jnp.full(4, 0.3))


def test_classify_eigenvalues():
  assert hessian.classify_eigenvalues([1.0, 2.0]) == 'minimum'
  assert hessian.classify_eigenvalues([-1.0, -2.0]) == 'maximum'
  assert hessian.classify_eigenvalues([-1.0, 0.0, 2.0]) == 'saddle'
  assert hessian.classify_eigenvalues([0.0, 2.0]) == 'degenerate'
  assert hessian.classify_eigenvalues([1e-9, 2.0], tol=1e-6) == 'degenerate'
