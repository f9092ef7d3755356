"""Optax's namespaces and the top-level names added with them, against Optax.

Every public name of ``optax.transforms``, ``optax.microbatching``,
``optax.experimental`` (and ``aggregating``) and every top-level name outside
the groups other modules provide (losses, contrib, projections, ...) resolves
in ``research.optim``; each new transformation, optimizer and function gives
Optax's result on the same input. Also: ``nu_dtype`` on the Adam family, and
the type check of every alias's numeric hyperparameters.
"""

import inspect
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.experimental import aggregating as ref_agg
import optax.microbatching
import pytest

from research import optim
from research.optim import experimental
from research.optim import microbatching
from research.optim import transforms
from research.optim.experimental import aggregating
from tests.optim import harness

STEPS = 12  # Enough to exercise the state; the harness rtol is 1e-6.


def _public(module):
  return [n for n in dir(module) if not n.startswith('_') and not inspect.ismodule(
      getattr(module, n))]


# Groups other modules provide: names of these submodules, at top level too.
OTHER_GROUPS = ('contrib', 'losses', 'projections', 'second_order',
                'perturbations', 'assignment')


@pytest.mark.parametrize('ours,ref', [
    (transforms, optax.transforms),
    (microbatching, optax.microbatching),
    (experimental, optax.experimental),
    (aggregating, ref_agg),
], ids=['transforms', 'microbatching', 'experimental', 'aggregating'])
def test_every_public_name_resolves(ours, ref):
  names = [n for n in dir(ref) if not n.startswith('_')]
  names = [n for n in names if n not in ('math', 'jax', 'jnp', 'base', 'tree',
                                         'utils', 'NamedTuple', 'Protocol',
                                         'Any', 'Sequence')]
  missing = [n for n in names if not hasattr(ours, n)]
  assert not missing, missing
  if ref is optax.transforms:
    assert len(names) == 46


def test_every_top_level_name_resolves():
  others = set(OTHER_GROUPS)
  for group in OTHER_GROUPS:
    others |= set(dir(getattr(optax, group)))
  names = [n for n in dir(optax) if not n.startswith('_') and n not in others]
  missing = [n for n in names if not hasattr(optim, n)]
  assert not missing, missing
  for name in ('microbatching', 'experimental', 'transforms', 'tree_utils',
               'tree', 'linear_algebra'):
    assert inspect.ismodule(getattr(optim, name)), name
  assert optim.ScaleState is optim.EmptyState
  assert optim.ScaleByTrustRatioState is optim.EmptyState


# ---------------------------------------------------------------------------
# New transformations and optimizers in the equality harness.
# ---------------------------------------------------------------------------


def _snapshot_chain(m):
  return m.chain(m.sgd(0.1, momentum=0.9), m.snapshot('norm', m.tree.norm),
                 m.clip_by_global_norm(0.5))


def _monitor_chain(m):
  return m.chain(
      m.sgd(0.1, momentum=0.9),
      m.monitor({
          'norm': m.tree.norm,
          'clipped_ema': m.measure_with_ema(lambda u: m.tree.norm(u) > 0.5, 0.9),
          'max_ema': m.measure_with_ema(m.tree.max, 0.8, debias=False,
                                        accumulator_dtype=jnp.float32),
      }),
      m.clip_by_global_norm(0.5),
  )


def _dog(m):
  return m.chain(m.scale_by_distance_over_gradients(reps_rel=1e-2),
                 m.scale_by_learning_rate(1.0))


def _optimistic_adam(m):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    return m.optimistic_adam(0.05, optimism=0.02)


ROWS = {
    'snapshot': (_snapshot_chain, 'norm'),
    'monitor': (_monitor_chain, 'measurements'),
    'optimistic_adam': (_optimistic_adam, 'mu'),
}


def _run_both(ours, ref):
  """The harness's trajectories of both (jitted updates), compared at its
  float32 tolerance; returns both final states."""
  problem = harness.make_problem(steps=STEPS)
  traj, state = harness.run_trajectory(ours, problem, STEPS, jax.jit)
  ref_traj, ref_state = harness.run_trajectory(ref, problem, STEPS, jax.jit)
  tol = harness.TOLERANCES[jnp.dtype(jnp.float32)]
  chex.assert_trees_all_close(traj, ref_traj, rtol=tol, atol=tol)
  moved = jax.tree.map(lambda t, p: np.max(np.abs(t[-1] - p)), traj, problem.params)
  assert max(jax.tree.leaves(moved)) > 10 * tol  # Not a vacuous comparison.
  return state, ref_state


