"""Shared checks for optimizer tests: equality with Optax and generic contracts.

The reference problem is a pytree of mixed shapes (scalar, vector, matrix and a
4-D conv kernel) under a strongly convex quadratic with a step-dependent linear
term, so that gradients depend on the params (a real trajectory) while rounding
differences are damped, not amplified:

    loss_t(p) = sum 0.5 * c * |p - target|^2 + Re(<noise_t, p>),  c in [0.5, 1.5].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

SHAPES = {'scalar': (), 'vector': (7,), 'matrix': (5, 3), 'conv': (3, 3, 2, 4)}

# Default tolerances: rtol as the issue asks; atol equal to rtol because the
# params are O(1) and an element passing near zero has no relative scale.
TOLERANCES = {
    jnp.dtype('float32'): 1e-6,
    jnp.dtype('complex64'): 1e-6,
    jnp.dtype('float64'): 1e-10,
    jnp.dtype('complex128'): 1e-10,
    jnp.dtype('bfloat16'): 1e-2,
}


def _draw(rng: np.random.Generator, shape, dtype, scale=1.0):
  dtype = jnp.dtype(dtype)
  x = rng.normal(size=shape) * scale
  if jnp.issubdtype(dtype, jnp.complexfloating):
    x = x + 1j * rng.normal(size=shape) * scale
  return jnp.asarray(x, dtype=dtype)


def _loss(params, target, curvature, noise, step):
  noise = jax.tree.map(lambda n: n[step], noise)
  quad = jax.tree.map(
      lambda p, t, c: jnp.sum(0.5 * c * jnp.abs(p - t) ** 2), params, target, curvature)
  lin = jax.tree.map(lambda p, n: jnp.sum(jnp.real(jnp.conj(n) * p)), params, noise)
  return sum(jax.tree.leaves(quad)) + sum(jax.tree.leaves(lin))


# One compiled gradient per dtype for every trajectory of the test session.
_value_and_grad = jax.jit(jax.value_and_grad(_loss))


@dataclasses.dataclass
class Problem:
  """A reference problem; ``loss(params, step)`` and ``grad(params, step)``."""

  params: Any
  target: Any
  curvature: Any
  noise: Any  # one tree per step, stacked on a leading axis

  def loss(self, params, step=0):
    return _loss(params, self.target, self.curvature, self.noise, step)

  def grad(self, params, step=0):
    return self.value_and_grad(params, step)[1]

  def value_and_grad(self, params, step=0):
    return _value_and_grad(params, self.target, self.curvature, self.noise, step)


def make_problem(dtype=jnp.float32, seed: int = 0, steps: int = 100) -> Problem:
  rng = np.random.default_rng(seed)
  real = jnp.real(jnp.zeros((), dtype)).dtype
  params = {k: _draw(rng, s, dtype) for k, s in SHAPES.items()}
  target = {k: _draw(rng, s, dtype, 0.5) for k, s in SHAPES.items()}
  curvature = {
      k: jnp.asarray(rng.uniform(0.5, 1.5, size=s), dtype=real)
      for k, s in SHAPES.items()
  }
  noise = {k: _draw(rng, (steps + 1,) + s, dtype, 0.1) for k, s in SHAPES.items()}
  return Problem(params, target, curvature, noise)


def no_jit(fn):
  return fn


@jax.jit
def _apply(params, updates):
  return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def run_trajectory(
    opt,
    problem: Problem,
    steps: int = 100,
    variant: Callable = no_jit,
    extra_args: bool = False,
):
  """Runs ``steps`` updates; returns the stacked params trajectory and the state.

  Only ``opt.update`` is under ``variant`` (jit or not); the gradient and the
  application of updates are always jitted, as they are shared machinery.
  With ``extra_args`` the update also gets ``value``, ``grad`` and
  ``value_fn`` (what Polyak SGD, line searches and plateau schedules read).
  """
  params = problem.params
  state = opt.init(params)
  value_and_grad = problem.value_and_grad
  if extra_args:
    def step_fn(grads, state, params, value, step):
      value_fn = lambda p: problem.loss(p, step)  # noqa: E731
      return opt.update(
          grads, state, params, value=value, grad=grads, value_fn=value_fn
      )
  else:
    def step_fn(grads, state, params, value, step):
      del value, step
      return opt.update(grads, state, params)
  step_fn = variant(step_fn)
  trajectory = []
  for t in range(steps):
    value, grads = value_and_grad(params, t)
    updates, state = step_fn(grads, state, params, value, jnp.asarray(t))
    params = _apply(params, updates)
    trajectory.append(params)
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(trajectory))
  return stacked, state


def assert_matches_reference(
    ours,
    reference,
    *,
    variant: Callable = no_jit,
    dtype=jnp.float32,
    steps: int = 100,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    extra_args: bool = False,
    seed: int = 0,
):
  """Asserts that ``ours`` and ``reference`` follow the same trajectory."""
  tol = TOLERANCES[jnp.dtype(dtype)]
  rtol = tol if rtol is None else rtol
  atol = rtol if atol is None else atol
  problem = make_problem(dtype, seed, steps)
  ours_traj, ours_state = run_trajectory(ours, problem, steps, variant, extra_args)
  ref_traj, _ = run_trajectory(reference, problem, steps, variant, extra_args)
  chex.assert_tree_all_finite(ours_traj)
  for key in ours_traj:
    a, b = ours_traj[key], ref_traj[key]
    bad = ~np.isclose(a, b, rtol=rtol, atol=atol)
    if bad.any():
      t = int(np.argwhere(bad)[0][0])
      raise AssertionError(
          f'trajectories differ first at step {t + 1} in leaf {key!r}: '
          f'max |ours - ref| = {np.max(np.abs(a[t] - b[t])):.3g} '
          f'(rtol={rtol}, atol={atol})'
      )
  # The run must move the params, or equality would prove nothing.
  moved = max(
      float(np.max(np.abs(np.asarray(problem.params[k]) - ours_traj[k][-1])))
      for k in ours_traj
  )
  assert moved > 10 * atol, (
      'the optimizer did not move the params; the comparison is vacuous'
  )
  return ours_state


def _tree_dtypes(tree):
  return jax.tree.map(lambda x: jnp.asarray(x).dtype, tree)


def _tree_shapes(tree):
  return jax.tree.map(lambda x: jnp.shape(x), tree)


def assert_dtypes_preserved(opt, dtype, extra_args: bool = False):
  """Updates keep the params' dtype; the state keeps its dtypes and shapes."""
  problem = make_problem(dtype, steps=3)
  params = problem.params
  state = opt.init(params)
  kwargs = {}
  if extra_args:
    kwargs = dict(
        value=problem.loss(params),
        grad=problem.grad(params),
        value_fn=problem.loss,
    )
  grads = problem.grad(params)
  updates, new_state = opt.update(grads, state, params, **kwargs)
  chex.assert_trees_all_equal_dtypes(updates, params)
  assert _tree_dtypes(new_state) == _tree_dtypes(state), (
      f'state dtypes changed by update: {_tree_dtypes(state)} -> '
      f'{_tree_dtypes(new_state)}'
  )
  assert _tree_shapes(new_state) == _tree_shapes(state)


