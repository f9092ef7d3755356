"""Weight decay, the L1 penalty and gradient noise.

``add_decayed_weights`` and ``add_noise`` are compared with Optax's, wrapped as
``chain(t, scale(-0.1))`` on both sides, through ``harness.alias_suite``.
``add_l1_penalty`` is not in Optax: its reference is the formula
``u + l1 * sign(p)`` written with Optax's ``stateless``.
"""

import types
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness

STEP = -0.1


def decay_schedule(count):
  return 0.1 * 0.95**count


def matrices_only(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


MASK_TREE = {'scalar': False, 'vector': True, 'matrix': False, 'conv': True}


def _reference_l1(l1):
  return optax.stateless(
      lambda u, p: jax.tree.map(lambda g, x: g + l1 * jnp.sign(x), u, p)
  )


ROWS = [
    ('add_decayed_weights', dict(weight_decay=0.1)),
    ('add_decayed_weights', dict(weight_decay=decay_schedule)),
    ('add_decayed_weights', dict(weight_decay=0.1, mask=matrices_only)),
    ('add_decayed_weights', dict(weight_decay=decay_schedule, mask=MASK_TREE)),
    ('add_noise', dict(eta=0.01, gamma=0.55, key=0)),
    ('add_l1_penalty', dict(l1=0.05)),
]


def _wrap(lib, tx):
  return lib.chain(tx, lib.scale(STEP))


OURS = types.SimpleNamespace(
    add_decayed_weights=lambda **kw: _wrap(optim, optim.add_decayed_weights(**kw)),
    add_noise=lambda **kw: _wrap(optim, optim.add_noise(**kw)),
    add_l1_penalty=lambda **kw: _wrap(optim, optim.add_l1_penalty(**kw)),
)
REFERENCE = types.SimpleNamespace(
    add_decayed_weights=lambda **kw: _wrap(optax, optax.add_decayed_weights(**kw)),
    add_noise=lambda **kw: _wrap(optax, optax.add_noise(**kw)),
    add_l1_penalty=lambda l1: _wrap(optax, _reference_l1(l1)),
)

globals().update(harness.alias_suite(
    ROWS, ours_module=OURS, reference_module=REFERENCE,
    # Both are linear in the params; Optax's gradient noise is not claimed
    # for complex params (its alias tests skip noisy_sgd there).
    complex_names={'add_decayed_weights', 'add_l1_penalty'},
))


def test_l1_penalty_values():
  p = {'w': jnp.array([2.0, -3.0, 0.0])}
  g = {'w': jnp.array([1.0, 1.0, 1.0])}
  tx = optim.add_l1_penalty(0.5)
  u, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_array_equal(u['w'], np.array([1.5, 0.5, 1.0]))


@pytest.mark.parametrize('tx', [
    optim.add_decayed_weights(0.1),
    optim.add_decayed_weights(decay_schedule),
    optim.add_l1_penalty(0.1),
], ids=['decay', 'decay-schedule', 'l1'])
def test_needs_params(tx):
  g = jnp.ones(3)
  with pytest.raises(ValueError, match='needs the current params'):
    tx.update(g, tx.init(g))


def test_weight_decay_schedule_reads_the_count():
  # The schedule sees count 0 on the first update, 1 on the second.
  p = jnp.array([2.0])
  tx = optim.add_decayed_weights(lambda c: 1.0 + c)
  state = tx.init(p)
  assert isinstance(state, optim.WeightDecaySchedule)
  u1, state = tx.update(jnp.zeros(1), state, p)
  u2, state = tx.update(jnp.zeros(1), state, p)
  np.testing.assert_array_equal([u1[0], u2[0]], [2.0, 4.0])
  assert int(state.count) == 2 and state.count.dtype == jnp.int32


def test_zero_weight_decay_leaves_updates_unchanged():
  p, g = jnp.array([5.0, -1.0]), jnp.array([0.25, 0.5])
  tx = optim.add_decayed_weights()
  u, state = tx.update(g, tx.init(p), p)
  assert u is g and state == optim.EmptyState()


def test_noise_has_the_annealed_variance():
  # With zero updates, step t adds N(0, eta / t^gamma).
  eta, gamma = 0.04, 1.0
  tx = optim.add_noise(eta, gamma, key=1)
  zeros = jnp.zeros(20000)
  state = tx.init(zeros)
  for t in (1, 2):
    u, state = tx.update(zeros, state)
    np.testing.assert_allclose(float(jnp.std(u)), np.sqrt(eta / t**gamma),
                               rtol=0.03)  # ~1% sampling error at n=20000.
    assert abs(float(jnp.mean(u))) < 0.05 * np.sqrt(eta)


def test_noise_key_as_int_or_key_and_deprecated_seed():
  g = jnp.zeros(5)
  by_int = optim.add_noise(0.01, 0.55, 7)
  by_key = optim.add_noise(0.01, 0.55, jax.random.key(7))
  with pytest.warns(DeprecationWarning, match='seed'):
    by_seed = optim.add_noise(0.01, 0.55, seed=7)
  outs = [tx.update(g, tx.init(g))[0] for tx in (by_int, by_key, by_seed)]
  chex.assert_trees_all_equal(*outs)
  with pytest.raises(ValueError, match='key or seed'):
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', DeprecationWarning)
      optim.add_noise(0.01, 0.55, 7, seed=7)
  with pytest.warns(UserWarning, match='no key'):
    optim.add_noise(0.01, 0.55)


@pytest.mark.parametrize('make,match', [
    (lambda: optim.add_decayed_weights(-0.1), 'weight_decay=-0.1'),
    (lambda: optim.add_l1_penalty(-1.0), 'l1=-1.0'),
    (lambda: optim.add_noise(-0.01, 0.55, 0), 'eta=-0.01'),
], ids=['weight_decay', 'l1', 'eta'])
def test_rejects_bad_hyperparameters(make, match):
  with pytest.raises(ValueError, match=match):
    make()