@pytest.mark.parametrize('name', list(ROWS))
def test_equals_optax_in_the_harness(name):
  build, field = ROWS[name]
  state, ref_state = _run_both(build(optim), build(optax))
  chex.assert_trees_all_close(optim.tree.get(state, field),
                              optax.tree.get(ref_state, field), rtol=1e-6)


def test_scale_by_distance_over_gradients():
  # Not in the harness: its per-leaf scalars have shape (1,), so (as in
  # Optax) a scalar param would become a (1,) one and recompile every step.
  params = {'a': jnp.array([1.0, -2.0, 0.5]), 'b': jnp.array([[0.3, 0.1], [2.0, -1.0]])}
  def run(m):
    opt = _dog(m)
    update = jax.jit(opt.update)
    p, state, out = params, opt.init(params), []
    for t in range(8):
      grads = jax.tree.map(lambda x: 2.0 * x + 0.1 * t, p)
      updates, state = update(grads, state, p)
      p = jax.tree.map(jnp.add, p, updates)
      out.append(p)
    return out, state
  (ours, state), (ref, ref_state) = run(optim), run(optax)
  chex.assert_trees_all_close(ours, ref, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(optim.tree.get(state, 'max_dist'),
                              optax.tree.get(ref_state, 'max_dist'), rtol=1e-6)
  assert float(jnp.abs(ours[-1]['a'] - params['a']).max()) > 1e-3


def test_optimistic_adam_warns_and_rejects_a_schedule_as_optax_does():
  with pytest.warns(DeprecationWarning, match='optimistic_adam_v2'):
    optim.optimistic_adam(0.1)
  with pytest.raises(ValueError, match='schedule'), warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    optim.optimistic_adam(lambda c: 0.1)


def test_monitor_state_starts_empty_and_snapshot_starts_with_the_params():
  params = {'a': jnp.ones(3)}
  assert optim.monitor({'n': optim.tree.norm}).init(params).measurements == {}
  state = optim.snapshot('n', optim.tree.norm).init(params)
  assert isinstance(state, optim.SnapshotState)
  np.testing.assert_allclose(state.measurement['n'], np.sqrt(3.0), rtol=1e-6)


# ---------------------------------------------------------------------------
# Functions: per-example clipping, linear algebra, misc.
# ---------------------------------------------------------------------------

PER_EXAMPLE = {'w': jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 2)),
                                jnp.float32),
               'b': jnp.asarray([[0.0, 0.0], [3.0, 4.0], [0.1, 0.2], [9.0, 0.0]])}


def _assert_same(ours, ref):
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  chex.assert_trees_all_close(ours, ref, rtol=1e-6, atol=1e-6)


# Functions are compared under jit: one compilation each instead of one per
# eager operation.
def _clips(m, clip):
  return (m.per_example_global_norm_clip(PER_EXAMPLE, clip),
          m.per_example_layer_norm_clip(PER_EXAMPLE, clip, True),
          m.per_example_layer_norm_clip(PER_EXAMPLE, clip, False))


def test_per_example_clipping():
  ours, ref = jax.jit(lambda c: _clips(optim, c)), jax.jit(lambda c: _clips(optax, c))
  for clip in (0.0, 1.5, jnp.inf):
    _assert_same(ours(clip), ref(clip))


def test_per_example_clip_needs_a_batch_axis():
  with pytest.raises(ValueError, match='batch size on axis 0'):
    optim.per_example_global_norm_clip({'a': jnp.ones(3), 'b': jnp.ones((2, 3))}, 1.0)


SPD = (lambda a: a @ a.T + 0.5 * np.eye(4))(
    np.random.default_rng(1).normal(size=(4, 4))).astype(np.float32)


