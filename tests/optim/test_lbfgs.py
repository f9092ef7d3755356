"""L-BFGS and the line searches against Optax.

The line searches are run on the direction ``-g``: ``chain(scale(-1), ls)``
on both sides. Every update gets ``value``, ``grad`` and ``value_fn``.

Why not ``harness.alias_suite``: the harness builds a fresh ``value_fn``
closure at every step, so without jit each step re-traces and re-compiles the
line search's ``while_loop`` (about 1.5 s of CPU per step and library; a
100-step run of one row takes 5 minutes). The same checks are made here
with the harness's own assertions, choosing the cases: every comparison runs
under jit for the harness's 100 steps, and the without-jit runs take 2 steps
(the second is the first with a stored pair). Equality holds at the
harness's default tolerances (rtol 1e-6 in float32 and complex64, 1e-10 in
float64): the line searches take every branch as Optax's do.
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


def _namespace(lib):
  return types.SimpleNamespace(
      lbfgs=lib.lbfgs,
      # The zoom search with every option away from lbfgs's defaults.
      lbfgs_keep=lambda **kw: lib.lbfgs(
          linesearch=lib.scale_by_zoom_linesearch(
              max_linesearch_steps=10, initial_guess_strategy='keep',
              max_learning_rate=2.0, curv_rtol=0.5, approx_dec_rtol=None,
          ),
          **kw,
      ),
      backtracking=lambda **kw: lib.chain(
          lib.scale(-1.0), lib.scale_by_backtracking_linesearch(**kw)
      ),
  )


OURS, REFERENCE = _namespace(optim), _namespace(optax)
_BACKTRACKING = dict(
    max_backtracking_steps=15, decrease_factor=0.5, increase_factor=2.0,
    store_grad=True,
)
_NO_LINESEARCH = dict(learning_rate=0.5, memory_size=3, linesearch=None)


def _decayed_learning_rate(count):
  return 0.5 * 0.97**count


# (name, kwargs, dtype, variant, steps)
CASES = [
    ('lbfgs', dict(), jnp.float32, jax.jit, 100),
    ('lbfgs', dict(), jnp.complex64, jax.jit, 100),
    ('lbfgs_keep', dict(memory_size=4, scale_init_precond=False), jnp.float64,
     jax.jit, 100),
    ('lbfgs', _NO_LINESEARCH, jnp.float32, jax.jit, 100),
    ('lbfgs', _NO_LINESEARCH, jnp.float32, harness.no_jit, 2),
    ('lbfgs', dict(_NO_LINESEARCH, learning_rate=_decayed_learning_rate),
     jnp.float32, jax.jit, 100),
    ('backtracking', _BACKTRACKING, jnp.float32, jax.jit, 100),
    ('backtracking', _BACKTRACKING, jnp.complex64, jax.jit, 100),
    ('backtracking', _BACKTRACKING, jnp.float32, harness.no_jit, 2),
    ('backtracking', dict(max_backtracking_steps=15), jnp.float64, jax.jit, 100),
]


def _case_id(case):
  name, kwargs, dtype, variant, steps = case
  args = [f'{k}={getattr(v, "__name__", v)}' for k, v in kwargs.items()]
  return '-'.join([name, *args, jnp.dtype(dtype).name, variant.__name__,
                   f'{steps}steps'])


@pytest.mark.parametrize('case', CASES, ids=[_case_id(c) for c in CASES])
def test_matches_optax(case):
  name, kwargs, dtype, variant, steps = case
  with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
    harness.assert_matches_reference(
        getattr(OURS, name)(**kwargs), getattr(REFERENCE, name)(**kwargs),
        variant=variant, dtype=dtype, steps=steps, extra_args=True,
    )


@pytest.mark.parametrize('name,kwargs', [
    ('lbfgs', dict()), ('backtracking', _BACKTRACKING),
])
def test_bf16_dtypes_preserved(name, kwargs):
  harness.assert_dtypes_preserved(
      getattr(OURS, name)(**kwargs), jnp.bfloat16, extra_args=True
  )


def test_state_stable_under_cond():
  harness.assert_state_stable_under_cond(optim.lbfgs(), extra_args=True)


def test_accepts_unknown_kwargs():
  # Optax raises TypeError on a keyword value_fn does not take; in a chain
  # every transform sees every extra argument, so ours ignores it.
  harness.assert_accepts_unknown_kwargs(optim.lbfgs())


def test_passes_matching_kwargs_to_value_fn():
  def loss(w, scale):
    return scale * jnp.sum(w**2)

  opt = optim.chain(optim.scale(-1.0), optim.scale_by_backtracking_linesearch(5))
  w = jnp.array([1.0, -2.0])
  value, grad = jax.value_and_grad(loss)(w, 3.0)
  _, state = opt.update(
      grad, opt.init(w), w, value=value, grad=grad, value_fn=loss, scale=3.0,
      unrelated=1.0,
  )
  ls_state = state[1]
  new_w = w - ls_state.learning_rate * grad
  np.testing.assert_allclose(ls_state.value, loss(new_w, 3.0), rtol=1e-6)


CONVERGENCE = [
    ('lbfgs', dict(), 20, 1e-10, dict(), 100, 1e-10),
]
globals().update(
    harness.convergence_suite(
        CONVERGENCE, ours_module=optim, extra_args_names={'lbfgs'}
    )
)


def test_value_and_grad_from_state():
  # After a step, the state's value and grad are those of the new params, so
  # value_and_grad_from_state must agree with jax.value_and_grad there.
  fn = lambda w: jnp.sum((w - 1.0) ** 2 * jnp.arange(1.0, 4.0))  # noqa: E731
  opt = optim.lbfgs(linesearch=optim.scale_by_backtracking_linesearch(
      10, store_grad=True))
  value_and_grad = optim.value_and_grad_from_state(fn)
  w = jnp.zeros(3)
  state = opt.init(w)
  for _ in range(5):
    value, grad = value_and_grad(w, state=state)
    chex.assert_trees_all_close(
        (value, grad), jax.value_and_grad(fn)(w), rtol=1e-6
    )
    updates, state = opt.update(
        grad, state, w, value=value, grad=grad, value_fn=fn
    )
    w = w + updates
  assert float(fn(w)) < 1e-2 * float(fn(jnp.zeros(3)))


def test_value_and_grad_from_state_needs_a_stored_grad():
  fn = lambda w: jnp.sum(w**2)  # noqa: E731
  opt = optim.lbfgs(linesearch=optim.scale_by_backtracking_linesearch(10))
  w = jnp.ones(2)
  with pytest.raises(ValueError, match='grad'):
    optim.value_and_grad_from_state(fn)(w, state=opt.init(w))


def test_first_step_has_length_at_most_one():
  # gamma_0 = min(1, 1 / ||g||): the first direction is g / ||g|| for a
  # large gradient.
  opt = optim.scale_by_lbfgs()
  g = {'a': jnp.array([30.0, 40.0])}
  direction, _ = opt.update(g, opt.init(g), g)
  np.testing.assert_allclose(direction['a'], [0.6, 0.8], rtol=1e-6)


def test_lbfgs_is_exact_on_a_quadratic_after_one_pair():
  # In 1-D, one (s, y) pair determines the Hessian h: P = 1 / h exactly.
  h = 4.0
  opt = optim.scale_by_lbfgs(memory_size=2)
  w0, w1 = jnp.array([1.0]), jnp.array([0.5])
  state = opt.init(w0)
  _, state = opt.update(h * w0, state, w0)
  direction, _ = opt.update(h * w1, state, w1)
  np.testing.assert_allclose(direction, w1, rtol=1e-6)


@pytest.mark.parametrize('factory,kwargs,match', [
    (optim.scale_by_lbfgs, dict(memory_size=0), 'memory_size=0'),
    (optim.lbfgs, dict(memory_size=0), 'memory_size=0'),
    (optim.lbfgs, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (optim.scale_by_zoom_linesearch, dict(max_linesearch_steps=0),
     'max_linesearch_steps=0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, max_learning_rate=0.0), 'max_learning_rate=0.0'),
    (optim.scale_by_zoom_linesearch, dict(max_linesearch_steps=5, tol=-1.0),
     'tol=-1.0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, increase_factor=1.0), 'increase_factor=1.0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, slope_rtol=1.0), 'slope_rtol=1.0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, curv_rtol=1.5), 'curv_rtol=1.5'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, approx_dec_rtol=-1.0), 'approx_dec_rtol=-1.0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, stepsize_precision=-1.0),
     'stepsize_precision=-1.0'),
    (optim.scale_by_zoom_linesearch,
     dict(max_linesearch_steps=5, initial_guess_strategy='two'),
     "initial_guess_strategy='two'"),
    (optim.scale_by_backtracking_linesearch, dict(max_backtracking_steps=-1),
     'max_backtracking_steps=-1'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, decrease_factor=1.0), 'decrease_factor=1.0'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, increase_factor=0.5), 'increase_factor=0.5'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, slope_rtol=-0.1), 'slope_rtol=-0.1'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, max_learning_rate=0.0),
     'max_learning_rate=0.0'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, atol=-1.0), 'atol=-1.0'),
    (optim.scale_by_backtracking_linesearch,
     dict(max_backtracking_steps=5, rtol=-1.0), 'rtol=-1.0'),
])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


@pytest.mark.parametrize('make', [
    optim.scale_by_lbfgs,
    lambda: optim.scale_by_zoom_linesearch(5),
    lambda: optim.scale_by_backtracking_linesearch(5),
])
def test_needs_params(make):
  opt = make()
  w = jnp.ones(2)
  fn = lambda w: jnp.sum(w**2)  # noqa: E731
  with pytest.raises(ValueError, match='needs the current params'):
    opt.update(w, opt.init(w), value=fn(w), grad=w, value_fn=fn)
