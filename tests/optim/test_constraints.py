"""keep_params_nonnegative and zero_nans against Optax's; max_norm (not in
Optax) against a hand computation of the projection."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def _namespace(mod):
  return types.SimpleNamespace(
      keep_params_nonnegative=lambda: mod.chain(
          mod.sgd(0.1, momentum=0.9), mod.keep_params_nonnegative()),
      zero_nans=lambda: mod.chain(mod.zero_nans(), mod.sgd(0.1, momentum=0.9)),
  )


ROWS = [('keep_params_nonnegative', {}), ('zero_nans', {})]
globals().update(harness.alias_suite(
    ROWS, ours_module=_namespace(optim), reference_module=_namespace(optax)))


def test_keep_params_nonnegative_keeps_them_nonnegative():
  problem = harness.make_problem(steps=10)
  params = jax.tree.map(jnp.abs, problem.params)
  problem.params = params
  traj, _ = harness.run_trajectory(
      optim.chain(optim.sgd(0.5), optim.keep_params_nonnegative()), problem, 10)
  for key in traj:
    assert np.all(traj[key] >= 0.0)
  # Some target is negative, so the constraint was active somewhere.
  assert any(np.any(traj[k][-1] == 0.0) for k in traj)


def test_keep_params_nonnegative_needs_params():
  t = optim.keep_params_nonnegative()
  with pytest.raises(ValueError, match='keep_params_nonnegative'):
    t.update({'a': jnp.ones(2)}, t.init({'a': jnp.ones(2)}))


def test_zero_nans_zeroes_and_reports():
  g = {'a': jnp.array([1.0, jnp.nan]), 'b': jnp.array([2.0])}
  for mod in (optim, optax):
    t = mod.zero_nans()
    out, state = t.update(g, t.init(g))
    np.testing.assert_array_equal(out['a'], [1.0, 0.0])
    np.testing.assert_array_equal(out['b'], [2.0])
    assert bool(state.found_nan['a']) and not bool(state.found_nan['b'])


def _max_norm_case():
  # A Dense kernel (in=3, out=4): columns 0 and 2 end up outside radius 1.
  kernel = jnp.array([[0.9, 0.1, 0.5, 0.0],
                      [0.0, 0.2, 0.5, 0.0],
                      [0.0, 0.1, 0.5, 0.0]])
  params = {'dense': {'kernel': kernel, 'bias': jnp.array([5.0, 5.0, 5.0, 5.0])}}
  updates = {'dense': {'kernel': jnp.array([[0.5, 0.1, 0.3, 0.0],
                                            [0.0, 0.1, 0.3, 0.0],
                                            [0.0, 0.0, 0.3, 0.0]]),
                       'bias': jnp.array([1.0, 1.0, 1.0, 1.0])}}
  return params, updates


def test_max_norm_projects_each_column():
  params, updates = _max_norm_case()
  r = 1.0
  t = optim.max_norm(r)
  new_updates, _ = t.update(updates, t.init(params), params)
  new = optim.apply_updates(params, new_updates)
  w = np.asarray(params['dense']['kernel'] + updates['dense']['kernel'])
  norms = np.linalg.norm(w, axis=0)
  outside = norms > r
  assert outside.tolist() == [True, False, True, False]
  expected = np.where(outside, w * (r / np.where(outside, norms, 1.0)), w)
  np.testing.assert_allclose(new['dense']['kernel'], expected, rtol=1e-6)
  assert np.all(np.linalg.norm(new['dense']['kernel'], axis=0) <= r * (1 + 1e-6))
  # Columns inside the ball, and the bias, keep their updates bit for bit.
  np.testing.assert_array_equal(
      np.asarray(new_updates['dense']['kernel'])[:, ~outside],
      np.asarray(updates['dense']['kernel'])[:, ~outside])
  np.testing.assert_array_equal(new_updates['dense']['bias'], updates['dense']['bias'])


def test_max_norm_conv_kernel_per_output_channel():
  rng = np.random.default_rng(0)
  params = {'conv': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)}
  updates = {'conv': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)}
  t = optim.chain(optim.scale(1.0), optim.max_norm(2.0, axis=(0, 1, 2)))
  new_updates, _ = jax.jit(t.update)(updates, t.init(params), params)
  new = np.asarray(params['conv'] + new_updates['conv'])
  w = np.asarray(params['conv'] + updates['conv'])
  norms = np.sqrt(np.sum(w**2, axis=(0, 1, 2)))
  assert np.all(norms > 2.0)  # every filter was outside: all were projected
  np.testing.assert_allclose(np.sqrt(np.sum(new**2, axis=(0, 1, 2))), 2.0, rtol=1e-5)
  np.testing.assert_allclose(new, w * (2.0 / norms), rtol=1e-5, atol=1e-6)


def test_max_norm_mask_selects_leaves():
  params, updates = _max_norm_case()
  only_bias = {'dense': {'kernel': False, 'bias': True}}
  as_fn = lambda p: jax.tree.map(lambda x: x.ndim == 1, p)  # noqa: E731
  outs = []
  for mask in (only_bias, as_fn):
    t = optim.max_norm(1.0, mask=mask)
    out, _ = t.update(updates, t.init(params), params)
    outs.append(out)
    np.testing.assert_array_equal(out['dense']['kernel'], updates['dense']['kernel'])
    new_bias = params['dense']['bias'] + out['dense']['bias']
    np.testing.assert_allclose(np.linalg.norm(new_bias), 1.0, rtol=1e-6)
  chex.assert_trees_all_equal(outs[0], outs[1])


def test_max_norm_trajectory_stays_in_the_ball():
  problem = harness.make_problem(steps=20)
  t = optim.chain(optim.sgd(0.3, momentum=0.9), optim.max_norm(0.8))
  traj, _ = harness.run_trajectory(t, problem, 20, variant=jax.jit)
  # traj has a leading step axis, so the params' axis 0 is axis 1 here.
  for key in ('matrix', 'conv'):
    assert np.all(np.linalg.norm(traj[key], axis=1) <= 0.8 * (1 + 1e-6))
  assert np.any(np.linalg.norm(problem.params['matrix'], axis=0) > 0.8)  # was active
  assert not np.allclose(traj['vector'][-1], problem.params['vector'])  # moved freely


def test_max_norm_contracts():
  t = optim.chain(optim.sgd(0.1), optim.max_norm(1.0))
  for dtype in (jnp.bfloat16, jnp.float32):
    harness.assert_dtypes_preserved(t, dtype)
  harness.assert_state_stable_under_cond(t)
  harness.assert_accepts_unknown_kwargs(t)


def test_max_norm_needs_params():
  params, updates = _max_norm_case()
  t = optim.max_norm(1.0)
  with pytest.raises(ValueError, match='max_norm'):
    t.update(updates, t.init(params))


@pytest.mark.parametrize('kwargs,match', [
    (dict(max_value=0.0), 'max_value=0.0'),
    (dict(max_value=-1.0), 'max_value=-1.0'),
    (dict(max_value=1.0, axis='rows'), "axis='rows'"),
])
def test_max_norm_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.max_norm(**kwargs)
