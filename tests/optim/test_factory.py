"""optim.make: optimizers by name with their numbers in the state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim

PARAMS = {'w': jnp.arange(6.0).reshape(2, 3) / 7, 'b': jnp.ones(3)}
GRADS = {'w': jnp.full((2, 3), 0.3), 'b': jnp.asarray([0.1, -0.2, 0.5])}


def _steps(tx, n=3):
  state, params, out = tx.init(PARAMS), PARAMS, []
  update = jax.jit(tx.update)
  for _ in range(n):
    u, state = update(GRADS, state, params)
    params = optim.apply_updates(params, u)
    out.append(params)
  return out


@pytest.mark.parametrize('name,kwargs,reference', [
    ('adam', dict(b1=0.8), lambda: optim.adam(0.01, b1=0.8)),
    ('nesterov', {}, lambda: optim.sgd(0.01, momentum=0.9, nesterov=True)),
    ('adamw', dict(weight_decay=0.1), lambda: optim.adamw(0.01, weight_decay=0.1)),
    ('sgd', dict(weight_decay=0.1),
     lambda: optim.chain(optim.add_decayed_weights(0.1), optim.sgd(0.01))),
])
def test_make_equals_the_alias(name, kwargs, reference):
  ours = _steps(optim.make(name, 0.01, **kwargs))
  want = _steps(reference())
  for a, b in zip(ours, want):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-6)


def test_a_scheduled_rate_equals_the_schedule():
  kw = dict(total_steps=9, num_cycles=3)
  ours = _steps(optim.make('sgd', 0.2, momentum=0.9, schedule='cyclic_cosine_schedule',
                           schedule_kwargs=kw), n=5)
  want = _steps(optim.sgd(optim.cyclic_cosine_schedule(0.2, **kw), momentum=0.9), n=5)
  for a, b in zip(ours, want):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-6)


def test_numbers_live_in_the_state_and_do_not_change_the_program():
  a = optim.make('sgd', 0.1, momentum=0.9, schedule='exponential_decay',
                 schedule_kwargs=dict(transition_steps=10, decay_rate=0.5))
  b = optim.make('sgd', 0.3, momentum=0.5, schedule='exponential_decay',
                 schedule_kwargs=dict(transition_steps=10, decay_rate=0.9))
  assert a == b and hash(a) == hash(b)
  hp = optim.hyperparams_of(b.init(PARAMS))
  assert {k: round(float(v), 6) for k, v in hp.items()} == {
      'learning_rate': 0.3, 'momentum': 0.5, 'schedule_decay_rate': 0.9}
  # An int schedule argument (a length) is part of the program.
  c = optim.make('sgd', 0.1, momentum=0.9, schedule='exponential_decay',
                 schedule_kwargs=dict(transition_steps=20, decay_rate=0.5))
  assert c != a
  assert optim.make('adam', 0.1) != optim.make('sgd', 0.1)


def test_set_hyperparams_in_changes_a_chain_state():
  tx = optim.chain(optim.clip_by_global_norm(1.0), optim.make('sgd', 0.1))
  state = optim.set_hyperparams_in(tx.init(PARAMS), learning_rate=0.5)
  assert float(optim.hyperparams_of(state)['learning_rate']) == 0.5
  with pytest.raises(ValueError, match=r"\['momentum'\] not injected"):
    optim.set_hyperparams_in(state, momentum=0.9)


@pytest.mark.parametrize('call,error,match', [
    (lambda: optim.make('adamx', 0.1), ValueError, "name='adamx' is unknown; allowed: "),
    (lambda: optim.make('sgd', -0.1), ValueError, 'learning_rate=-0.1'),
    (lambda: optim.make('sgd', '0.1'), ValueError, "learning_rate='0.1'"),
    (lambda: optim.make('sgd', 0.1, schedule='wobbly'), ValueError, "schedule='wobbly'"),
    (lambda: optim.make('sgd', 0.1, betas=1), ValueError, r"unknown argument\(s\) \['betas'\]"),
    (lambda: optim.make('sgd', 0.1, weight_decay='x'), TypeError, "weight_decay='x'"),
    (lambda: optim.make('sgd', 0.1, weight_decay=-1.0), ValueError, 'weight_decay=-1.0'),
    (lambda: optim.make('sgd', 0.1, schedule_kwargs=dict(a=1)), ValueError, 'without a schedule'),
])
def test_bad_arguments_fail_at_construction(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_contrib_and_beyond_optax_optimizers_are_made_by_name():
  for name in ('muon', 'prodigy', 'schedule_free_adamw', 'soap', 'shampoo'):
    assert name in optim.optimizer_names()
  assert optim.make('muon', 1e-3) == optim.make('muon', 2e-3)