def assert_state_stable_under_cond(opt, extra_args: bool = False):
  """``lax.cond(pred, update, identity)`` compiles: the state is a fixed point
  of structure, shape and dtype, as ``jit``, ``scan`` and ``cond`` need."""
  problem = make_problem(jnp.float32, steps=3)
  params = problem.params
  state = opt.init(params)

  @jax.jit
  def maybe_update(pred, grads, state, params):
    kwargs = {}
    if extra_args:
      kwargs = dict(value=problem.loss(params), grad=grads, value_fn=problem.loss)
    return jax.lax.cond(
        pred,
        lambda: opt.update(grads, state, params, **kwargs),
        lambda: (grads, state),
    )

  grads = problem.grad(params)
  for pred in (True, False):
    updates, new_state = maybe_update(pred, grads, state, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
    chex.assert_tree_all_finite(updates)


def assert_accepts_unknown_kwargs(opt):
  problem = make_problem(jnp.float32, steps=3)
  params = problem.params
  state = opt.init(params)
  grads = problem.grad(params)
  updates, _ = opt.update(
      grads, state, params, some_unknown_argument=1.0, value=problem.loss(params),
      grad=grads, value_fn=problem.loss,
  )
  chex.assert_tree_all_finite(updates)


def quadratic(p):
  """f(x) = 0.1 x1^2 + 2 x2^2, minimum 0 at the origin."""
  return 0.1 * p[0] ** 2 + 2.0 * p[1] ** 2


def rosenbrock(p):
  """f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1)."""
  return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def minimize(opt, fn, x0, steps: int, extra_args: bool = False):
  """Runs ``opt`` on ``fn`` from ``x0`` under jit with lax.scan; final loss."""
  x0 = jnp.asarray(x0, jnp.float32)

  def body(carry, _):
    x, state = carry
    value, grads = jax.value_and_grad(fn)(x)
    kwargs = dict(value=value, grad=grads, value_fn=fn) if extra_args else {}
    updates, state = opt.update(grads, state, x, **kwargs)
    return (x + updates, state), value

  (x, _), _ = jax.jit(
      lambda x: jax.lax.scan(body, (x, opt.init(x)), None, length=steps)
  )(x0)
  return float(fn(x)), x


def _row_id(name, kwargs):
  args = '-'.join(f'{k}={getattr(v, "__name__", v)}' for k, v in kwargs.items())
  return f'{name}-{args}' if args else name


def _decayed_learning_rate(count):
  return 0.1 * 0.97**count


def alias_suite(
    rows,
    *,
    ours_module,
    reference_module=None,
    complex_names=(),
    extra_args_names=(),
    tolerances=None,
    schedule_names=None,
):
  """Builds the standard test suite for a table of optimizers.

  Args:
    rows: ``(name, kwargs)`` pairs; ours ``ours_module.<name>(**kwargs)`` is
      compared with ``optax.<name>(**kwargs)``.
    ours_module: where our factories live (``research.optim``).
    reference_module: where the reference factories live (default: optax).
      For a transformation that is not an optimizer by itself, pass two
      namespaces whose factories wrap it the same way, e.g. in
      ``chain(t, scale(-0.1))``.
    complex_names: names whose optax version supports complex params.
    extra_args_names: names whose update needs ``value``/``grad``/``value_fn``.
    tolerances: optional ``{name: {dtype_name: rtol}}`` overrides; each must be
      justified where the table is written.
    schedule_names: names that take ``learning_rate`` and so are also run with
      a schedule as the learning rate (default: every row with that kwarg).

  Returns:
    A dict of test objects to merge into a test module's globals:
    ``globals().update(harness.alias_suite(...))``.
  """
  import optax  # The reference: imported by tests only.
  import pytest
  from absl.testing import parameterized

  reference_module = reference_module or optax
  tolerances = tolerances or {}
  ids = [_row_id(n, kw) for n, kw in rows]

  def both(name, kwargs):
    return (getattr(ours_module, name)(**kwargs),
            getattr(reference_module, name)(**kwargs))

  def rtol_for(name, dtype):
    return tolerances.get(name, {}).get(jnp.dtype(dtype).name)

  def check(name, kwargs, variant, dtype):
    ours, ref = both(name, kwargs)
    assert_matches_reference(
        ours, ref, variant=variant, dtype=dtype, rtol=rtol_for(name, dtype),
        extra_args=name in extra_args_names,
    )

  named = [(i, n, kw) for i, (n, kw) in zip(ids, rows)]
  sched_rows = [
      (i, n, kw) for i, n, kw in named
      if 'learning_rate' in kw and (schedule_names is None or n in schedule_names)
  ]

  class EqualsOptaxTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*named)
    def test_float32(self, name, kwargs):
      check(name, kwargs, self.variant, jnp.float32)

    @parameterized.named_parameters(*named)
    def test_float64(self, name, kwargs):
      with jax.enable_x64(True):
        check(name, kwargs, jax.jit, jnp.float64)

    if sched_rows:  # absl needs at least one parameter set.
      @parameterized.named_parameters(*sched_rows)
      def test_schedule_as_learning_rate(self, name, kwargs):
        check(name, dict(kwargs, learning_rate=_decayed_learning_rate), jax.jit,
              jnp.float32)

  complex_rows = [(n, kw) for n, kw in rows if n in complex_names]
  complex_ids = [_row_id(n, kw) for n, kw in complex_rows]

  @pytest.mark.parametrize('name,kwargs', complex_rows, ids=complex_ids)
  def test_complex64(name, kwargs):
    check(name, kwargs, jax.jit, jnp.complex64)

  def make(name, kwargs):
    return getattr(ours_module, name)(**kwargs)

  @pytest.mark.parametrize('name,kwargs', rows, ids=ids)
  @pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32], ids=['bf16', 'f32'])
  def test_dtype_preserved(name, kwargs, dtype):
    assert_dtypes_preserved(make(name, kwargs), dtype, name in extra_args_names)

  @pytest.mark.parametrize('name,kwargs', rows, ids=ids)
  def test_state_stable_under_cond(name, kwargs):
    assert_state_stable_under_cond(make(name, kwargs), name in extra_args_names)

  @pytest.mark.parametrize('name,kwargs', rows, ids=ids)
  def test_accepts_unknown_kwargs(name, kwargs):
    assert_accepts_unknown_kwargs(make(name, kwargs))

  tests = dict(
      EqualsOptaxTest=EqualsOptaxTest,
      test_dtype_preserved=test_dtype_preserved,
      test_state_stable_under_cond=test_state_stable_under_cond,
      test_accepts_unknown_kwargs=test_accepts_unknown_kwargs,
  )
  if complex_rows:
    tests['test_complex64'] = test_complex64
  return tests


def convergence_suite(rows, *, ours_module, extra_args_names=()):
  """``rows``: ``(name, quad_kwargs, quad_steps, quad_tol, rosen_kwargs,
  rosen_steps, rosen_tol)``. The quadratic f = 0.1 x1^2 + 2 x2^2 starts at
  (-5, -2); Rosenbrock at (-1.5, 2). Asserts each final loss is below its tol.
  """
  import pytest

  @pytest.mark.parametrize(
      'name,qkw,qsteps,qtol,rkw,rsteps,rtol', rows, ids=[r[0] for r in rows]
  )
  def test_converges(name, qkw, qsteps, qtol, rkw, rsteps, rtol):
    extra = name in extra_args_names
    factory = getattr(ours_module, name)
    loss, _ = minimize(factory(**qkw), quadratic, [-5.0, -2.0], qsteps, extra)
    assert loss < qtol, f'{name} on the quadratic: final loss {loss:.3g} >= {qtol}'
    loss, _ = minimize(factory(**rkw), rosenbrock, [-1.5, 2.0], rsteps, extra)
    assert loss < rtol, f'{name} on Rosenbrock: final loss {loss:.3g} >= {rtol}'

  return dict(test_converges=test_converges)
