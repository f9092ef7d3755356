"""masked, freeze, flatten, the conditional wrappers, apply_if_finite and
lookahead against Optax's, each wrapped the same way on both sides.

A wrapper that passes some updates through untouched (masked,
conditionally_transform) is followed by ``scale(-0.1)`` so that the raw
gradients it lets through still descend.
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

MASK = {'scalar': True, 'vector': False, 'matrix': True, 'conv': False}


def _kernels(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _every_other(step):
  return step % 2 == 0


def _namespace(mod):
  def momentum():
    return mod.sgd(0.1, momentum=0.9)

  return types.SimpleNamespace(
      masked_tree=lambda: mod.chain(mod.masked(mod.trace(0.9), MASK), mod.scale(-0.1)),
      masked_fn=lambda: mod.chain(
          mod.masked(mod.trace(0.9), _kernels), mod.scale(-0.1)),
      freeze=lambda: mod.chain(momentum(), mod.freeze(MASK)),
      flatten=lambda: mod.flatten(momentum()),
      conditionally_transform=lambda: mod.chain(
          mod.conditionally_transform(mod.trace(0.9), _every_other), mod.scale(-0.1)),
      conditionally_mask=lambda: mod.conditionally_mask(momentum(), _every_other),
      apply_if_finite=lambda: mod.apply_if_finite(momentum(), 2),
  )


OURS, REF = _namespace(optim), _namespace(optax)
ROWS = [(name, {}) for name in ('masked_tree', 'masked_fn', 'freeze', 'flatten')]
COMPLEX = {'masked_tree', 'flatten'}
globals().update(harness.alias_suite(
    ROWS, ours_module=OURS, reference_module=REF, complex_names=COMPLEX))

# Wrappers built on lax.cond run the same checks under jit only: outside jit,
# lax.cond compiles both branches again at every call (a new closure per step),
# which costs about a second per step on CPU and tests nothing more.
COND_ROWS = ['conditionally_transform', 'conditionally_mask', 'apply_if_finite']


@pytest.mark.parametrize('name', COND_ROWS)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64], ids=['f32', 'f64'])
def test_cond_wrapper_equals_optax(name, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    harness.assert_matches_reference(
        getattr(OURS, name)(), getattr(REF, name)(), variant=jax.jit, dtype=dtype)


@pytest.mark.parametrize('name', COND_ROWS)
def test_cond_wrapper_contracts(name):
  for dtype in (jnp.bfloat16, jnp.float32):
    harness.assert_dtypes_preserved(getattr(OURS, name)(), dtype)
  harness.assert_state_stable_under_cond(getattr(OURS, name)())
  harness.assert_accepts_unknown_kwargs(getattr(OURS, name)())


def _problem():
  problem = harness.make_problem(steps=3)
  return problem.params, problem.grad(problem.params)


def test_masked_keeps_state_only_for_selected_leaves():
  params, grads = _problem()
  t = optim.masked(optim.sgd(0.1, momentum=0.9), MASK)
  state = t.init(params)
  trace = state.inner_state[0].trace
  for key, selected in MASK.items():
    assert isinstance(trace[key], optim.MaskedNode) != selected
  updates, _ = t.update(grads, state, params)
  for key, selected in MASK.items():
    if selected:
      np.testing.assert_allclose(updates[key], -0.1 * grads[key], rtol=1e-6)
    else:
      np.testing.assert_array_equal(updates[key], grads[key])


def test_mask_as_function_equals_mask_as_tree():
  params, grads = _problem()
  as_tree = optim.masked(optim.sgd(0.1, momentum=0.9), _kernels(params))
  as_fn = optim.masked(optim.sgd(0.1, momentum=0.9), _kernels)
  out_tree = as_tree.update(grads, as_tree.init(params), params)
  out_fn = as_fn.update(grads, as_fn.init(params), params)
  chex.assert_trees_all_equal(out_tree, out_fn)


def test_mask_may_be_a_prefix():
  params = {'enc': {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)},
            'dec': {'w': jnp.ones((2, 2))}}
  grads = jax.tree.map(lambda p: 2 * p, params)
  for mod in (optim, optax):
    t = mod.masked(mod.scale(-0.5), {'enc': True, 'dec': False})
    out, _ = t.update(grads, t.init(params))
    chex.assert_trees_all_equal(
        out['enc'], jax.tree.map(lambda g: -0.5 * g, grads['enc']))
    chex.assert_trees_all_equal(out['dec'], grads['dec'])


def test_masked_extra_args_follow_the_mask():
  params, grads = _problem()
  seen = {}

  def spy():
    def update_fn(updates, state, params=None, tags=None, **extra):
      seen['tags'] = tags
      return updates, state
    return optim.GradientTransformationExtraArgs(optim.init_empty_state, update_fn)

  t = optim.masked(spy(), MASK, mask_compatible_extra_args=True)
  t.update(grads, t.init(params), params, tags=grads)
  assert isinstance(seen['tags']['vector'], optim.MaskedNode)
  np.testing.assert_array_equal(seen['tags']['matrix'], grads['matrix'])


def test_freeze_holds_the_frozen_params_fixed():
  problem = harness.make_problem(steps=5)
  traj, _ = harness.run_trajectory(
      optim.chain(optim.sgd(0.1, momentum=0.9), optim.freeze(MASK)), problem, 5)
  for key, frozen in MASK.items():
    start = np.asarray(problem.params[key])
    if frozen:
      np.testing.assert_array_equal(traj[key][-1], start)
    else:
      assert np.max(np.abs(traj[key][-1] - start)) > 1e-3


def test_freeze_with_a_bool_freezes_all_or_nothing():
  params, grads = _problem()
  frozen, _ = optim.freeze(True).update(grads, optim.freeze(True).init(params))
  chex.assert_trees_all_equal(frozen, jax.tree.map(jnp.zeros_like, grads))
  free, _ = optim.freeze(False).update(grads, optim.freeze(False).init(params))
  chex.assert_trees_all_equal(free, grads)


def _counts(state):
  return (int(state.notfinite_count), bool(state.last_finite),
          int(state.total_notfinite))


def test_apply_if_finite_skips_and_counts_a_nan_step():
  params, grads = _problem()
  bad = dict(grads, vector=grads['vector'].at[0].set(jnp.nan))
  results = {}
  for mod in (optim, optax):
    t = mod.apply_if_finite(mod.sgd(0.1, momentum=0.9), max_consecutive_errors=1)
    s0 = t.init(params)
    update = jax.jit(t.update)
    u1, s1 = update(grads, s0, params)
    u2, s2 = update(bad, s1, params)      # skipped
    u3, s3 = update(bad, s2, params)      # second in a row: let through
    u4, s4 = update(grads, s3, params)    # finite again
    results[mod.__name__] = (u1, u2, u3, u4, s1, s2, s3, s4)
    chex.assert_trees_all_equal(u2, jax.tree.map(jnp.zeros_like, grads))
    chex.assert_trees_all_equal(s2.inner_state, s1.inner_state)
    assert _counts(s2) == (1, False, 1)
    assert np.isnan(np.asarray(u3['vector'])).any()
    assert (int(s3.notfinite_count), int(s3.total_notfinite)) == (2, 2)
    assert _counts(s4) == (0, True, 2)
  ours, ref = results['research.optim'], results['optax']
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]),
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)]),
        rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize('reset_state', [False, True])
def test_lookahead_matches_optax(reset_state):
  problem = harness.make_problem(steps=12)

  def run(mod):
    t = mod.lookahead(mod.sgd(0.1, momentum=0.9), sync_period=3,
                      slow_step_size=0.5, reset_state=reset_state)
    params = mod.LookaheadParams.init_synced(problem.params)
    state = t.init(params)
    update = jax.jit(t.update)
    out = []
    for step in range(12):
      updates, state = update(problem.grad(params.fast, step), state, params)
      params = mod.apply_updates(params, updates)
      out.append((params.fast, params.slow))
    return out

  ours, ref = run(optim), run(optax)
  for (fo, so), (fr, sr) in zip(ours, ref):
    chex.assert_trees_all_close(fo, fr, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(so, sr, rtol=1e-6, atol=1e-6)
  # The slow weights move only at syncs (every 3rd step), where fast == slow.
  slows = [problem.params] + [s for _, s in ours]
  for step in range(12):
    moved = not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(slows[step]), jax.tree.leaves(slows[step + 1])))
    assert moved == (step % 3 == 2)
    if step % 3 == 2:
      # fast and slow are equal in exact arithmetic; they are reached by
      # different float32 sums, so allow a few ulps of O(1) params.
      chex.assert_trees_all_close(ours[step][0], ours[step][1], rtol=1e-6, atol=1e-6)


def test_flatten_keeps_one_flat_state():
  params, grads = _problem()
  t = optim.flatten(optim.sgd(0.1, momentum=0.9))
  state = t.init(params)
  size = sum(np.size(p) for p in jax.tree.leaves(params))
  assert state[0].trace.shape == (size,)
  updates, _ = t.update(grads, state, params)
  chex.assert_trees_all_close(
      updates, jax.tree.map(lambda g: -0.1 * g, grads), rtol=1e-6)


def test_conditionally_mask_zeros_rejected_steps():
  params, grads = _problem()
  t = optim.conditionally_mask(optim.sgd(0.1), lambda step: step >= 1)
  state = t.init(params)
  u0, state = t.update(grads, state, params)
  u1, state = t.update(grads, state, params)
  chex.assert_trees_all_equal(u0, jax.tree.map(jnp.zeros_like, grads))
  chex.assert_trees_all_close(u1, jax.tree.map(lambda g: -0.1 * g, grads))
  assert int(state.step) == 2


def test_conditionally_transform_can_forward_extra_args():
  params, grads = _problem()
  t = optim.conditionally_transform(
      optim.scale(0.0), lambda step, value: value > 1.0, forward_extra_args=True)
  state = t.init(params)
  low, _ = t.update(grads, state, params, value=0.5)
  high, _ = t.update(grads, state, params, value=2.0)
  chex.assert_trees_all_equal(low, grads)
  chex.assert_trees_all_equal(high, jax.tree.map(jnp.zeros_like, grads))


@pytest.mark.parametrize('make,match', [
    (lambda: optim.apply_if_finite(optim.sgd(0.1), -1), 'max_consecutive_errors=-1'),
    (lambda: optim.lookahead(optim.sgd(0.1), 0, 0.5), 'sync_period=0'),
    (lambda: optim.lookahead(optim.sgd(0.1), 3, 1.5), 'slow_step_size=1.5'),
])
def test_rejects_bad_hyperparameters(make, match):
  with pytest.raises(ValueError, match=match):
    make()
