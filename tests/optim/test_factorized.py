"""Adafactor and its factored second moment against Optax.

The harness's largest axes have sizes 5 and 4, far below the default
``min_dim_size_to_factor=128``; the rows that lower it to 2 are the ones that
exercise the factored (row/column) path.
"""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def _namespace(lib):
  return types.SimpleNamespace(
      adafactor=lib.adafactor,
      scale_by_factored_rms=lambda **kw: lib.chain(
          lib.scale_by_factored_rms(**kw), lib.scale(-0.1)
      ),
  )


def _no_scalars(params):
  return {k: k != 'scalar' for k in params}


ROWS = [
    ('adafactor', dict(learning_rate=0.1, min_dim_size_to_factor=2)),
    ('adafactor', dict(learning_rate=0.1, min_dim_size_to_factor=2,
                       momentum=0.9, weight_decay_rate=0.01,
                       weight_decay_mask=_no_scalars,
                       clipping_threshold=2.0, eps=1e-20)),
    ('adafactor', dict(learning_rate=0.1, factored=False, decay_rate=0.5,
                       multiply_by_parameter_scale=False,
                       clipping_threshold=None)),
    ('scale_by_factored_rms', dict(min_dim_size_to_factor=3, decay_rate=0.6,
                                   epsilon=1e-10)),
]
# Adafactor uses |g|^2, so complex params work in Optax and in ours.
COMPLEX = {'adafactor', 'scale_by_factored_rms'}

globals().update(
    harness.alias_suite(
        ROWS,
        ours_module=_namespace(optim),
        reference_module=_namespace(optax),
        complex_names=COMPLEX,
    )
)

# Steps are relative to the params' RMS, so with the minimum at the origin
# the quadratic converges geometrically; Rosenbrock's minimum (1, 1) needs a
# decaying rate.
CONVERGENCE = [
    ('adafactor', dict(learning_rate=0.1), 1000, 1e-6,
     dict(learning_rate=lambda c: 0.05 * 0.999**c), 5000, 1e-2),
]
globals().update(harness.convergence_suite(CONVERGENCE, ours_module=optim))


def test_defaults_match_optax():
  # learning_rate=None: Adafactor's relative steps alone (scale(-1)).
  harness.assert_matches_reference(
      optim.adafactor(), optax.adafactor(), variant=jax.jit, steps=30
  )


def test_custom_decay_rate_fn_matches_optax():
  decay = lambda step, rate: jnp.minimum(rate, 1.0 - 1.0 / (step + 2.0))  # noqa: E731
  kw = dict(min_dim_size_to_factor=2, decay_rate=0.95, decay_rate_fn=decay)
  harness.assert_matches_reference(
      optim.chain(optim.scale_by_factored_rms(**kw), optim.scale(-0.1)),
      optax.chain(optax.scale_by_factored_rms(**kw), optax.scale(-0.1)),
      variant=jax.jit,
  )


def test_step_offset_matches_optax():
  # A fine-tuning run resumes at count >= step_offset (before it the default
  # schedule takes a negative power of a negative number: NaN on both sides).
  kw = dict(min_dim_size_to_factor=2, step_offset=5)
  ours, ref = optim.scale_by_factored_rms(**kw), optax.scale_by_factored_rms(**kw)
  problem = harness.make_problem(steps=3)
  params = problem.params
  state, ref_state = ours.init(params), ref.init(params)
  state, ref_state = state._replace(count=7), ref_state._replace(count=7)
  for t in range(3):
    grads = problem.grad(params, t)
    updates, state = ours.update(grads, state, params)
    ref_updates, ref_state = ref.update(grads, ref_state, params)
    chex.assert_trees_all_close(updates, ref_updates, rtol=1e-6, atol=1e-6)
    chex.assert_tree_all_finite(updates)
  chex.assert_trees_all_close(tuple(state), tuple(ref_state), rtol=1e-6, atol=1e-6)


def test_factored_state_shapes():
  params = {'big': jnp.zeros((3, 6, 4)), 'small': jnp.zeros((3, 2)),
            'vec': jnp.zeros(8)}
  state = optim.scale_by_factored_rms(min_dim_size_to_factor=3).init(params)
  # 'big': axes 1 (size 6) and 2 (size 4) are factored: the row statistic
  # drops axis 1, the column statistic drops axis 2.
  chex.assert_shape(state.v_row['big'], (3, 4))
  chex.assert_shape(state.v_col['big'], (3, 6))
  chex.assert_shape(state.v['big'], (1,))
  # 'small' has a second largest axis of 2 < 3, 'vec' one axis: unfactored.
  for k, shape in (('small', (3, 2)), ('vec', (8,))):
    chex.assert_shape(state.v[k], shape)
    chex.assert_shape(state.v_row[k], (1,))
    chex.assert_shape(state.v_col[k], (1,))


def test_rank_one_second_moment_is_exact():
  # For g^2 = a b^T the factored estimate R C^T / mean(R) equals g^2, so the
  # first step (beta_1 = 0) is g / |g| = sign(g).
  a = jnp.array([1.0, 2.0, 3.0])
  b = jnp.array([0.5, 1.0, 2.0, 4.0])
  g = jnp.sqrt(jnp.outer(a, b)) * jnp.array([1.0, -1.0, 1.0, -1.0])
  opt = optim.scale_by_factored_rms(min_dim_size_to_factor=2, epsilon=0.0)
  updates, _ = opt.update(g, opt.init(g), g)
  np.testing.assert_allclose(updates, jnp.sign(g), rtol=1e-5)


@pytest.mark.parametrize('factory,kwargs,match', [
    (optim.scale_by_factored_rms, dict(epsilon=-1.0), 'epsilon=-1.0'),
    (optim.scale_by_factored_rms, dict(min_dim_size_to_factor=-1),
     'min_dim_size_to_factor=-1'),
    (optim.adafactor, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.adafactor, dict(clipping_threshold=0.5), 'clipping_threshold=0.5'),
    (optim.adafactor, dict(momentum=1.0), 'momentum=1.0'),
    (optim.adafactor, dict(eps=-1.0), 'eps=-1.0'),
])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


def test_needs_params():
  opt = optim.scale_by_factored_rms()
  g = jnp.ones((2, 3))
  with pytest.raises(ValueError, match='needs the current params'):
    opt.update(g, opt.init(g))