def _power_iterations(m):
  v0 = {'x': jnp.ones(2), 'y': jnp.ones(2)}
  mvp = lambda v: {'x': SPD[:2, :2] @ v['x'], 'y': 2.0 * v['y']}  # noqa: E731
  return (m.power_iteration(jnp.asarray(SPD)),
          m.power_iteration(jnp.asarray(SPD), key=jax.random.PRNGKey(3),
                            num_iters=5),
          m.power_iteration(mvp, v0=v0))


def test_power_iteration():
  _assert_same(jax.jit(lambda: _power_iterations(optim))(),
               jax.jit(lambda: _power_iterations(optax))())
  mvp = lambda v: v  # noqa: E731
  with pytest.raises(ValueError, match='v0 must be given'):
    optim.power_iteration(mvp)


def test_matrix_inverse_pth_root():
  p = 4
  ours, err = jax.jit(lambda a: optim.matrix_inverse_pth_root(a, p))(SPD)
  ref, ref_err = jax.jit(lambda a: optax.matrix_inverse_pth_root(a, p))(SPD)
  chex.assert_trees_all_close(ours, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(err, ref_err, rtol=1e-4, atol=1e-6)
  # And it is an inverse p-th root.
  np.testing.assert_allclose(np.linalg.matrix_power(np.asarray(ours, np.float64), p)
                             @ SPD, np.eye(4), atol=1e-3)


def test_matrix_inverse_pth_root_of_a_scalar_matrix():
  one = jnp.array([[4.0]])
  _assert_same(jax.jit(lambda a: optim.matrix_inverse_pth_root(a, 2))(one),
               jax.jit(lambda a: optax.matrix_inverse_pth_root(a, 2))(one))


def test_nnls():
  a = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float32)
  for b in (jnp.arange(6.0) - 2.0, jnp.ones((6, 2))):
    ours = jax.jit(lambda a, b: optim.nnls(a, b, 50))(a, b)
    _assert_same(ours, jax.jit(lambda a, b: optax.nnls(a, b, 50))(a, b))
    assert float(jnp.min(ours)) >= 0.0
  with pytest.raises(ValueError, match=r'A must be \(M, N\)'):
    optim.nnls(a, jnp.ones(5), 10)


def _normal(m):
  dist = m.multi_normal(jnp.array([0.5, -1.0]), jnp.array([0.1, -0.3]))
  x = jnp.array([[0.2, 0.3], [1.0, -1.0]])
  return (dist.sample((3,), jax.random.key(0)), dist.log_prob(x), dist.params,
          dist.log_scale)


def test_multi_normal():
  _assert_same(jax.jit(lambda: _normal(optim))(), jax.jit(lambda: _normal(optax))())


@pytest.mark.parametrize('scale', [0.0, 1.0, -0.5])
def test_scale_gradient(scale):
  def f(scaler, x):
    return jnp.sum(scaler({'a': x, 'b': 2 * x}, scale)['b'] ** 2)
  x = jnp.array([1.0, -2.0])
  ours = jax.jit(jax.grad(lambda x: f(optim.scale_gradient, x)))(x)
  ref = jax.jit(jax.grad(lambda x: f(optax.scale_gradient, x)))(x)
  _assert_same(ours, ref)
  assert float(f(optim.scale_gradient, x)) == 20.0  # Identity forward.


def test_top_level_moment_names_are_the_tree_ones():
  assert optim.update_moment is optim.tree.update_moment
  assert optim.update_infinity_moment is optim.tree.update_infinity_moment
  assert optim.update_moment_per_elem_norm is optim.tree.update_moment_per_elem_norm
  assert optim.tree_map_params is optim.tree.map_params


# ---------------------------------------------------------------------------
# Microbatching.
# ---------------------------------------------------------------------------

BATCH = jnp.arange(24.0).reshape(8, 3) / 10.0


def _fun(x, scale=1.0):
  return {'rows': x * scale + 1.0, 'total': jnp.sum(x) * scale}


AT = (optim.microbatching.AccumulationType, optax.microbatching.AccumulationType)


def _fun3(x, scale=1.0):
  out = _fun(x, scale)
  return dict(out, mean=out['total'], running=out['total'])


