"""Each optimizer alias against Optax's function of the same name.

Rows are ``(name, kwargs)``; the same kwargs go to ours and to optax's. The
generic checks (float32 with and without jit, float64, a schedule as the
learning rate, complex64, dtype preservation, lax.cond stability, unknown
keyword arguments) come from ``harness.alias_suite``. One row per alias with
its defaults or a typical setting, plus rows for the options that change the
update rule; options that only the preconditioner sees are covered by
``test_transform.py``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def decay_matrices(params):
  """A mask as a callable: weight decay on leaves of rank >= 2 only."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


ALIASES = [
    ('sgd', dict(learning_rate=0.1)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ('adagrad', dict(learning_rate=0.1)),
    ('rmsprop', dict(learning_rate=0.01)),
    ('rmsprop', dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
    ('rmsprop', dict(learning_rate=0.01, eps_in_sqrt=False,
                     bias_correction=True, initial_scale=1.0)),
    ('rmsprop', dict(learning_rate=0.01, centered=True, momentum=0.5,
                     eps_in_sqrt=False)),
    ('adadelta', dict()),  # learning_rate=None: the paper's unit-free step.
    ('adadelta', dict(learning_rate=1.0, rho=0.5, eps=1e-4, weight_decay=0.1,
                      weight_decay_mask=decay_matrices)),
    ('adam', dict(learning_rate=0.1)),
    ('adam', dict(learning_rate=0.1, b1=0.0, eps_root=1e-8, nesterov=True)),
    ('adamw', dict(learning_rate=0.1, weight_decay=0.1, mask=decay_matrices,
                   nesterov=True)),
    ('nadam', dict(learning_rate=0.1)),
    ('nadamw', dict(learning_rate=0.1, weight_decay=0.1)),
    ('adamax', dict(learning_rate=0.1)),
    ('adamaxw', dict(learning_rate=0.1, weight_decay=0.1)),
    ('amsgrad', dict(learning_rate=0.1)),
    ('adabelief', dict(learning_rate=0.1)),
    ('adan', dict(learning_rate=0.1, weight_decay=0.1)),
    ('lion', dict(learning_rate=0.01)),
    ('radam', dict(learning_rate=0.1)),
    ('yogi', dict(learning_rate=0.1)),
    ('noisy_sgd', dict(learning_rate=0.1, key=0)),
    ('sign_sgd', dict(learning_rate=0.01)),
    ('signum', dict(learning_rate=0.01)),
    ('rprop', dict(learning_rate=0.01)),
    ('polyak_sgd', dict(max_learning_rate=0.5, scaling=0.5, f_min=-1.0)),
    ('optimistic_gradient_descent', dict(learning_rate=0.1, alpha=0.7,
                                         beta=0.1)),
    ('optimistic_adam_v2', dict(learning_rate=0.01)),
]
# Optax 0.2.8 supports complex params for these (its alias_test lists them).
COMPLEX = {
    'sgd', 'adabelief', 'adagrad', 'adam', 'adamax', 'adamaxw', 'adamw',
    'amsgrad', 'nadam', 'nadamw', 'radam', 'rmsprop', 'yogi',
}
EXTRA_ARGS = {'polyak_sgd'}
# rprop's learning_rate is the initial per-coordinate step size, stored in
# the state: Optax cannot take a schedule there, and neither do we.
SCHEDULED = {name for name, kw in ALIASES if 'learning_rate' in kw} - {'rprop'}

globals().update(harness.alias_suite(
    ALIASES, ours_module=optim, complex_names=COMPLEX,
    extra_args_names=EXTRA_ARGS, schedule_names=SCHEDULED,
))


def fast_decay(count):
  return 0.1 * 0.99**count


def slow_decay(count):
  return 0.1 * 0.995**count


def rosen_decay(count):
  return 0.01 * 0.999**count


def rosen_slow_decay(count):
  return 3e-3 * 0.9995**count


# name, quadratic kwargs, steps, tol, Rosenbrock kwargs, steps, tol.
# The starting losses are 10.5 (quadratic) and 12.5 (Rosenbrock).
# Methods whose step does not shrink with the gradient (sign-based: lion,
# sign_sgd, signum; and RMSProp, whose g / rms(g) is O(1) near the optimum)
# plateau at a loss set by the learning rate, so their rows use a decaying
# schedule and then reach tight tolerances.
CONVERGENCE = [
    ('sgd', dict(learning_rate=0.1, momentum=0.9), 500, 1e-6,
     dict(learning_rate=1e-3, momentum=0.9), 10000, 1e-3),
    ('adagrad', dict(learning_rate=1.0), 500, 1e-10,
     dict(learning_rate=0.5), 10000, 1e-4),
    ('rmsprop', dict(learning_rate=fast_decay), 1000, 1e-10,
     dict(learning_rate=rosen_decay), 10000, 1e-8),
    ('rmsprop', dict(learning_rate=fast_decay, momentum=0.9, centered=True),
     1000, 1e-10, dict(learning_rate=rosen_decay, momentum=0.9), 10000, 1e-8),
    # Adadelta's unit-free step grows only as the RMS of its past updates: it
    # reaches the quadratic's minimum but crawls along Rosenbrock's curved
    # valley (loss ~0.5 after 5000 steps, no better after 20000), so there
    # the test asserts a real decrease only.
    ('adadelta', dict(learning_rate=1.0, rho=0.95), 2000, 1e-8,
     dict(learning_rate=1.0, rho=0.95), 5000, 1.0),
    ('adam', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-8),
    ('adamw', dict(learning_rate=0.1), 500, 1e-10,
     dict(learning_rate=0.01), 5000, 1e-6),
    ('nadam', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-6),
    ('nadamw', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-4),
    ('adamax', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-6),
    ('adamaxw', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-6),
    ('amsgrad', dict(learning_rate=0.1), 500, 1e-10,
     dict(learning_rate=0.1), 10000, 1e-4),
    ('adabelief', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-8),
    ('adan', dict(learning_rate=0.3), 1000, 1e-12,
     dict(learning_rate=0.01), 5000, 1e-8),
    ('lion', dict(learning_rate=slow_decay), 2000, 1e-9,
     dict(learning_rate=rosen_decay), 10000, 1e-8),
    ('radam', dict(learning_rate=0.2), 500, 1e-12,
     dict(learning_rate=0.01), 10000, 1e-8),
    ('yogi', dict(learning_rate=0.1), 500, 1e-12,
     dict(learning_rate=0.02), 5000, 1e-6),
    # The injected noise (std sqrt(eta / t^0.55)) sets a loss floor.
    ('noisy_sgd', dict(learning_rate=0.1, key=0), 500, 1e-3,
     dict(learning_rate=1e-3, eta=1e-4, key=0), 10000, 1e-3),
    ('sign_sgd', dict(learning_rate=slow_decay), 1000, 1e-10,
     dict(learning_rate=rosen_slow_decay), 20000, 1e-6),
    ('signum', dict(learning_rate=slow_decay), 2000, 1e-9,
     dict(learning_rate=rosen_decay), 10000, 1e-8),
    ('rprop', dict(learning_rate=0.01), 500, 1e-10,
     dict(learning_rate=1e-3), 10000, 1e-5),
    ('polyak_sgd', dict(max_learning_rate=1.0), 500, 1e-12,
     dict(max_learning_rate=1e-2), 10000, 1e-8),
    ('optimistic_gradient_descent', dict(learning_rate=0.1), 1000, 1e-12,
     dict(learning_rate=1e-3, beta=0.5), 20000, 1e-6),
    # With a constant step, optimistic Adam hovers at ~1e-5 on Rosenbrock.
    ('optimistic_adam_v2', dict(learning_rate=0.05), 500, 1e-12,
     dict(learning_rate=1e-3), 10000, 1e-4),
]
globals().update(harness.convergence_suite(
    CONVERGENCE, ours_module=optim, extra_args_names=EXTRA_ARGS,
))


@pytest.mark.parametrize('kwargs,match', [
    (dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
    (dict(learning_rate=0.1, momentum=-0.5), 'momentum=-0.5'),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.sgd(**kwargs)


BAD_INPUTS = [
    ('adam', dict(learning_rate=-1e-3), 'learning_rate=-0.001'),
    ('adam', dict(learning_rate=0.1, b1=1.0), 'b1=1.0'),
    ('adam', dict(learning_rate=0.1, b2=-0.1), 'b2=-0.1'),
    ('adam', dict(learning_rate=0.1, eps=-1e-8), 'eps=-1e-08'),
    ('adam', dict(learning_rate=0.1, eps_root=-1.0), 'eps_root=-1.0'),
    ('adamw', dict(learning_rate=0.1, weight_decay=-0.1), 'weight_decay=-0.1'),
    ('nadamw', dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    ('adagrad', dict(learning_rate=0.1, initial_accumulator_value=-1.0),
     'initial_accumulator_value=-1.0'),
    ('rmsprop', dict(learning_rate=0.1, decay=1.0), 'decay=1.0'),
    ('rmsprop', dict(learning_rate=0.1, momentum=1.5), 'momentum=1.5'),
    ('rmsprop', dict(learning_rate=0.1, eps=-1.0, centered=True), 'eps=-1.0'),
    ('adadelta', dict(rho=1.0), 'rho=1.0'),
    ('adadelta', dict(eps=0.0), 'eps=0.0'),
    ('adamax', dict(learning_rate=0.1, b2=1.5), 'b2=1.5'),
    ('adamaxw', dict(learning_rate=0.1, b1=-0.5), 'b1=-0.5'),
    ('amsgrad', dict(learning_rate=0.1, b2=1.0), 'b2=1.0'),
    ('adabelief', dict(learning_rate=0.1, eps_root=-1e-16), 'eps_root=-1e-16'),
    ('adan', dict(learning_rate=0.1, b3=1.0), 'b3=1.0'),
    ('lion', dict(learning_rate=0.1, b1=1.1), 'b1=1.1'),
    ('radam', dict(learning_rate=0.1, threshold=3.0), 'threshold=3.0'),
    ('yogi', dict(learning_rate=0.1, b1=2.0), 'b1=2.0'),
    ('noisy_sgd', dict(learning_rate=0.1, eta=-0.01, key=0), 'eta=-0.01'),
    ('sign_sgd', dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    ('signum', dict(learning_rate=0.1, beta=1.0), 'beta=1.0'),
    ('rprop', dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    ('rprop', dict(learning_rate=0.1, eta_minus=1.5), 'eta_minus=1.5'),
    ('rprop', dict(learning_rate=0.1, eta_plus=0.5), 'eta_plus=0.5'),
    ('rprop', dict(learning_rate=0.1, min_step_size=1.0, max_step_size=0.1),
     'max_step_size=0.1'),
    ('rprop', dict(learning_rate=fast_decay), 'cannot be a schedule'),
    ('polyak_sgd', dict(variant='sps++'), "variant='sps\\+\\+'"),
    ('polyak_sgd', dict(max_learning_rate=-1.0), 'max_learning_rate=-1.0'),
    ('polyak_sgd', dict(scaling=-1.0), 'scaling=-1.0'),
    ('optimistic_gradient_descent', dict(learning_rate=-0.1),
     'learning_rate=-0.1'),
    ('optimistic_adam_v2', dict(learning_rate=0.1, b2=1.0), 'b2=1.0'),
]


@pytest.mark.parametrize(
    'name,kwargs,match', BAD_INPUTS,
    ids=[f'{n}-{m}' for n, _, m in BAD_INPUTS],
)
def test_rejects_bad_hyperparameters(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    getattr(optim, name)(**kwargs)


@pytest.mark.parametrize('name,kwargs', [
    ('adam', dict(learning_rate=0.1, b1=0.0)),
    ('adam', dict(learning_rate=0.1, eps=0.0, eps_root=1e-8)),
    ('rmsprop', dict(learning_rate=0.1, decay=0.0)),
    ('adamax', dict(learning_rate=0.1, b2=1.0)),
    ('lion', dict(learning_rate=0.1, b1=1.0, b2=0.0)),
    ('polyak_sgd', dict(f_min=-10.0)),
    ('optimistic_gradient_descent', dict(learning_rate=0.1, beta=0.0)),
])
def test_accepts_edge_values_optax_accepts(name, kwargs):
  # Values at the edge of the range that Optax's math handles: not rejected,
  # and the update equals Optax's.
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  grads = {'w': jnp.array([0.5, 0.0, -1.0])}
  extra = dict(value=jnp.array(2.0)) if name in EXTRA_ARGS else {}
  ours, ref = getattr(optim, name)(**kwargs), getattr(optax, name)(**kwargs)
  u, _ = ours.update(grads, ours.init(params), params, **extra)
  r, _ = ref.update(grads, ref.init(params), params, **extra)
  chex.assert_trees_all_close(u, r, rtol=1e-6)
  chex.assert_tree_all_finite(u)


def test_polyak_sgd_needs_value():
  opt = optim.polyak_sgd()
  params = jnp.ones(3)
  with pytest.raises(ValueError, match='value'):
    opt.update(params, opt.init(params), params)


def test_adamw_mask_skips_decay():
  # With zero gradients only the decay moves the params: masked-out leaves
  # must not move, the others must move by -lr * wd * p.
  params = {'b': jnp.array([1.0, 2.0]), 'w': jnp.ones((2, 2))}
  grads = jax.tree.map(jnp.zeros_like, params)
  opt = optim.adamw(0.1, weight_decay=0.5, mask=decay_matrices)
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_array_equal(updates['b'], np.zeros(2))
  np.testing.assert_allclose(updates['w'], -0.05 * np.ones((2, 2)), rtol=1e-6)


def test_nadam_is_adam_with_nesterov():
  params = harness.make_problem(steps=3).params
  grads = jax.tree.map(lambda p: 0.3 * p, params)
  a, b = optim.nadam(0.1), optim.adam(0.1, nesterov=True)
  chex.assert_trees_all_close(
      a.update(grads, a.init(params))[0], b.update(grads, b.init(params))[0]
  )


def test_traced_hyperparameters_are_not_checked():
  # Inside jit a hyperparameter is a tracer: it is not checked and must work.
  problem = harness.make_problem(steps=2)

  @jax.jit
  def step(lr, b1, b2, momentum):
    grads = problem.grad(problem.params)
    out = []
    for opt in (optim.sgd(lr, momentum=momentum), optim.adam(lr, b1, b2),
                optim.rmsprop(lr, decay=b2, momentum=momentum)):
      out.append(opt.update(grads, opt.init(problem.params))[0])
    return out

  chex.assert_tree_all_finite(step(0.1, 0.9, 0.999, 0.9))
