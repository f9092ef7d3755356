"""reduce_on_plateau over scripted metric sequences.

Each expected scale sequence is worked out by hand in the comments: ``e_k``
is the k-th evaluation, ``b`` the best value, ``p`` the plateau count.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim.plateau import ReduceLROnPlateauState, reduce_on_plateau
from tests.optim import harness

GRADS = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array(3.0)}


def run(opt, values, jit=True):
  """Feeds ``values`` one per update; returns the scales and the updates."""
  state = opt.init(GRADS)

  def step(state, value):
    updates, state = opt.update(GRADS, state, GRADS, value=value)
    return state, (state.scale, updates, state)

  values = jnp.asarray(values, jnp.float32)
  if jit:
    _, (scales, updates, states) = jax.jit(
        lambda s, v: jax.lax.scan(step, s, v))(state, values)
  else:
    outs = []
    for v in values:
      state, out = step(state, v)
      outs.append(out)
    scales, updates, states = jax.tree.map(lambda *x: jnp.stack(x), *outs)
  # The updates are the gradients times the scale after each evaluation.
  for key in GRADS:
    np.testing.assert_allclose(updates[key], scales.reshape(
        (-1,) + (1,) * GRADS[key].ndim) * GRADS[key], rtol=1e-7)
  return np.asarray(scales), states


# (id, kwargs, values, expected scales)
SCRIPTS = [
    # factor .5, patience 2, strict improvement. e1 3 (b=3); e2 2 (b=2);
    # e3 p=1; e4 p=2 -> .5, p=0; e5 p=1; e6 p=2 -> .25; e7 1 improves;
    # e8 p=1; e9 p=2 -> .125.
    ('patience', dict(factor=0.5, patience=2, rtol=0.0),
     [3, 2, 2, 2, 2, 2, 1, 1, 1],
     [1, 1, 1, .5, .5, .25, .25, .25, .125]),
    # patience 0: every evaluation without improvement reduces.
    # e1 b=1; e2 -> .1; e3 .5 improves; e4 -> .01.
    ('patience_zero', dict(patience=0), [1, 1, .5, .5], [1, .1, .1, .01]),
    # cooldown 2 ignores two evaluations after each reduction.
    # e1 b=1; e2 p=1 -> .5, cooldown 2; e3, e4 in cooldown; e5 p=1 -> .25;
    # e6, e7 cooldown; e8 -> .125.
    ('cooldown', dict(factor=0.5, patience=1, cooldown=2), [1] * 8,
     [1, .5, .5, .5, .25, .25, .25, .125]),
    # min_scale .05: e2 -> max(.1, .05) = .1; e3 -> max(.01, .05) = .05;
    # then it stays.
    ('min_scale', dict(patience=1, min_scale=0.05), [1] * 5,
     [1, .1, .05, .05, .05]),
    # Negative losses, rtol .01: e1 b=-10; e2 -10.05 is not below
    # -10 - .1 = -10.1 -> .5; e3 -10.2 < -10.1 improves (b=-10.2);
    # e4 -10.2 not below -10.302 -> .25; e5 -10.5 < -10.302 improves.
    ('negative', dict(factor=0.5, patience=1, rtol=0.01),
     [-10, -10.05, -10.2, -10.2, -10.5], [1, .5, .5, .25, .25]),
    # A negative loss that stagnates: e1 b=-5; e2 p=1; e3 p=2 -> .5; e4 p=1.
    ('negative_stagnant', dict(factor=0.5, patience=2), [-5] * 4,
     [1, 1, .5, .5]),
    # Zero losses: e1 0 improves on +inf (b=0); margin max(0, 1e-4 * 0) = 0,
    # so e2 0 < 0 is false, p=1; e3 p=2 -> .1; e4 p=1.
    ('zero', dict(patience=2), [0, 0, 0, 0], [1, 1, .1, .1]),
    # Crossing zero, rtol .1: e1 b=.5; e2 0 < .45 (b=0); e3 -.5 < 0 (b=-.5);
    # e4 -.5 not below -.55, p=1; e5 p=2 -> .1.
    ('through_zero', dict(patience=2, rtol=0.1), [.5, 0, -.5, -.5, -.5],
     [1, 1, 1, 1, .1]),
    # atol .5 (rtol 0): e1 b=10; e2 9.6 not below 9.5 -> .1; e3 9.4 < 9.5
    # (b=9.4); e4 9.0 not below 8.9 -> .01.
    ('atol', dict(patience=1, rtol=0.0, atol=0.5), [10, 9.6, 9.4, 9.0],
     [1, .1, .1, .01]),
    # Margin max(atol .5, rtol .1 * 10 = 1) = 1: e2 9.2 not below 9 -> .5;
    # e3 8.9 < 9 improves.
    ('max_of_tolerances', dict(factor=0.5, patience=1, rtol=0.1, atol=0.5),
     [10, 9.2, 8.9], [1, .5, .5]),
    # mode 'max', atol .01: e1 b=.5; e2 .6 > .51 (b=.6); e3 .6 not above
    # .61, p=1; e4 p=2 -> .5; e5 .7 > .61 (b=.7); e6 p=1.
    ('mode_max', dict(factor=0.5, patience=2, rtol=0.0, atol=0.01, mode='max'),
     [.5, .6, .6, .6, .7, .7], [1, 1, 1, .5, .5, .5]),
    # mode 'max' with negative values, rtol .1: e1 b=-3; e2 -2.9 not above
    # -3 + .3 = -2.7 -> .5; e3 again -> .25; e4 -2.6 > -2.7 improves.
    ('mode_max_negative', dict(factor=0.5, patience=1, rtol=0.1, mode='max'),
     [-3, -2.9, -2.9, -2.6], [1, .5, .25, .25]),
    # accumulation_size 3: evaluations of the means 2 (after 3, 2, 1), 2, 2:
    # e1 b=2 at update 3; e2 at update 6 -> .5; e3 at update 9 -> .25.
    ('accumulation', dict(factor=0.5, patience=1, accumulation_size=3),
     [3, 2, 1, 2, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, .5, .5, .5, .25]),
]


@pytest.mark.parametrize('kwargs,values,expected', [s[1:] for s in SCRIPTS],
                         ids=[s[0] for s in SCRIPTS])
def test_scripted_sequences(kwargs, values, expected):
  scales, _ = run(reduce_on_plateau(**kwargs), values)
  # Expected scales are products of factors: float32 rounding only.
  np.testing.assert_allclose(scales, expected, rtol=1e-6)


def test_without_jit_matches():
  kwargs, values, expected = SCRIPTS[2][1:]
  scales, _ = run(reduce_on_plateau(**kwargs), values, jit=False)
  np.testing.assert_allclose(scales, expected, rtol=1e-6)


def test_counters_at_min_scale_keep_running_as_in_keras():
  # e1 b=1 p=0; e2 reduce (p reset to 0); e3 reduce to the floor (p=0);
  # e4, e5: the scale is at min_scale, nothing to reduce: p=1, 2.
  _, states = run(reduce_on_plateau(patience=1, min_scale=0.05), [1] * 5)
  np.testing.assert_array_equal(states.plateau_count, [0, 0, 0, 1, 2])
  np.testing.assert_allclose(states.best_value, [1] * 5)


def test_optax_relative_test_fails_on_negative_losses_ours_does_not():
  # Why our improvement test differs: with a stagnant negative loss Optax's
  # `v < (1 - rtol) b - atol` keeps finding improvements, so it never reduces.
  values = jnp.full((6,), -5.0)
  ref, _ = run(optax.contrib.reduce_on_plateau(factor=0.5, patience=2), values)
  assert ref[-1] == 1.0
  scales, _ = run(reduce_on_plateau(factor=0.5, patience=2), values)
  assert scales[-1] == 0.25


def test_equals_optax_where_the_rules_agree():
  # Positive losses, atol = 0, patience >= 1, min_scale not reached: the two
  # improvement tests coincide ((1 - rtol) b = b - rtol |b|), so must the scales.
  rng = np.random.default_rng(0)
  values = 1.0 + 0.3 * np.exp(-np.arange(80) / 10) + 0.05 * rng.random(80)
  kwargs = dict(factor=0.5, patience=3, rtol=1e-3, cooldown=2,
                accumulation_size=2)
  ours, _ = run(reduce_on_plateau(**kwargs), values)
  ref, _ = run(optax.contrib.reduce_on_plateau(**kwargs), values)
  assert ours[-1] < 0.1  # The script does reduce, several times.
  np.testing.assert_array_equal(ours, ref)


def test_state_exposes_scale_and_types():
  opt = reduce_on_plateau()
  state = opt.init(GRADS)
  assert isinstance(state, ReduceLROnPlateauState)
  assert state.scale.dtype == jnp.float32 and float(state.scale) == 1.0
  assert state.plateau_count.dtype == jnp.int32
  # bfloat16 params: the float32 metric must not promote the updates.
  harness.assert_dtypes_preserved(opt, jnp.bfloat16, extra_args=True)
  harness.assert_state_stable_under_cond(opt, extra_args=True)


def test_in_a_chain_after_sgd():
  # The scale multiplies the learning-rate-scaled step: -0.1 * scale * g.
  opt = optim.chain(optim.sgd(0.1), reduce_on_plateau(patience=0, factor=0.5))
  state = opt.init(GRADS)
  _, state = opt.update(GRADS, state, value=1.0)
  updates, state = opt.update(GRADS, state, value=1.0)
  chex.assert_trees_all_close(
      updates, jax.tree.map(lambda g: -0.05 * g, GRADS), rtol=1e-6)


def test_update_without_value_raises():
  opt = reduce_on_plateau()
  with pytest.raises(ValueError, match='value=metric'):
    opt.update(GRADS, opt.init(GRADS))
  chained = optim.chain(optim.sgd(0.1), reduce_on_plateau())
  with pytest.raises(ValueError, match='reduce_on_plateau: update needs'):
    chained.update(GRADS, chained.init(GRADS), GRADS)


@pytest.mark.parametrize('kwargs,match', [
    (dict(factor=0.0), r'factor=0.0 .*allowed: \(0.0, 1.0\)'),
    (dict(factor=1.0), r'factor=1.0 .*allowed: \(0.0, 1.0\)'),
    (dict(factor=1.5), r'factor=1.5 .*allowed'),
    (dict(patience=-1), r'patience=-1 .*allowed: \[0.0, inf'),
    (dict(cooldown=-2), r'cooldown=-2 .*allowed'),
    (dict(rtol=-0.1), r'rtol=-0.1 .*allowed: \[0.0, 1.0\]'),
    (dict(rtol=2.0), r'rtol=2.0 .*allowed'),
    (dict(atol=-1.0), r'atol=-1.0 .*allowed'),
    (dict(accumulation_size=0), r'accumulation_size=0 .*allowed'),
    (dict(min_scale=-0.1), r'min_scale=-0.1 .*allowed'),
    (dict(mode='avg'), r"mode='avg' .*allowed: 'min', 'max'"),
])
def test_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    reduce_on_plateau(**kwargs)
