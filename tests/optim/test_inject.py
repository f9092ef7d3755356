"""inject_hyperparams: same trajectory as the plain optimizer, schedules,
logging of the applied values, changes without recompilation, static args.
"""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim import inject
from research.optim import schedules
from tests.optim import harness

GRADS = {'w': jnp.array([1.0, -2.0, 0.5]), 'b': jnp.array(3.0)}


@pytest.mark.parametrize('variant', [harness.no_jit, jax.jit], ids=['eager', 'jit'])
@pytest.mark.parametrize('name,kwargs', [
    ('sgd', dict(learning_rate=0.1, momentum=0.9)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ('adam', dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6)),
], ids=['sgd_momentum', 'sgd_nesterov', 'adam'])
def test_equals_plain_optimizer_over_50_steps(name, kwargs, variant):
  factory = getattr(optim, name)
  state = harness.assert_matches_reference(
      inject.inject_hyperparams(factory)(**kwargs), factory(**kwargs),
      steps=50, variant=variant)
  assert int(state.count) == 50
  for key, value in kwargs.items():
    if isinstance(value, float):
      np.testing.assert_allclose(state.hyperparams[key], value, rtol=1e-7)


def test_schedule_equals_plain_schedule_and_logs_applied_value():
  sched = schedules.warmup_cosine_decay_schedule(0.0, 0.2, 5, 40, end_value=0.01)
  opt = inject.inject_hyperparams(optim.sgd)(learning_rate=sched, momentum=0.5)
  harness.assert_matches_reference(
      opt, optim.sgd(sched, momentum=0.5), steps=50, variant=jax.jit)
  # After update k (count k before it), hyperparams holds the value it used.
  state = opt.init(GRADS)
  np.testing.assert_allclose(state.hyperparams['learning_rate'], sched(0))
  step = jax.jit(lambda s: opt.update(GRADS, s, GRADS)[1])
  at = jax.jit(sched)  # The schedule as the update sees it: an int32 count.
  for k in range(12):
    state = step(state)
    np.testing.assert_array_equal(
        state.hyperparams['learning_rate'], at(jnp.int32(k)),
        err_msg=f'update {k}')


def test_matches_optax_inject_hyperparams():
  sched = optax.exponential_decay(0.1, 10, 0.5)
  ours = inject.inject_hyperparams(optim.sgd)(learning_rate=sched, momentum=0.9)
  ref = optax.inject_hyperparams(optax.sgd)(learning_rate=sched, momentum=0.9)
  harness.assert_matches_reference(ours, ref, steps=50, variant=jax.jit)
  ours_state, ref_state = ours.init(GRADS), ref.init(GRADS)
  assert ours_state._fields == ref_state._fields
  chex.assert_trees_all_equal(ours_state.hyperparams, ref_state.hyperparams)


def test_changing_a_hyperparameter_does_not_recompile():
  opt = inject.inject_hyperparams(optim.sgd)(learning_rate=0.1)
  traces = []

  @jax.jit
  def step(state):
    traces.append(None)  # Runs only when jit traces (compiles) the step.
    return opt.update(GRADS, state, GRADS)

  state = opt.init(GRADS)
  for lr in (0.1, 0.05, 0.3, 1e-3):
    state = inject.set_hyperparams(state, learning_rate=lr)
    updates, state = step(state)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: -lr * g, GRADS),
                                rtol=1e-6)
    np.testing.assert_allclose(state.hyperparams['learning_rate'], lr, rtol=1e-7)
  # Optax's documented way, an array of the same dtype assigned in the dict.
  state.hyperparams['learning_rate'] = jnp.asarray(0.7, jnp.float32)
  updates, state = step(state)
  np.testing.assert_allclose(updates['b'], -0.7 * 3.0, rtol=1e-6)
  assert len(traces) == 1
  assert step._cache_size() == 1


def test_a_schedule_runs_without_recompiling_inside_scan():
  sched = schedules.exponential_decay(1.0, 1, 0.5)
  opt = inject.inject_hyperparams(optim.sgd)(learning_rate=sched)

  def body(state, _):
    updates, state = opt.update(GRADS, state, GRADS)
    return state, (updates['b'], state.hyperparams['learning_rate'])

  _, (steps, lrs) = jax.jit(lambda s: jax.lax.scan(body, s, None, length=4))(
      opt.init(GRADS))
  # lr = 0.5^k: 1, .5, .25, .125; the update is -lr * 3.
  np.testing.assert_allclose(lrs, [1, .5, .25, .125])
  np.testing.assert_allclose(steps, [-3, -1.5, -.75, -.375])
  harness.assert_state_stable_under_cond(opt)


