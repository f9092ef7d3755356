"""partition (and its old name multi_transform, and selective_transform)
against Optax's: two labels with different inner optimizers, labels as a
pytree, as a function and as a prefix of the params."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness

LABELS = {'scalar': 'slow', 'vector': 'fast', 'matrix': 'fast', 'conv': 'slow'}
FROZEN = {k: v == 'slow' for k, v in LABELS.items()}


def _by_rank(params):
  return jax.tree.map(lambda p: 'fast' if p.ndim >= 2 else 'slow', params)


def _namespace(mod):
  def inner():
    return {'fast': mod.sgd(0.1, momentum=0.9, nesterov=True), 'slow': mod.sgd(0.05)}

  return types.SimpleNamespace(
      partition_tree=lambda: mod.partition(inner(), LABELS),
      partition_fn=lambda: mod.partition(inner(), _by_rank),
      multi_transform=lambda: mod.multi_transform(inner(), LABELS),
      selective_transform=lambda: mod.selective_transform(
          mod.sgd(0.1, momentum=0.9), freeze_mask=FROZEN),
  )


ROWS = [(name, {}) for name in (
    'partition_tree', 'partition_fn', 'multi_transform', 'selective_transform')]
globals().update(harness.alias_suite(
    ROWS, ours_module=_namespace(optim), reference_module=_namespace(optax),
    complex_names={'partition_tree'},
))


def _problem():
  problem = harness.make_problem(steps=2)
  return problem.params, problem.grad(problem.params)


def test_each_label_gets_its_own_optimizer():
  params, grads = _problem()
  t = optim.partition({'fast': optim.sgd(0.1), 'slow': optim.sgd(0.01)}, LABELS)
  updates, _ = t.update(grads, t.init(params), params)
  for key, label in LABELS.items():
    lr = 0.1 if label == 'fast' else 0.01
    np.testing.assert_allclose(updates[key], -lr * grads[key], rtol=1e-6)


def test_state_matches_optax_structure_and_values():
  params, grads = _problem()
  states = []
  for mod in (optim, optax):
    inner = {'fast': mod.sgd(0.1, momentum=0.9), 'slow': mod.sgd(0.01)}
    t = mod.partition(inner, LABELS)
    _, state = t.update(grads, t.init(params), params)
    states.append(state)
  ours, ref = states
  assert isinstance(ours, optim.PartitionState)
  assert set(ours.inner_states) == {'fast', 'slow'}
  assert isinstance(ours.inner_states['fast'], optim.MaskedState)
  trace = ours.inner_states['fast'].inner_state[0].trace
  assert isinstance(trace['scalar'], optim.MaskedNode)  # labelled 'slow'
  chex.assert_trees_all_close(jax.tree.leaves(ours), jax.tree.leaves(ref), rtol=1e-6)


def test_labels_may_be_a_prefix():
  params = ({'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}, {'w': jnp.ones(3)})
  grads = jax.tree.map(lambda p: 2 * p, params)
  t = optim.partition(
      {'generator': optim.sgd(0.1), 'discriminator': optim.sgd(0.5)},
      ('generator', 'discriminator'))
  updates, _ = t.update(grads, t.init(params), params)
  chex.assert_trees_all_close(updates[0], jax.tree.map(lambda g: -0.1 * g, grads[0]))
  chex.assert_trees_all_close(updates[1], jax.tree.map(lambda g: -0.5 * g, grads[1]))


def test_selective_transform_keeps_no_state_for_frozen_leaves():
  params, grads = _problem()
  frozen = FROZEN
  t = optim.selective_transform(optim.sgd(0.1, momentum=0.9), freeze_mask=frozen)
  state = t.init(params)
  trace = state.inner_states['train'].inner_state[0].trace
  updates, _ = t.update(grads, state, params)
  for key, is_frozen in frozen.items():
    assert isinstance(trace[key], optim.MaskedNode) == is_frozen
    if is_frozen:
      np.testing.assert_array_equal(updates[key], np.zeros_like(grads[key]))


def test_unknown_label_is_rejected():
  params, _ = _problem()
  t = optim.partition({'fast': optim.sgd(0.1)}, LABELS)
  with pytest.raises(ValueError, match="'slow'"):
    t.init(params)
