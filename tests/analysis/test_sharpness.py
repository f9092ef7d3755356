"""Sharpness, preconditioned sharpness, Hutchinson's trace, stability thresholds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.analysis import sharpness


def _quadratic(eigenvalues, seed=0):
  """``f(w) = 0.5 w^T A w`` with ``A = Q diag(eigenvalues) Q^T``; params a dict."""
  n = len(eigenvalues)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
  a = jnp.asarray(q @ np.diag(eigenvalues) @ q.T, jnp.float32)

  def f(p):
    w = jnp.concatenate([p['u'], p['v'].ravel()])
    return 0.5 * w @ a @ w

  params = dict(u=jnp.ones(2), v=jnp.ones((2, (n - 2) // 2)))
  return f, params, q


EIGS = np.array([10.0, 3.0, 1.0, 0.5, -0.2, 0.1, 2.0, 0.05])


def test_sharpness_is_the_top_eigenvalue_of_a_known_hessian():
  f, params, _ = _quadratic(EIGS)
  lam = jax.jit(lambda p, k: sharpness.sharpness(f, p, 6, k))(params, jax.random.key(0))
  np.testing.assert_allclose(lam, EIGS.max(), rtol=1e-5)


def test_gd_beyond_two_over_lambda_diverges_along_the_top_eigenvector():
  f, params, q = _quadratic(EIGS)
  top = q[:, np.argmax(EIGS)]
  lam = float(sharpness.sharpness(f, params, 8, jax.random.key(1)))
  threshold = sharpness.stability_threshold('gd', 0.1)
  assert threshold == pytest.approx(20.0)

  @jax.jit
  def run(eta):
    tx = optim.make('gd', 0.1)  # the rate is state: set below

    def step(carry, _):
      p, s = carry
      u, s = tx.update(jax.grad(f)(p), s, p)
      return (optim.apply_updates(p, u), s), None
    state = optim.set_hyperparams_in(tx.init(params), learning_rate=eta)
    (p, _), _ = jax.lax.scan(step, (params, state), None, length=60)
    return jnp.concatenate([p['u'], p['v'].ravel()])

  def along_top(eta):
    return abs(np.asarray(run(jnp.float32(eta)), np.float64) @ top)

  start = abs(np.concatenate([np.ones(2), np.ones(6)]) @ top)
  stable, unstable = 2.0 / lam * 0.95, 2.0 / lam * 1.05
  # |1 - eta lam|^60: 0.9^60 = 2e-3 and 1.1^60 = 304 times the start.
  assert along_top(stable) < 1e-2 * start
  assert along_top(unstable) > 100 * start


def test_preconditioned_sharpness_is_the_top_eigenvalue_of_p_inverse_h():
  f, params, _ = _quadratic(EIGS, seed=3)
  precond = dict(u=jnp.asarray([2.0, 0.5]), v=jnp.full((2, 3), 3.0))
  h = jax.hessian(lambda w: f(dict(u=w[:2], v=w[2:].reshape(2, 3))))(jnp.ones(8))
  p = np.concatenate([[2.0, 0.5], np.full(6, 3.0)])
  exact = np.max(np.linalg.eigvals(np.diag(1 / p) @ np.asarray(h, np.float64)).real)
  got = sharpness.preconditioned_sharpness(f, params, precond, 8, jax.random.key(0))
  np.testing.assert_allclose(got, exact, rtol=1e-4)


def test_adam_preconditioner_matches_adams_step():
  # Adam's update is -eta * mu / P with the raw first moment.
  params = dict(w=jnp.asarray([0.3, -1.0, 2.0]))
  tx = optim.adam(0.01, b1=0.9, b2=0.99, eps=1e-3)
  state = tx.init(params)
  for g in ([1.0, 2.0, -1.0], [0.5, -1.0, 0.2]):
    updates, state = tx.update(dict(w=jnp.asarray(g)), state, params)
  adam = state[0]
  p = sharpness.adam_preconditioner(adam.nu, adam.count, 0.9, 0.99, 1e-3)
  np.testing.assert_allclose(updates['w'], -0.01 * adam.mu['w'] / p['w'], rtol=1e-5)


def test_hutchinson_trace_is_unbiased_and_exact_for_a_diagonal_hessian():
  f, params, _ = _quadratic(EIGS)
  est = sharpness.hutchinson_trace(f, params, jax.random.key(0), 4000)
  np.testing.assert_allclose(est, EIGS.sum(), rtol=0.05)
  diag = jnp.asarray(EIGS, jnp.float32)
  g = lambda p: 0.5 * jnp.sum(diag * p ** 2)  # noqa: E731
  # z_i^2 = 1 for Rademacher probes: every probe gives the exact trace.
  np.testing.assert_allclose(sharpness.hutchinson_trace(g, jnp.ones(8), jax.random.key(1), 3),
                             EIGS.sum(), rtol=1e-5)


def test_thresholds_and_bad_input():
  assert sharpness.stability_threshold('adam', 0.01, 0.9) == pytest.approx(3800.0)
  with pytest.raises(ValueError, match='eta=0'):
    sharpness.stability_threshold('gd', 0)
  with pytest.raises(ValueError, match="optimizer='lion'"):
    sharpness.stability_threshold('lion', 0.1)
  f, params, _ = _quadratic(EIGS)
  with pytest.raises(ValueError, match=r'order=9 is out of range; allowed: an int in \[1, 8\]'):
    sharpness.sharpness(f, params, 9, jax.random.key(0))
  with pytest.raises(ValueError, match='num_probes'):
    sharpness.hutchinson_trace(f, params, jax.random.key(0), 0)


def test_edge_of_stability_summary():
  steps = [10, 20, 30, 40, 50]
  s = sharpness.edge_of_stability_summary(steps, [5.0, 19.0, 21.0, 19.0, 20.4], 20.0)
  assert s['first_step'] == 30
  assert s['median_ratio'] == pytest.approx(1.02)
  assert s['measurements_after'] == 3
  never = sharpness.edge_of_stability_summary(steps, [1.0] * 5, 20.0)
  assert never['first_step'] is None and never['max_ratio'] == pytest.approx(0.05)