def test_static_and_numeric_arguments():
  seen = []

  def factory(learning_rate, period, name, flag, fn, arr):
    seen.append((type(period), type(name), type(flag), fn))
    return optim.sgd(learning_rate)

  marker = lambda x: x  # noqa: E731  A callable that is not a schedule.
  opt = inject.inject_hyperparams(factory, static_args='fn')(
      0.1, 7, 'adam', True, marker, np.ones(2, np.float32))
  state = opt.init(GRADS)
  # Python int, str and bool stay static; floats and arrays are injected.
  assert sorted(state.hyperparams) == ['arr', 'learning_rate']
  assert state.hyperparams_states == {}
  opt.update(GRADS, state, GRADS)
  assert seen[-1] == (int, str, bool, marker)


def test_hyperparam_dtype():
  bf16 = jax.tree.map(lambda g: g.astype(jnp.bfloat16), GRADS)
  state = inject.inject_hyperparams(optim.sgd)(0.1).init(bf16)
  assert state.hyperparams['learning_rate'].dtype == jnp.bfloat16
  mixed = {'w': bf16['w'], 'b': GRADS['b']}  # The highest dtype wins.
  state = inject.inject_hyperparams(optim.sgd)(0.1).init(mixed)
  assert state.hyperparams['learning_rate'].dtype == jnp.float32
  opt = inject.inject_hyperparams(optim.sgd, hyperparam_dtype=jnp.bfloat16)(
      schedules.linear_schedule(0.1, 0.0, 10))
  state = opt.init(GRADS)
  _, state = opt.update(GRADS, state, GRADS)
  assert state.hyperparams['learning_rate'].dtype == jnp.bfloat16
  # A float32 schedule output is cast too: bfloat16 updates stay bfloat16.
  for lr in (0.1, schedules.linear_schedule(0.1, 0.0, 10)):
    harness.assert_dtypes_preserved(inject.inject_hyperparams(optim.sgd)(lr),
                                    jnp.bfloat16)


def test_stateful_schedule_reads_extra_args():
  class HalveWhenAbove:
    """lr = 0.1 * 0.5^(number of past values above 1)."""

    def init(self):
      return jnp.zeros([], jnp.int32)

    def update(self, state, value=None, **extra):
      return state + (jnp.asarray(value) > 1.0).astype(jnp.int32)

    def __call__(self, state, **extra):
      return 0.1 * 0.5**state

  opt = inject.inject_hyperparams(optim.sgd)(learning_rate=HalveWhenAbove())
  state = opt.init(GRADS)
  lrs = []
  for value in (2.0, 0.5, 3.0, 0.5):
    _, state = opt.update(GRADS, state, GRADS, value=value)
    lrs.append(float(state.hyperparams['learning_rate']))
  # Values used: before any value (0.1), after 2.0 (0.05), after 0.5 (0.05),
  # after 3.0 (0.025).
  np.testing.assert_allclose(lrs, [0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_inject_stateful_hyperparams_is_the_same_with_a_warning():
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    opt = inject.inject_stateful_hyperparams(optim.sgd)(learning_rate=0.1)
  assert any(issubclass(w.category, DeprecationWarning) for w in caught)
  updates, _ = opt.update(GRADS, opt.init(GRADS), GRADS)
  np.testing.assert_allclose(updates['b'], -0.3, rtol=1e-6)


def test_errors():
  with pytest.raises(ValueError, match=r"static_args=.*\['lr'\].*allowed"):
    inject.inject_hyperparams(optim.sgd, static_args='lr')
  state = inject.inject_hyperparams(optim.sgd)(
      learning_rate=schedules.constant_schedule(0.1), momentum=0.9).init(GRADS)
  with pytest.raises(ValueError, match="'learning_rate' is scheduled"):
    inject.set_hyperparams(state, learning_rate=0.2)
  with pytest.raises(ValueError, match="'nesterov' is not an injected"):
    inject.set_hyperparams(state, nesterov=True)
  with pytest.raises(ValueError, match=r'momentum has shape \(\)'):
    inject.set_hyperparams(state, momentum=np.ones(3))