def test_microbatch():
  def build(m, at):
    accumulator = {'rows': at.CONCAT, 'total': at.SUM, 'mean': at.MEAN,
                   'running': at.RUNNING_MEAN}
    return m.microbatch(_fun3, argnums=0, microbatch_size=2,
                        accumulator=accumulator, argnames='scale', in_axes=(0, 0))
  scale = jnp.linspace(0.5, 1.5, 8)[:, None]
  _assert_same(jax.jit(build(optim, AT[0]))(BATCH, scale=scale),
               jax.jit(build(optax, AT[1]))(BATCH, scale=scale))


def test_microbatch_early_stop_and_errors():
  ours = optim.microbatch(_fun, 0, 2, AT[0].SUM, num_real_microbatches=2)
  ref = optax.microbatch(_fun, 0, 2, AT[1].SUM, num_real_microbatches=2)
  _assert_same(ours(BATCH), ref(BATCH))
  assert optim.microbatch(_fun, 0, None) is _fun
  with pytest.raises(ValueError, match='divisible'):
    optim.microbatch(_fun, 0, 3)(BATCH)
  with pytest.raises(ValueError, match='floating-point'):
    optim.microbatch(jnp.sum, 0, 2, AT[0].MEAN)(jnp.arange(8))


def test_reshape_batch_axis_and_micro_vmap():
  _assert_same(optim.microbatching.reshape_batch_axis(BATCH, 4, 0),
               optax.microbatching.reshape_batch_axis(BATCH, 4, 0))
  f = lambda x, y: jnp.sum(x) * y  # noqa: E731
  for kwargs in (dict(), dict(microbatch_size=4, accumulator='MEAN')):
    ours_kw, ref_kw = dict(kwargs), dict(kwargs)
    if 'accumulator' in kwargs:
      ours_kw['accumulator'] = AT[0].MEAN
      ref_kw['accumulator'] = AT[1].MEAN
    ours = optim.microbatching.micro_vmap(f, in_axes=(0, None), **ours_kw)
    ref = optax.microbatching.micro_vmap(f, in_axes=(0, None), **ref_kw)
    _assert_same(ours(BATCH, 2.0), ref(BATCH, 2.0))
  with pytest.raises(ValueError, match=r'out_axes=1 is invalid; allowed: 0'):
    optim.microbatching.micro_vmap(f, out_axes=1)


def test_micro_grad():
  def loss(params, x, y):
    return 0.5 * jnp.mean((x @ params - y) ** 2)
  params = jnp.array([0.3, -0.2, 0.1])
  y = jnp.arange(8.0)
  def build(m, at):
    return m.microbatching.micro_grad(
        loss, batch_argnums=(1, 2), accumulator=at.MEAN, microbatch_size=4,
        transform_fn=lambda g: (g, g**2), metrics_fn=jnp.linalg.norm)
  (g, g2), aux = jax.jit(build(optim, AT[0]))(params, BATCH, y)
  (rg, rg2), raux = jax.jit(build(optax, AT[1]))(params, BATCH, y)
  _assert_same((g, g2, aux.values, aux.metrics), (rg, rg2, raux.values, raux.metrics))
  # The mean per-example gradient is the batch gradient.
  chex.assert_trees_all_close(g, jax.grad(loss)(params, BATCH, y), rtol=1e-5)


# ---------------------------------------------------------------------------
# experimental.aggregating: per-example gradients through process().
# ---------------------------------------------------------------------------


def _per_example_run(opt, steps=4, microbatches=1):
  rng = np.random.default_rng(5)
  xs = jnp.asarray(rng.normal(size=(steps, 6, 3)), jnp.float32)
  ys = jnp.asarray(rng.normal(size=(steps, 6, 2)), jnp.float32)
  params = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
  fun = lambda w, x, y: jnp.sum((x @ w - y) ** 2)  # noqa: E731
  grads_fn = jax.jit(jax.vmap(jax.grad(fun), (None, 0, 0)))
  state = opt.init(params)
  update = jax.jit(opt.update)
  out = []
  for x, y in zip(xs, ys):
    for xm, ym in zip(jnp.split(x, microbatches), jnp.split(y, microbatches)):
      updates, state = update(grads_fn(params, xm, ym), state, params)
      params = params + updates
      out.append(params)
  return out, state


