"""MultiSteps, apply_every and the skip functions against Optax's.

MultiSteps runs its inner update under lax.cond, so its trajectories are
compared under jit only: outside jit, lax.cond compiles both branches again at
every call (a new closure per step), a second per step on CPU.
"""

import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def _growing_k(gradient_step):
  return jnp.where(gradient_step < 3, 2, 4)


def _namespace(mod):
  def momentum():
    return mod.sgd(0.1, momentum=0.9)

  return types.SimpleNamespace(
      multi_steps_3=lambda: mod.MultiSteps(momentum(), 3),
      multi_steps_sum=lambda: mod.MultiSteps(
          mod.sgd(0.03, momentum=0.9), 3, use_grad_mean=False),
      multi_steps_schedule=lambda: mod.MultiSteps(momentum(), _growing_k),
      multi_steps_skip=lambda: mod.MultiSteps(
          momentum(), 2, should_skip_update_fn=mod.skip_not_finite),
      multi_steps_in_chain=lambda: mod.chain(
          mod.clip_by_global_norm(1.0),
          mod.MultiSteps(momentum(), 2).gradient_transformation()),
      apply_every=lambda: mod.chain(
          mod.trace(0.9), mod.apply_every(3), mod.scale(-0.1)),
  )


OURS, REF = _namespace(optim), _namespace(optax)
NAMES = ['multi_steps_3', 'multi_steps_sum', 'multi_steps_schedule', 'multi_steps_skip',
         'multi_steps_in_chain', 'apply_every']


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64], ids=['f32', 'f64'])
def test_equals_optax(name, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    harness.assert_matches_reference(
        getattr(OURS, name)(), getattr(REF, name)(), variant=jax.jit, dtype=dtype)


def test_apply_every_equals_optax_without_jit():
  harness.assert_matches_reference(OURS.apply_every(), REF.apply_every(), steps=30)


@pytest.mark.parametrize('name', ['multi_steps_3', 'multi_steps_skip', 'apply_every'])
def test_contracts(name):
  for dtype in (jnp.bfloat16, jnp.float32):
    harness.assert_dtypes_preserved(getattr(OURS, name)(), dtype)
  harness.assert_state_stable_under_cond(getattr(OURS, name)())
  harness.assert_accepts_unknown_kwargs(getattr(OURS, name)())


def test_multi_steps_moves_the_params_only_every_k_steps():
  problem = harness.make_problem(steps=9)
  k = 3
  opt = optim.MultiSteps(optim.sgd(0.1, momentum=0.9), k)
  ref = optax.MultiSteps(optax.sgd(0.1, momentum=0.9), k)
  params = problem.params
  state, ref_state = opt.init(params), ref.init(params)
  update, ref_update = jax.jit(opt.update), jax.jit(ref.update)
  grads_in_cycle = []
  for step in range(9):
    grads = problem.grad(params, step)
    grads_in_cycle.append(grads)
    updates, state = update(grads, state, params)
    ref_updates, ref_state = ref_update(grads, ref_state, params)
    chex.assert_trees_all_close(updates, ref_updates, rtol=1e-6, atol=1e-7)
    assert (int(state.mini_step), int(state.gradient_step)) == (
        int(ref_state.mini_step), int(ref_state.gradient_step))
    emitted = step % k == k - 1
    assert bool(opt.has_updated(state)) == emitted
    if emitted:
      # One SGD step on the mean of the cycle's gradients (the trace was zero
      # only at the first cycle, so check the direct formula there).
      if step == k - 1:
        mean = jax.tree.map(lambda *g: sum(g) / k, *grads_in_cycle)
        chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -0.1 * g, mean),
                                    rtol=1e-5)
      grads_in_cycle = []
    else:
      chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))
    params = optim.apply_updates(params, updates)
  assert int(state.gradient_step) == 3


def test_multi_steps_skips_a_non_finite_mini_step():
  problem = harness.make_problem(steps=2)
  params = problem.params
  grads = problem.grad(params)
  bad = dict(grads, matrix=grads['matrix'].at[0, 0].set(jnp.inf))
  for mod in (optim, optax):
    opt = mod.MultiSteps(mod.sgd(0.1), 2, should_skip_update_fn=mod.skip_not_finite)
    update = jax.jit(opt.update)
    s0 = opt.init(params)
    u1, s1 = update(grads, s0, params)
    u2, s2 = update(bad, s1, params)
    chex.assert_trees_all_equal(u2, jax.tree.map(jnp.zeros_like, grads))
    chex.assert_trees_all_equal(s2.acc_grads, s1.acc_grads)
    assert int(s2.mini_step) == 1 and int(s2.skip_state['num_not_finite']) == 1
    u3, s3 = update(grads, s2, params)  # completes the cycle
    assert int(s3.gradient_step) == 1
    chex.assert_trees_all_close(u3, jax.tree.map(lambda g: -0.1 * g, grads), rtol=1e-6)


def test_skip_large_updates():
  grads = {'a': jnp.array([3.0, 4.0])}
  for mod in (optim, optax):
    skip, info = mod.skip_large_updates(grads, 0, None, max_squared_norm=26.0)
    assert not bool(skip) and float(info['norm_squared']) == 25.0
    skip, _ = mod.skip_large_updates(grads, 0, None, max_squared_norm=25.0)
    assert bool(skip)
  opt = optim.MultiSteps(optim.sgd(0.1), 1, should_skip_update_fn=functools.partial(
      optim.skip_large_updates, max_squared_norm=1.0))
  updates, state = opt.update(grads, opt.init(grads), grads)
  np.testing.assert_array_equal(updates['a'], [0.0, 0.0])
  assert int(state.gradient_step) == 0


def test_apply_every_sums_and_emits_every_k():
  t = optim.apply_every(3)
  g = {'a': jnp.array([1.0, 2.0])}
  state = t.init(g)
  outs = []
  for _ in range(6):
    u, state = t.update(g, state)
    outs.append(np.asarray(u['a']))
  np.testing.assert_array_equal(np.stack(outs), [[0, 0], [0, 0], [3, 6]] * 2)


def test_bad_skip_function_output_is_rejected():
  opt = optim.MultiSteps(
      optim.sgd(0.1), 2, should_skip_update_fn=lambda *a: (jnp.ones(2) > 0, ()))
  g = {'a': jnp.ones(2)}
  with pytest.raises(ValueError, match='should_skip_update_fn'):
    opt.update(g, opt.init(g), g)


@pytest.mark.parametrize('make,match', [
    (lambda: optim.MultiSteps(optim.sgd(0.1), 0), 'every_k_schedule=0'),
    (lambda: optim.MultiSteps(optim.sgd(0.1), -2), 'every_k_schedule=-2'),
    (lambda: optim.apply_every(0), 'k=0'),
])
def test_rejects_bad_hyperparameters(make, match):
  with pytest.raises(ValueError, match=match):
    make()
