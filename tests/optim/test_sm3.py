"""SM3 against Optax.

Optax's SM3 fails on 0-d params (it indexes an empty list of accumulators);
ours treats a scalar as a vector of one entry. The reference therefore runs
Optax on the params with every scalar reshaped to shape ``(1,)``, which is
exactly that definition.
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


def _scalars_as_vectors(tx):
  """Runs ``tx`` with 0-d leaves seen as shape ``(1,)``."""
  to_vec = lambda t: jax.tree.map(  # noqa: E731
      lambda x: jnp.reshape(x, (1,)) if jnp.ndim(x) == 0 else x, t
  )

  def update(updates, state, params=None, **extra):
    del extra
    new, state = tx.update(to_vec(updates), state, to_vec(params))
    return jax.tree.map(lambda n, u: jnp.reshape(n, jnp.shape(u)), new, updates), state

  return optax.GradientTransformation(lambda p: tx.init(to_vec(p)), update)


def _optax_scale_by_sm3(**kw):
  return optax.chain(optax.scale_by_sm3(**kw), optax.scale(-0.1))


REFERENCE = types.SimpleNamespace(
    sm3=lambda **kw: _scalars_as_vectors(optax.sm3(**kw)),
    scale_by_sm3=lambda **kw: _scalars_as_vectors(_optax_scale_by_sm3(**kw)),
)
OURS = types.SimpleNamespace(
    sm3=optim.sm3,
    scale_by_sm3=lambda **kw: optim.chain(optim.scale_by_sm3(**kw), optim.scale(-0.1)),
)

ROWS = [
    ('sm3', dict(learning_rate=0.1, momentum=0.5)),
    ('scale_by_sm3', dict(b1=0.8, b2=0.9, eps=1e-6)),
]

# Optax's sm3 takes a scalar learning rate only (it builds scale(-lr)); the
# schedule case is checked below against Optax's own pieces.
globals().update(
    harness.alias_suite(
        ROWS, ours_module=OURS, reference_module=REFERENCE, schedule_names=()
    )
)

CONVERGENCE = [
    ('sm3', dict(learning_rate=0.5), 1000, 1e-6,
     dict(learning_rate=0.5), 5000, 1e-3),
]
globals().update(harness.convergence_suite(CONVERGENCE, ours_module=optim))


def test_default_matches_optax():
  harness.assert_matches_reference(
      optim.sm3(0.1), REFERENCE.sm3(learning_rate=0.1), variant=jax.jit
  )


def test_schedule_as_learning_rate():
  schedule = lambda count: 0.1 * 0.97**count  # noqa: E731
  ref = _scalars_as_vectors(
      optax.chain(optax.scale_by_sm3(0.9), optax.scale_by_learning_rate(schedule))
  )
  harness.assert_matches_reference(optim.sm3(schedule), ref, variant=jax.jit)


def test_accumulators_are_one_vector_per_axis():
  params = {'s': jnp.zeros(()), 'v': jnp.zeros(7), 'k': jnp.zeros((3, 4, 5))}
  state = optim.scale_by_sm3().init(params)
  chex.assert_shape(state.mu['s'], [()])
  chex.assert_shape(state.mu['v'], [(7,)])
  chex.assert_shape(state.mu['k'], [(3,), (4,), (5,)])


def test_matrix_accumulators_by_hand():
  # b2 = 1, first step: nu = g^2 and the row/column accumulators are the
  # row/column maxima of g^2; the preconditioned step is g / |g| = sign(g).
  g = jnp.array([[1.0, -2.0], [3.0, 0.5]])
  opt = optim.scale_by_sm3(b1=0.0, eps=0.0)
  updates, state = opt.update(g, opt.init(g))
  np.testing.assert_allclose(state.mu[0], [4.0, 9.0])
  np.testing.assert_allclose(state.mu[1], [9.0, 4.0])
  np.testing.assert_allclose(updates, jnp.sign(g), rtol=1e-6)
  # Second step: each entry's bound is min(row max, column max) + g^2.
  updates, state = opt.update(g, state)
  bound = jnp.minimum(jnp.array([[4.0], [9.0]]), jnp.array([[9.0, 4.0]]))
  np.testing.assert_allclose(updates, g / jnp.sqrt(g**2 + bound), rtol=1e-6)


def test_zero_gradient_gives_zero_update():
  opt = optim.scale_by_sm3()
  g = jnp.zeros((2, 3))
  updates, _ = opt.update(g, opt.init(g))
  np.testing.assert_array_equal(updates, g)


def test_rejects_complex_params():
  with pytest.raises(ValueError, match='complex'):
    optim.sm3(0.1).init({'w': jnp.ones(3, jnp.complex64)})


@pytest.mark.parametrize('factory,kwargs,match', [
    (optim.scale_by_sm3, dict(b1=1.0), 'b1=1.0'),
    (optim.scale_by_sm3, dict(b2=1.5), 'b2=1.5'),
    (optim.scale_by_sm3, dict(b2=-0.5), 'b2=-0.5'),
    (optim.scale_by_sm3, dict(eps=-1.0), 'eps=-1.0'),
    (optim.sm3, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.sm3, dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


@pytest.mark.parametrize('b2', [1.0, 0.5])
def test_traced_b2_matches_concrete(b2):
  # A traced b2 picks the accumulation weight with jnp.where, not Python.
  g = jnp.array([[1.0, -2.0, 0.5], [3.0, 0.5, -1.0]])

  def two_steps(b2):
    opt = optim.scale_by_sm3(b2=b2)
    state = opt.init(g)
    _, state = opt.update(g, state)
    return opt.update(0.5 * g, state)[0]

  chex.assert_trees_all_close(jax.jit(two_steps)(b2), two_steps(b2), rtol=1e-6)