def _aggregation_rows(m, agg):
  return {
      'process_clip_average_adam': agg.process(
          m.stateless(lambda gs, _: jax.tree.map(
              lambda g: jnp.clip(g, -1.0, 1.0), gs)),
          agg.average_per_element_updates(0),
          m.adam(0.1)),
      'average_incrementally': agg.process(
          m.identity(), agg.average_incrementally_updates(0, 2), m.sgd(0.05)),
      'mean_variance': agg.add_mean_variance_to_opt(m.sgd(0.05), 0.8, 0, 2),
      'mean_variance_one_step': agg.add_mean_variance_to_opt(m.sgd(0.05), 0.8),
  }


@pytest.mark.parametrize('name', list(_aggregation_rows(optax, ref_agg)))
def test_aggregating_equals_optax(name):
  microbatches = 2 if name in ('average_incrementally', 'mean_variance') else 1
  ours, state = _per_example_run(_aggregation_rows(optim, aggregating)[name],
                                 microbatches=microbatches)
  ref, ref_state = _per_example_run(_aggregation_rows(optax, ref_agg)[name],
                                    microbatches=microbatches)
  chex.assert_trees_all_close(ours, ref, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(ours[-1] - ours[0]))) > 1e-3  # It moved.
  if name.startswith('mean_variance'):
    _assert_same(aggregating.get_unbiased_mean_and_variance_ema(state),
                 ref_agg.get_unbiased_mean_and_variance_ema(ref_state))


def test_aggregating_helpers():
  per_elt = {'a': jnp.ones((4, 2, 3)), 'b': jnp.ones((4, 2))}
  assert aggregating.get_batch_size_from_per_elt_updates(per_elt, 0) == 4
  assert aggregating.get_batch_size_from_per_elt_updates(per_elt, (0, 1)) == 8
  with pytest.raises(ValueError, match='same batch size'):
    aggregating.get_batch_size_from_per_elt_updates({'a': jnp.ones((4, 1)),
                                                     'b': jnp.ones((3, 1))}, 0)
  with pytest.raises(ValueError, match='accumulation_steps'):
    aggregating.accumulate_avg_updates(0)
  with pytest.raises(ValueError, match='PerElementMeanAndVarianceEMAState'):
    aggregating.get_unbiased_mean_and_variance_ema(optim.sgd(0.1).init(per_elt))


# ---------------------------------------------------------------------------
# nu_dtype on the Adam family (not in Optax).
# ---------------------------------------------------------------------------

NU_FAMILY = [
    ('adam', dict(learning_rate=0.1)),
    ('adamw', dict(learning_rate=0.1, weight_decay=0.1)),
    ('nadam', dict(learning_rate=0.1)),
    ('nadamw', dict(learning_rate=0.1)),
    ('amsgrad', dict(learning_rate=0.1)),
    ('optimistic_adam_v2', dict(learning_rate=0.01)),
]


@pytest.mark.parametrize('name,kwargs', NU_FAMILY, ids=[n for n, _ in NU_FAMILY])
def test_nu_dtype_reaches_the_state(name, kwargs):
  params = harness.make_problem(steps=1).params
  for nu_dtype, expected in ((None, jnp.float32), (jnp.bfloat16, jnp.bfloat16)):
    state = getattr(optim, name)(**kwargs, nu_dtype=nu_dtype).init(params)
    for leaf in jax.tree.leaves(optim.tree.get(state, 'nu')):
      assert leaf.dtype == expected
  # None is the default: the same state as Optax's.
  chex.assert_trees_all_equal_shapes_and_dtypes(
      jax.tree.leaves(getattr(optim, name)(**kwargs).init(params)),
      jax.tree.leaves(getattr(optax, name)(**kwargs).init(params)))


# The two transformations that hold a second moment (the aliases pass it on).
NU_RUNS = [('adam', dict(learning_rate=0.1)), ('amsgrad', dict(learning_rate=0.1))]


@pytest.mark.parametrize('name,kwargs', NU_RUNS, ids=[n for n, _ in NU_RUNS])
def test_nu_dtype_none_equals_optax(name, kwargs):
  _run_both(getattr(optim, name)(**kwargs, nu_dtype=None),
            getattr(optax, name)(**kwargs))


