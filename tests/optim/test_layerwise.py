"""Layer-wise optimizers (LARS, LAMB, Fromage, NovoGrad) against Optax.

The ``scale_by_*`` pieces are compared inside ``chain(t, scale(-0.1))`` on
both sides, so that they are optimizers the harness can run.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def _as_optimizer(lib, name):
  return lambda **kw: lib.chain(getattr(lib, name)(**kw), lib.scale(-0.1))


def _no_scalars(params):
  return {k: k != 'scalar' for k in params}


# One row per optimizer, with its options away from the defaults: each row
# costs nine trajectory comparisons, and the defaults add no new arithmetic.
ROWS = [
    ('lamb', dict(learning_rate=0.01, b1=0.8, eps_root=1e-8, weight_decay=0.1,
                  mask=_no_scalars)),
    ('lars', dict(learning_rate=0.1, weight_decay=0.01, nesterov=True,
                  trust_coefficient=0.01, eps=1e-4, weight_decay_mask=_no_scalars,
                  trust_ratio_mask=_no_scalars)),
    ('fromage', dict(learning_rate=0.3, min_norm=0.5)),
    ('novograd', dict(learning_rate=0.1, b1=0.5, b2=0.6, eps_root=1e-6,
                      weight_decay=0.01)),
]
COMPLEX = {'lamb', 'lars', 'fromage', 'novograd'}

globals().update(
    harness.alias_suite(
        ROWS,
        ours_module=optim,
        complex_names=COMPLEX,
    )
)


def _decay(rate, factor):
  return lambda count: rate * factor**count


# name, quadratic kwargs, steps, tol, Rosenbrock kwargs, steps, tol. Steps of
# these methods do not shrink with the gradient (they are normalized per
# block), so where the minimum is not at the origin a decaying rate is needed.
CONVERGENCE = [
    ('lamb', dict(learning_rate=0.05), 1000, 1e-6,
     dict(learning_rate=_decay(0.05, 0.999)), 3000, 1e-2),
    ('lars', dict(learning_rate=1.0, trust_coefficient=0.1), 1000, 1e-6,
     dict(learning_rate=0.1, trust_coefficient=0.01), 3000, 1e-3),
    ('fromage', dict(learning_rate=0.1), 1000, 1e-6,
     dict(learning_rate=_decay(0.05, 0.999)), 3000, 1e-2),
    ('novograd', dict(learning_rate=_decay(0.5, 0.99)), 1000, 1e-6,
     dict(learning_rate=_decay(0.05, 0.999)), 3000, 5e-3),
]
globals().update(harness.convergence_suite(CONVERGENCE, ours_module=optim))


@pytest.mark.parametrize('name,kwargs', [
    ('lamb', dict(learning_rate=0.01)),
    ('lars', dict(learning_rate=0.1)),
    ('fromage', dict(learning_rate=0.1)),
    ('novograd', dict(learning_rate=0.1)),
])
def test_defaults_match_optax(name, kwargs):
  harness.assert_matches_reference(
      getattr(optim, name)(**kwargs), getattr(optax, name)(**kwargs),
      variant=jax.jit,
  )


# The scale_by_* pieces, each inside chain(t, scale(-0.1)) on both sides.
# complex64 only for the trust ratio: the harness's complex gradient is
# jax.grad's, whose imaginary part is the conjugate of the descent direction,
# so |p| grows; a step proportional to |p| (the block scalings) then grows
# with it and both sides reach NaN, while the trust ratio stays finite.
@pytest.mark.parametrize('name,kwargs,dtype', [
    ('scale_by_trust_ratio', dict(), jnp.float32),
    ('scale_by_trust_ratio', dict(min_norm=0.5, trust_coefficient=0.5, eps=1e-3),
     jnp.float32),
    ('scale_by_trust_ratio', dict(min_norm=0.5), jnp.complex64),
    # The floor is above the scalar's norm, so both branches of max() run.
    ('scale_by_param_block_norm', dict(min_scale=1.2), jnp.float32),
    ('scale_by_param_block_rms', dict(min_scale=1.2), jnp.float32),
    ('scale_by_novograd', dict(b2=0.5, weight_decay=0.1), jnp.float32),
])
def test_pieces_match_optax(name, kwargs, dtype):
  harness.assert_matches_reference(
      _as_optimizer(optim, name)(**kwargs),
      _as_optimizer(optax, name)(**kwargs),
      variant=jax.jit, dtype=dtype,
  )


@pytest.mark.parametrize('factory,kwargs,match', [
    (optim.scale_by_trust_ratio, dict(min_norm=-1.0), 'min_norm=-1.0'),
    (optim.scale_by_trust_ratio, dict(trust_coefficient=0.0),
     'trust_coefficient=0.0'),
    (optim.scale_by_trust_ratio, dict(eps=-1e-3), 'eps=-0.001'),
    (optim.scale_by_param_block_norm, dict(min_scale=-1.0), 'min_scale=-1.0'),
    (optim.scale_by_param_block_rms, dict(min_scale=-1.0), 'min_scale=-1.0'),
    (optim.scale_by_novograd, dict(b1=1.0), 'b1=1.0'),
    (optim.scale_by_novograd, dict(b2=-0.1), 'b2=-0.1'),
    (optim.scale_by_novograd, dict(eps=-1.0), 'eps=-1.0'),
    (optim.scale_by_novograd, dict(eps_root=-1.0), 'eps_root=-1.0'),
    (optim.scale_by_novograd, dict(weight_decay=-0.1), 'weight_decay=-0.1'),
    (optim.novograd, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.novograd, dict(learning_rate=0.1, b1=1.5), 'b1=1.5'),
    (optim.lamb, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.lars, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.lars, dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
    (optim.lars, dict(learning_rate=0.1, trust_coefficient=-1.0),
     'trust_coefficient=-1.0'),
    (optim.lars, dict(learning_rate=0.1, weight_decay=-0.1), 'weight_decay=-0.1'),
    (optim.fromage, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.fromage, dict(learning_rate=0.1, min_norm=-1.0), 'min_norm=-1.0'),
])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


@pytest.mark.parametrize('make', [
    optim.scale_by_trust_ratio,
    optim.scale_by_param_block_norm,
    optim.scale_by_param_block_rms,
    optim.scale_by_novograd,
    lambda: optim.lars(0.1),
    lambda: optim.fromage(0.1),
    lambda: optim.novograd(0.1),
])
def test_needs_params(make):
  opt = make()
  params = {'w': jnp.ones((2, 3))}
  state = opt.init(params)
  with pytest.raises(ValueError, match='needs the current params'):
    opt.update(params, state)


def test_trust_ratio_by_hand():
  # ||p|| = 5, ||u|| = 2: the update is scaled by 2.5 * 5 / (2 + 0.5) = 5.
  opt = optim.scale_by_trust_ratio(trust_coefficient=2.5, eps=0.5)
  params = {'w': jnp.array([3.0, 4.0])}
  updates = {'w': jnp.array([0.0, 2.0])}
  out, _ = opt.update(updates, opt.init(params), params)
  np.testing.assert_allclose(out['w'], [0.0, 10.0], rtol=1e-6)


def test_trust_ratio_is_one_for_zero_params_or_updates():
  opt = optim.scale_by_trust_ratio()
  params = {'zero': jnp.zeros(3), 'w': jnp.array([1.0, 2.0])}
  updates = {'zero': jnp.array([1.0, -2.0, 3.0]), 'w': jnp.zeros(2)}
  out, _ = opt.update(updates, opt.init(params), params)
  chex.assert_trees_all_equal(out, updates)


def test_novograd_keeps_one_second_moment_per_leaf():
  params = {'w': jnp.ones((4, 3)), 'b': jnp.ones(3)}
  state = optim.scale_by_novograd().init(params)
  chex.assert_shape(jax.tree.leaves(state.nu), ())
  # First step: nu = ||g||^2 exactly, with no (1 - b2) factor.
  grads = {'w': jnp.full((4, 3), 0.5), 'b': jnp.array([3.0, 0.0, 4.0])}
  _, state = optim.scale_by_novograd().update(grads, state, params)
  np.testing.assert_allclose(state.nu['w'], 3.0, rtol=1e-6)
  np.testing.assert_allclose(state.nu['b'], 25.0, rtol=1e-6)


def test_novograd_mu_dtype():
  # The momentum is stored in mu_dtype; the updates keep the params' dtype
  # (Optax returns them in mu_dtype).
  opt = optim.scale_by_novograd(mu_dtype=jnp.bfloat16)
  params = {'w': jnp.ones((2, 3), jnp.float32)}
  updates, state = opt.update(params, opt.init(params), params)
  assert state.mu['w'].dtype == jnp.bfloat16
  assert updates['w'].dtype == jnp.float32
  ref = optax.scale_by_novograd(mu_dtype=jnp.bfloat16)
  ref_updates, _ = ref.update(params, ref.init(params), params)
  np.testing.assert_array_equal(updates['w'], ref_updates['w'])


def test_fromage_schedule_matches_constant_rate():
  # A constant schedule must give the constant-rate trajectory.
  ours = optim.fromage(lambda count: 0.1)
  ref = optim.fromage(0.1)
  harness.assert_matches_reference(ours, ref, steps=20)
