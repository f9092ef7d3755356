"""Perturbed gradient descent, saddle-free Newton and Newton."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.optim import saddle


def _run(opt, fn, x0, steps, needs_value=False):
  def body(carry, _):
    x, state = carry
    g = jax.grad(fn)(x)
    extra = dict(value_fn=fn) if needs_value else {}
    u, state = opt.update(g, state, x, **extra)
    return (optim.apply_updates(x, u), state), None

  (x, state), _ = jax.jit(lambda x0: jax.lax.scan(
      body, (x0, opt.init(x0)), None, length=steps))(x0)
  return x, state


def _strict_saddle(x):
  lam = jnp.asarray([1.0, 2.0, -0.5, 1.0])
  return 0.5 * jnp.sum(lam * x * x)


def test_perturbed_gd_leaves_exact_saddle_where_gd_stays():
  x0 = jnp.zeros(4)
  x_gd, _ = _run(optim.sgd(0.1), _strict_saddle, x0, 200)
  np.testing.assert_array_equal(x_gd, x0)
  x_p, state = _run(saddle.perturbed_gd(0.1, g_thres=1e-3, t_thres=20, radius=1e-2),
                    _strict_saddle, x0, 200)
  assert float(jnp.linalg.norm(x_p)) > 1.0
  assert float(_strict_saddle(x_p)) < -0.1
  # Only the negative-curvature coordinate grew.
  assert float(jnp.max(jnp.abs(x_p[jnp.asarray([0, 1, 3])]))) < 1e-3
  assert int(state.perturbations) >= 1


def test_perturbation_rules():
  """A kick only when ||g|| <= g_thres, at most once per t_thres steps, inside the ball."""
  tx = saddle.perturbed(optim.identity(), g_thres=0.5, t_thres=3, radius=0.1, seed=1)
  params = dict(a=jnp.zeros((3, 2)), b=jnp.zeros(5))
  state = tx.init(params)
  small = jax.tree.map(jnp.zeros_like, params)
  big = jax.tree.map(jnp.ones_like, params)
  kicks = []
  for t, g in enumerate([small, small, small, small, small, big, small]):
    u, state = tx.update(g, state, params)
    delta = optim.tree.tree_norm(optim.tree.tree_sub(u, g))
    assert float(delta) <= 0.1 + 1e-6
    kicks.append(bool(delta > 0))
  # t=1 kicks; t=2,3,4 are within t_thres; t=5 may kick; t=6 has a big gradient.
  assert kicks == [True, False, False, False, True, False, False]
  assert int(state.perturbations) == 2 and int(state.last_perturbation) == 5


def test_ball_sample_is_uniform_in_the_ball():
  d = 3
  keys = jax.random.split(jax.random.key(0), 4000)
  xs = jax.vmap(lambda k: saddle.sample_ball(k, jnp.zeros(d), 2.0))(keys)
  r = np.asarray(jnp.linalg.norm(xs, axis=1)) / 2.0
  assert r.max() <= 1.0 + 1e-6
  # Uniform in the ball: P(|x| <= s r) = s^d; check at s = 1/2 (expected 1/8).
  assert abs(np.mean(r <= 0.5) - 0.125) < 0.02
  np.testing.assert_allclose(np.mean(np.asarray(xs), 0), 0.0, atol=0.1)


def _five_saddle(x):
  return 5.0 * x[0] ** 2 - x[1] ** 2


@pytest.mark.parametrize('order', [None, 2])
def test_saddle_free_newton_escapes_where_newton_converges(order):
  x0 = jnp.asarray([0.1, 0.05])
  x_n, _ = _run(saddle.newton(1.0, order=order), _five_saddle, x0, 5, needs_value=True)
  np.testing.assert_allclose(x_n, 0.0, atol=1e-6)
  x_s, _ = _run(saddle.saddle_free_newton(0.5, damping=0.0, order=order), _five_saddle,
                x0, 5, needs_value=True)
  # Exactly: x *= 1 - 0.5, y *= 1 + 0.5 per step.
  np.testing.assert_allclose(x_s, [0.1 * 0.5 ** 5, 0.05 * 1.5 ** 5], rtol=1e-4)


def test_saddle_free_newton_krylov_matches_exact_on_pytree():
  k1, k2 = jax.random.split(jax.random.key(3))
  a = jax.random.normal(k1, (6, 6))
  h = (a + a.T) / 2
  params = dict(u=jnp.ones(2), v=jnp.arange(4.0).reshape(2, 2))
  flat = lambda p: jnp.concatenate([p['u'], p['v'].ravel()])  # noqa: E731
  fn = lambda p: 0.5 * flat(p) @ h @ flat(p) + jnp.sum(flat(p))  # noqa: E731
  grads = jax.grad(fn)(params)
  lam, q = np.linalg.eigh(np.asarray(h, np.float64))
  g = np.asarray(flat(grads), np.float64)
  expected = q @ (q.T @ g / (np.abs(lam) + 0.1))
  for order in (None, 6):
    tx = saddle.scale_by_saddle_free_newton(damping=0.1, order=order)
    u, state = tx.update(grads, tx.init(params), params, value_fn=fn)
    assert jax.tree.structure(u) == jax.tree.structure(params)
    np.testing.assert_allclose(flat(u), expected, rtol=2e-4, atol=1e-5)
    assert int(state.count) == 1


def test_curvature_methods_need_value_fn_and_params():
  tx = saddle.saddle_free_newton()
  x = jnp.ones(2)
  with pytest.raises(ValueError, match='value_fn'):
    tx.update(x, tx.init(x), x)
  with pytest.raises(ValueError, match='params'):
    tx.update(x, tx.init(x), None, value_fn=jnp.sum)
  tx = saddle.newton(order=3)
  with pytest.raises(ValueError, match='order=3'):
    tx.update(x, tx.init(x), x, value_fn=lambda p: jnp.sum(p ** 2))


def test_bad_hyperparameters():
  with pytest.raises(ValueError, match='g_thres'):
    saddle.perturbed_gd(0.1, g_thres=-1.0)
  with pytest.raises(ValueError, match='radius'):
    saddle.perturbed_gd(0.1, radius=-1.0)
  with pytest.raises(ValueError, match='learning_rate'):
    saddle.perturbed_gd(-0.1)
  with pytest.raises(ValueError, match='damping'):
    saddle.saddle_free_newton(damping=-1.0)
  with pytest.raises(ValueError, match='order'):
    saddle.scale_by_newton(order=0)


def test_works_under_vmap_and_mixed_with_optax():
  # Our chain passes value_fn on; Optax's chain would not (it does not know our
  # GradientTransformationExtraArgs class and drops extra arguments).
  import optax  # the reference library, for mixing only
  tx = optim.chain(saddle.scale_by_saddle_free_newton(damping=0.0),
                   optax.scale_by_learning_rate(1.0))
  x0s = jnp.asarray([[0.1, 0.2], [-0.3, 0.1]])

  def step(x):
    u, _ = tx.update(jax.grad(_five_saddle)(x), tx.init(x), x, value_fn=_five_saddle)
    return x + u

  np.testing.assert_allclose(jax.vmap(step)(x0s), x0s * jnp.asarray([0.0, 2.0]), atol=1e-6)