@pytest.mark.parametrize('name,kwargs', NU_RUNS, ids=[n for n, _ in NU_RUNS])
def test_nu_dtype_bfloat16(name, kwargs):
  opt = getattr(optim, name)(**kwargs, nu_dtype=jnp.bfloat16)
  # The updates keep the params' dtype; the state keeps its dtypes (a bf16
  # nu, an f32 mu) through an update.
  params = harness.make_problem(steps=1).params
  updates, state = jax.jit(opt.update)(params, opt.init(params), params)
  chex.assert_trees_all_equal_dtypes(updates, params)
  chex.assert_trees_all_equal_shapes_and_dtypes(state, opt.init(params))
  for field in ('nu', 'nu_max'):
    for leaf in jax.tree.leaves(optim.tree.get(state, field)):
      assert leaf.dtype == jnp.bfloat16, (field, leaf.dtype)
  for leaf in jax.tree.leaves(optim.tree.get(state, 'mu')):
    assert leaf.dtype == jnp.float32
  # It still converges on the quadratic (the convergence suite's problem).
  loss, _ = harness.minimize(opt, harness.quadratic, [-5.0, -2.0], 300)
  start = float(harness.quadratic(jnp.array([-5.0, -2.0])))
  assert loss < 0.05 * start, (name, loss)


# ---------------------------------------------------------------------------
# A string (or other non-number) for a numeric hyperparameter: TypeError at
# construction naming the argument, for every alias of Optax's alias module.
# ---------------------------------------------------------------------------

import optax._src.alias as _optax_alias  # noqa: E402

ALIASES = sorted(
    n for n, f in vars(_optax_alias).items()
    if inspect.isfunction(f) and f.__module__ == _optax_alias.__name__
    and not n.startswith('_')
)
NOT_NUMERIC = {'mu_dtype', 'nu_dtype', 'accumulator_dtype', 'dtype_momentum',
               'mask', 'weight_decay_mask', 'linesearch', 'variant', 'mode'}


def _numeric_args():
  rows = []
  for name in ALIASES:
    sig = inspect.signature(getattr(optim, name))
    for p in sig.parameters.values():
      if p.name in NOT_NUMERIC or isinstance(p.default, bool):
        continue
      rows.append((name, p.name))
  return rows


NUMERIC_ARGS = _numeric_args()


def test_the_type_check_covers_every_alias():
  assert len(ALIASES) == 29
  assert {n for n, _ in NUMERIC_ARGS} == set(ALIASES)


@pytest.mark.parametrize('name,arg', NUMERIC_ARGS,
                         ids=[f'{n}-{a}' for n, a in NUMERIC_ARGS])
def test_a_string_hyperparameter_is_a_type_error(name, arg):
  fn = getattr(optim, name)
  kwargs = {}
  if inspect.signature(fn).parameters.get('learning_rate', None) is not None and (
      inspect.signature(fn).parameters['learning_rate'].default
      is inspect.Parameter.empty):
    kwargs['learning_rate'] = 0.1
  kwargs[arg] = '0.5'
  with warnings.catch_warnings(), pytest.raises(TypeError, match=arg):
    warnings.simplefilter('ignore')
    fn(**kwargs)


def test_numbers_arrays_and_schedules_are_still_accepted():
  optim.adam(jnp.float32(1e-3))
  optim.adam(jnp.asarray(1e-3), b1=np.float64(0.9))
  optim.sgd(optim.linear_schedule(0.1, 0.0, 10), momentum=0.9)
  optim.adamw(1e-3, weight_decay=lambda count: 1e-4)
  jax.jit(lambda lr: optim.adam(lr).update(
      jnp.ones(2), optim.adam(lr).init(jnp.ones(2)))[0])(0.1)
  with pytest.raises(TypeError, match="adam: learning_rate='0.001'"):
    optim.adam('0.001')
  with pytest.raises(TypeError, match="momentum='x'"):
    optim.sgd(0.1, momentum='x')
  with pytest.raises(TypeError, match='weight_decay'):
    optim.adamw(0.1, weight_decay='1e-4')
