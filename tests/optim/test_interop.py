"""Our transformations mix with Optax's: ours inside optax.chain, optax's
inside our chain, ours wrapped by optax.inject_hyperparams, optax.MultiSteps,
optax.masked, and optax's wrapped by ours. Each combination is compared, over
a trajectory, with the all-Optax version wrapped the same way (inject_hyperparams
turns Python numbers into float32 arrays, which changes the rounding, so the
reference is wrapped too)."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from research import optim
from tests.optim import harness


def _schedule(count):
  return 0.1 * 0.97**count


MASK = {'scalar': True, 'vector': False, 'matrix': True, 'conv': False}


def _by_rank(params):
  return jax.tree.map(lambda x: 'a' if x.ndim >= 2 else 'b', params)


def _momentum(mod):
  return mod.sgd(0.1, momentum=0.9)


def _inject(mod, **kw):
  return optax.inject_hyperparams(mod.sgd)(momentum=0.9, **kw)


# name: (ours mixed with optax, all optax).
CASES = {
    'ours_in_optax_chain': (
        lambda: optax.chain(optim.clip_by_global_norm(1.0), _momentum(optim)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), _momentum(optax))),
    'optax_in_our_chain': (
        lambda: optim.chain(optax.clip_by_global_norm(1.0), _momentum(optax)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), _momentum(optax))),
    'mixed_chain': (
        lambda: optim.chain(optax.clip(0.3), optim.trace(0.9), optax.scale(-0.1)),
        lambda: optax.chain(optax.clip(0.3), optax.trace(0.9), optax.scale(-0.1))),
    'ours_in_optax_inject_hyperparams': (
        lambda: _inject(optim, learning_rate=0.1),
        lambda: _inject(optax, learning_rate=0.1)),
    'ours_in_optax_inject_hyperparams_schedule': (
        lambda: _inject(optim, learning_rate=_schedule),
        lambda: _inject(optax, learning_rate=_schedule)),
    'adam_in_optax_inject_hyperparams': (
        lambda: optax.inject_hyperparams(optim.adam)(learning_rate=0.05),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=0.05)),
    'ours_in_optax_multisteps': (
        lambda: optax.MultiSteps(_momentum(optim), 3),
        lambda: optax.MultiSteps(_momentum(optax), 3)),
    'adam_in_optax_multisteps': (
        lambda: optax.MultiSteps(optim.adam(0.05), 2),
        lambda: optax.MultiSteps(optax.adam(0.05), 2)),
    'optax_in_our_multisteps': (
        lambda: optim.MultiSteps(_momentum(optax), 3),
        lambda: optax.MultiSteps(_momentum(optax), 3)),
    'ours_in_optax_masked': (
        lambda: optax.chain(optax.masked(optim.trace(0.9), MASK), optax.scale(-0.1)),
        lambda: optax.chain(optax.masked(optax.trace(0.9), MASK), optax.scale(-0.1))),
    'optax_in_our_partition': (
        lambda: optim.partition(
            {'a': optax.adam(0.05), 'b': _momentum(optim)}, _by_rank),
        lambda: optax.partition(
            {'a': optax.adam(0.05), 'b': _momentum(optax)}, _by_rank)),
    'ours_in_optax_apply_if_finite': (
        lambda: optax.apply_if_finite(optim.adam(0.05), 2),
        lambda: optax.apply_if_finite(optax.adam(0.05), 2)),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_all_optax(name):
  ours, ref = CASES[name]
  # jit only: several cases run lax.cond, which outside jit recompiles at every
  # step (see test_accumulation.py). 40 steps cover several MultiSteps cycles.
  harness.assert_matches_reference(ours(), ref(), variant=jax.jit, steps=40)


def test_inject_hyperparams_state_exposes_our_hyperparameters():
  problem = harness.make_problem(steps=2)
  opt = optax.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9)
  state = opt.init(problem.params)
  state.hyperparams['learning_rate'] = jnp.asarray(0.0)
  updates, _ = jax.jit(opt.update)(problem.grad(problem.params), state, problem.params)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))


def test_our_masked_over_optax_inner_keeps_masked_nodes():
  problem = harness.make_problem(steps=2)
  t = optim.masked(optax.sgd(0.1, momentum=0.9), MASK)
  state = t.init(problem.params)
  assert isinstance(state.inner_state[0].trace['vector'], optim.MaskedNode)
  grads = problem.grad(problem.params)
  updates, _ = t.update(grads, state, problem.params)
  chex.assert_trees_all_equal(updates['vector'], grads['vector'])
  chex.assert_trees_all_close(updates['matrix'], -0.1 * grads['matrix'], rtol=1e-6)


def test_optax_tree_map_params_sees_through_our_masked():
  # optax.tree.map_params calls init with a placeholder to find the parts of
  # the state that mirror the params; our masked must let it through.
  problem = harness.make_problem(steps=2)
  states = []
  for mod in (optim, optax):
    t = mod.masked(mod.sgd(0.1, momentum=0.9), MASK)
    states.append(optax.tree_utils.tree_map_params(
        t, lambda x, m=mod: x if isinstance(x, m.MaskedNode) else x + 1.0,
        t.init(problem.params), is_leaf=lambda v, m=mod: isinstance(v, m.MaskedNode)))
  ours, ref = states
  assert isinstance(ours.inner_state[0].trace['vector'], optim.MaskedNode)
  chex.assert_trees_all_equal(jax.tree.leaves(ours), jax.tree.leaves(ref))
  chex.assert_trees_all_equal(ours.inner_state[0].trace['matrix'],
                              jnp.ones_like(problem.params['matrix']))
