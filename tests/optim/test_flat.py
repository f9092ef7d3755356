"""optim.flat: every alias on flat buffers equals Optax's per-leaf optimizer.

The trajectories run through ``harness.assert_matches_reference`` (the same
problem, tolerances and checks as test_alias.py) with fewer steps and jit
only, to keep the file fast; the per-leaf aliases themselves are checked in
full by test_alias.py.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness
from tests.optim.test_alias import ALIASES, EXTRA_ARGS

STEPS = 25
IDS = [harness._row_id(n, kw) for n, kw in ALIASES]
# Aliases that run on segment views (their state stays per leaf), and why.
STRUCTURAL = {'noisy_sgd': 'add_noise', 'adamw': 'masked', 'adadelta': 'masked'}


def _expected_structural(name, kwargs):
  if name == 'noisy_sgd':
    return 'add_noise'
  if 'mask' in kwargs or 'weight_decay_mask' in kwargs:
    return 'masked'
  return None


@pytest.mark.parametrize('name,kwargs', ALIASES, ids=IDS)
def test_alias_equals_optax(name, kwargs):
  ours = optim.flat(getattr(optim, name)(**kwargs))
  ref = getattr(optax, name)(**kwargs)
  extra = name in EXTRA_ARGS
  harness.assert_matches_reference(ours, ref, variant=jax.jit, steps=STEPS,
                                   extra_args=extra)
  with jax.enable_x64(True):
    harness.assert_matches_reference(ours, ref, variant=jax.jit, dtype=jnp.float64,
                                     steps=STEPS, extra_args=extra)


@pytest.mark.parametrize('name,kwargs', ALIASES, ids=IDS)
def test_classify_names_what_needs_the_tree(name, kwargs):
  assert optim.classify(getattr(optim, name)(**kwargs)) == _expected_structural(name, kwargs)


def test_state_is_one_buffer_per_dtype_and_converts_both_ways():
  params = {'a': jnp.ones((3, 2)), 'b': jnp.arange(4.0), 'h': jnp.ones((5,), jnp.bfloat16)}
  grads = jax.tree.map(lambda p: 0.1 * p + 0.3, params)
  per_leaf, tx = optim.adam(0.1), optim.flat(optim.adam(0.1))
  state = tx.init(params)
  mu = state[0].mu
  assert isinstance(mu, optim.FlatTree)
  assert [b.shape for b in mu.buffers] == [(10,), (5,)]
  assert [b.dtype for b in mu.buffers] == [jnp.float32, jnp.bfloat16]
  # A per-leaf state (a checkpoint of the per-leaf optimizer) continues
  # in the flat one, and the flat state converts back, with equal updates.
  u1, s1 = per_leaf.update(grads, per_leaf.init(params), params)
  flat_s1 = optim.state_to_flat(tx, s1, params)
  chex.assert_trees_all_equal_structs(flat_s1, tx.update(grads, state, params)[1])
  u2, s2 = per_leaf.update(grads, s1, params)
  fu2, fs2 = tx.update(grads, flat_s1, params)
  chex.assert_trees_all_close(fu2, u2, rtol=1e-6)
  chex.assert_trees_all_close(optim.state_to_tree(fs2), s2, rtol=1e-6)
  chex.assert_trees_all_equal_dtypes(fu2, params)


def test_flat_params_in_flat_updates_out_without_copies():
  params = {'w': jnp.ones((4, 3)), 'b': jnp.zeros(3)}
  grads = jax.tree.map(lambda p: p + 0.5, params)
  tx = optim.flat(optim.sgd(0.1, momentum=0.9))
  fp, fg = optim.ravel(params), optim.ravel(grads)
  updates, state = jax.jit(tx.update)(fg, tx.init(fp), fp)
  assert isinstance(updates, optim.FlatTree)
  new = optim.apply_updates(fp, updates)
  chex.assert_trees_all_close(optim.unravel(new),
                              jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
  # The whole update is a few fused loops, not one per leaf.
  hlo = jax.jit(tx.update).lower(fg, state, fp).compile().as_text()
  assert hlo.count('fusion') < 10, hlo


def test_gradient_of_views_is_one_concatenation():
  params = {f'l{i}': jnp.full((3,), float(i)) for i in range(20)}
  fp = optim.ravel(params)
  grad = jax.grad(lambda f: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(optim.unravel(f))))(fp)
  np.testing.assert_allclose(grad.buffers[0], 2 * fp.buffers[0])
  jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda f: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(optim.unravel(f)))))(fp))
  assert 'pad' not in jaxpr


def test_structural_runs_on_views_or_is_refused():
  with pytest.raises(ValueError, match="'scale_by_trust_ratio' needs the tree structure"):
    optim.flat(optim.lamb(0.1), structural='error')
  with pytest.raises(ValueError, match="structural='sometimes' is invalid"):
    optim.flat(optim.adam(0.1), structural='sometimes')
  params = harness.make_problem(steps=3).params
  for tx_fn in (lambda: optim.lamb(0.1), lambda: optim.adafactor(0.1)):
    flat_tx = optim.flat(tx_fn(), structural='views')
    harness.assert_matches_reference(flat_tx, tx_fn(), variant=jax.jit, steps=5)
  # On FlatTree inputs the views' updates come back flat.
  tx = optim.flat(optim.lamb(0.1))
  fp = optim.ravel(params)
  updates, _ = tx.update(fp, tx.init(fp), fp)
  assert isinstance(updates, optim.FlatTree)


def test_unknown_transformation_runs_on_views():
  def per_leaf_norm(u, p):
    del p
    return u / (1.0 + jnp.linalg.norm(u))

  inner = optim.chain(optim.stateless_with_tree_map(per_leaf_norm), optim.sgd(0.1))
  assert optim.classify(inner) is not None
  tx = optim.flat(inner)
  params = harness.make_problem(steps=3).params
  grads = jax.tree.map(lambda p: p + 1.0, params)
  chex.assert_trees_all_close(tx.update(grads, tx.init(params), params)[0],
                              inner.update(grads, inner.init(params), params)[0])
