"""contrib, group 2: momo, muon, prodigy, reduce_on_plateau, sam,
schedule_free, sophia, split_real_and_imaginary, each against
``optax.contrib`` of the same name.

A row builds the same optimizer from a library ``lib`` (``research.optim``
or ``optax``), so wrappers (SAM's inner optimizers, a mask around
``scale_by_muon``) are each library's own. The trajectories run under jit for
``STEPS`` steps of the harness problem (compilation dominates the time, so
the rows are few and each covers several options).
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness

STEPS = 20


def with_obj_fn(lib, tx):
  """Passes the harness's ``value_fn`` to Sophia's estimator as ``obj_fn``."""

  def update(updates, state, params=None, *, value_fn=None, **extra_args):
    del extra_args
    return tx.update(updates, state, params, obj_fn=value_fn)

  return lib.GradientTransformationExtraArgs(tx.init, update)


def decay_schedule(count):
  return 0.5 * 0.95**count


def matrix_dims(lib):
  """Muon axes: the conv kernel as 18 x 4 (fan-in = its first three axes)."""
  dims = lib.contrib.MuonDimensionNumbers
  return {'matrix': dims(), 'conv': dims((0, 1, 2), 3), 'scalar': None,
          'vector': None}


def batched_dims(lib):
  """Muon axes of ``scale_by_muon`` under a mask: the conv kernel as a batch
  of 3 x 3 matrices of shape 2 x 4, the matrix transposed (negative axes)."""
  dims = lib.contrib.MuonDimensionNumbers

  def fn(updates):
    by_rank = {2: dims(-1, -2), 4: dims(reduction_axis=2, output_axis=3)}
    return jax.tree.map(lambda u: by_rank[u.ndim], updates)

  return fn


def rank_at_least_2(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def sam_sgd(lib, sync_period, **kwargs):
  """SAM with momentum in both optimizers, so that resets change the result."""
  return lib.contrib.sam(
      lib.sgd(0.1, momentum=0.5),
      lib.chain(lib.contrib.normalize(), lib.sgd(0.05, momentum=0.5)),
      sync_period=sync_period, **kwargs)


# (id, build(lib), needs value/value_fn). Defaults are compared by
# test_signatures_match_optax, so the rows set the options that change the
# update rule. normalize and reduce_on_plateau run inside chains.
ROWS = [
    ('momo-adapt-wd-schedule', lambda lib: lib.contrib.momo(
        decay_schedule, beta=0.8, lower_bound=-1.0, weight_decay=0.1,
        adapt_lower_bound=True), True),
    ('momo_adam-adapt-wd', lambda lib: lib.contrib.momo_adam(
        0.1, b1=0.8, b2=0.99, lower_bound=-1.0, weight_decay=0.1,
        adapt_lower_bound=True), True),
    # Rank-2 leaves to Muon (the matrix), the others to AdamW.
    ('muon', lambda lib: lib.contrib.muon(0.05), False),
    ('muon-dims-aol-dion-rms-wd-adaptive', lambda lib: lib.contrib.muon(
        0.05, ns_coeffs='dion', weight_decay=0.1, preconditioning='aol',
        adaptive=True, consistent_rms=0.2, adam_learning_rate=0.02,
        adam_weight_decay=0.1, muon_weight_dimension_numbers=matrix_dims(lib)),
     False),
    ('scale_by_muon-masked-batched-schatten', lambda lib: lib.chain(
        lib.masked(lib.contrib.scale_by_muon(
            ns_steps=3, beta=0.9, nesterov=False, preconditioning='schatten',
            weight_dimension_numbers=batched_dims(lib)), rank_at_least_2),
        lib.scale(-0.05)), False),
    ('prodigy-safeguard-wd-schedule', lambda lib: lib.contrib.prodigy(
        decay_schedule, betas=(0.8, 0.99), estim_lr0=1e-3, weight_decay=0.1,
        safeguard_warmup=True), False),
    ('reduce_on_plateau', lambda lib: lib.chain(
        lib.sgd(0.8), lib.contrib.reduce_on_plateau(factor=0.5, patience=1)),
     True),
    ('sam-3-keep-state', lambda lib: sam_sgd(lib, 3, reset_state=False),
     False),
    ('schedule_free_sgd-warmup-wd', lambda lib: lib.contrib.schedule_free_sgd(
        0.5, warmup_steps=5, weight_decay=0.01), False),
    ('schedule_free_adamw-warmup-wd', lambda lib: (
        lib.contrib.schedule_free_adamw(
            0.1, warmup_steps=5, b1=0.8, weight_decay=0.1,
            weight_lr_power=1.0)), False),
    ('sophia-hutchinson-mask', lambda lib: with_obj_fn(lib, lib.contrib.sophia(
        0.1, weight_decay=0.1, weight_decay_mask=rank_at_least_2, gamma=0.5,
        update_interval=2, hessian_diagonal_fn=(
            lib.contrib.hutchinson_estimator_diag_hessian(
                jax.random.PRNGKey(3))))), True),
]
IDS = [r[0] for r in ROWS]


@pytest.mark.parametrize('name,build,extra', ROWS, ids=IDS)
def test_equals_optax(name, build, extra):
  state = harness.assert_matches_reference(
      build(optim), build(optax), variant=jax.jit, steps=STEPS,
      extra_args=extra)
  if name == 'reduce_on_plateau':  # the scale must drop, or nothing is tested
    assert float(state[1].scale) < 1.0


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16],
                         ids=['f32', 'bf16'])
@pytest.mark.parametrize('name,build,extra', ROWS, ids=IDS)
def test_update_keeps_state_types_and_param_dtypes(name, build, extra, dtype):
  # What jit, scan and cond need: the state is a fixed point of structure,
  # shapes and dtypes, and updates have the params' dtypes. Traced only
  # (eval_shape), so nothing compiles. Unknown keyword arguments are ignored.
  del name
  # The trajectories' problem size: its compiled gradient is reused.
  problem = harness.make_problem(dtype, steps=STEPS)
  tx, params = build(optim), problem.params
  state = tx.init(params)
  value, grads = problem.value_and_grad(params)
  kwargs = dict(some_unknown_argument=1.0)
  if extra:
    kwargs.update(value=value, value_fn=problem.loss)
  updates, new_state = jax.eval_shape(
      lambda g, s, p: tx.update(g, s, p, **kwargs), grads, state, params)
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert shapes(new_state) == shapes(state)
  assert shapes(updates) == shapes(params)


def test_split_real_and_imaginary_equals_optax_on_complex_params():
  state = harness.assert_matches_reference(
      optim.contrib.split_real_and_imaginary(optim.adam(0.1)),
      optax.contrib.split_real_and_imaginary(optax.adam(0.1)),
      variant=jax.jit, dtype=jnp.complex64, steps=STEPS)
  # The inner Adam saw real pairs: a second moment per part, not |g|^2.
  nu = state.inner_state[0].nu['vector']
  assert isinstance(nu, tuple) and nu._fields == ('real', 'imaginary')
  assert nu.real.dtype == jnp.float32


# ---------------------------------------------------------------- SAM


def sharp_loss(w):
  """A non-quadratic loss, so that the gradient at w_adv is not linear in w."""
  return jnp.sum(jnp.log(jnp.cosh(w['a'] - 1.0))) + jnp.sum(w['b'] ** 4)


def sam_by_hand(w, lr, rho, steps):
  """Foret et al.'s step written out: w_adv = w + rho g / ||g||, then
  w <- w - lr grad L(w_adv)."""
  for _ in range(steps):
    g = jax.grad(sharp_loss)(w)
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
    w_adv = jax.tree.map(lambda x, gx: x + rho * gx / norm, w, g)
    g_adv = jax.grad(sharp_loss)(w_adv)
    w = jax.tree.map(lambda x, gx: x - lr * gx, w, g_adv)
  return w


W0 = {'a': jnp.array([0.3, -1.2, 2.0]), 'b': jnp.array([[0.5, -0.7]])}


@pytest.mark.parametrize('opaque_mode', [False, True])
@pytest.mark.parametrize('lib', [optim, optax], ids=['ours', 'optax'])
def test_sam_is_the_two_step_formula(lib, opaque_mode):
  lr, rho, steps = 0.1, 0.05, 4
  tx = lib.contrib.sam(
      lib.sgd(lr), lib.chain(lib.contrib.normalize(), lib.sgd(rho)),
      opaque_mode=opaque_mode)
  w, state = W0, tx.init(W0)
  grad_fn = lambda p, i: jax.grad(sharp_loss)(p)  # noqa: E731
  kwargs = dict(grad_fn=grad_fn) if opaque_mode else {}
  for _ in range(steps if opaque_mode else 2 * steps):
    updates, state = tx.update(jax.grad(sharp_loss)(w), state, w, **kwargs)
    w = lib.apply_updates(w, updates)
  expected = sam_by_hand(W0, lr, rho, steps)
  chex.assert_trees_all_close(w, expected, rtol=1e-6, atol=1e-6)
  # Not SGD: the step at w_adv differs from the step at w.
  plain = W0
  for _ in range(steps):
    plain = jax.tree.map(lambda x, g: x - lr * g, plain,
                         jax.grad(sharp_loss)(plain))
  assert max(float(jnp.max(jnp.abs(w[k] - plain[k]))) for k in w) > 1e-3


def test_sam_opaque_mode_equals_optax():
  grad_fn = lambda p, i: jax.grad(sharp_loss)(p)  # noqa: E731
  results = []
  for lib in (optim, optax):
    tx = sam_sgd(lib, 3, opaque_mode=True, reset_state=False)
    w, state = W0, tx.init(W0)
    for _ in range(3):
      updates, state = tx.update(jax.grad(sharp_loss)(w), state, w,
                                 grad_fn=grad_fn)
      w = lib.apply_updates(w, updates)
    results.append(w)
  chex.assert_trees_all_close(*results, rtol=1e-6, atol=1e-6)


def test_sam_sync_period_1_is_the_outer_optimizer():
  # Optax 0.2.8 returns to its first params at every call here; ours is SGD.
  tx, sgd = (optim.contrib.sam(optim.sgd(0.1), optim.contrib.normalize(),
                               sync_period=1), optim.sgd(0.1))
  w, state = W0, tx.init(W0)
  for _ in range(3):
    updates, state = tx.update(jax.grad(sharp_loss)(w), state, w)
    w = optim.apply_updates(w, updates)
  expected = W0
  for _ in range(3):
    expected = jax.tree.map(lambda x, g: x - 0.1 * g, expected,
                            jax.grad(sharp_loss)(expected))
  chex.assert_trees_all_close(w, expected, rtol=1e-6, atol=1e-6)


def test_sam_opaque_mode_needs_grad_fn():
  tx = optim.contrib.sam(optim.sgd(0.1), optim.sgd(0.1), opaque_mode=True)
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(W0, tx.init(W0), W0)


# ----------------------------------------------------- schedule-free, muon


def test_schedule_free_eval_params_equal_optax():
  # The eager tests share W0's shapes, so they share compiled operations.
  params0, evals = W0, []
  for lib in (optim, optax):
    tx = lib.contrib.schedule_free_sgd(0.2, warmup_steps=2, b1=0.8)
    params, state = params0, tx.init(params0)
    history = []
    for _ in range(5):
      updates, state = tx.update(jax.grad(sharp_loss)(params), state, params)
      params = lib.apply_updates(params, updates)
      history.append(lib.contrib.schedule_free_eval_params(state, params))
    evals.append(history)
    # x = (y - (1 - b1) z) / b1: the averaged iterate, not the params.
    x = history[-1]
    chex.assert_trees_all_close(
        jax.tree.map(lambda a, b: 0.8 * a + 0.2 * b, x, state.z), params,
        rtol=1e-6)
  chex.assert_trees_all_close(*evals, rtol=1e-6, atol=1e-6)
  assert float(jnp.max(jnp.abs(evals[0][-1]['a'] - params0['a']))) > 0.1


def test_schedule_free_eval_params_rejects_other_states():
  with pytest.raises(ValueError, match='ScheduleFreeState'):
    optim.contrib.schedule_free_eval_params(optim.EmptyState(), W0)


def test_muon_update_is_nearly_orthogonal():
  # One step from zero momentum: U S' V^T with S' ~ 1 (Newton-Schulz). With
  # the spectral normalization, the one option no trajectory row uses.
  g = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
  updates = []
  for lib in (optim, optax):
    tx = lib.contrib.scale_by_muon(preconditioning='spectral')
    updates.append(tx.update(g, tx.init(g))[0])
  np.testing.assert_allclose(updates[0], updates[1], rtol=1e-6, atol=1e-6)
  s = np.linalg.svd(np.asarray(updates[0]), compute_uv=False)
  assert 0.6 < s.min() and s.max() < 1.3, s
  assert np.linalg.svd(np.asarray(g), compute_uv=False).max() > 2.0


@pytest.mark.parametrize('dims', [
    None,  # by rank: w is a matrix, k and b are not
    lambda params: {'w': optim.contrib.MuonDimensionNumbers(),
                    'k': optim.contrib.MuonDimensionNumbers((0, 1), 2),
                    'b': None},
], ids=['by-rank', 'callable'])
def test_muon_sends_its_leaves_to_muon_and_the_rest_to_adam(dims):
  params = {'w': jnp.ones((4, 3)), 'k': jnp.ones((2, 2, 3)), 'b': jnp.ones(3)}
  tx = optim.contrib.muon(0.1, muon_weight_dimension_numbers=dims)
  state = tx.init(params)
  muon_mu = state.inner_states['muon'].inner_state[0].mu
  adam_mu = state.inner_states['adam'].inner_state[0].mu
  muon_leaves = {'w'} if dims is None else {'w', 'k'}
  for key in params:
    on_muon = not isinstance(muon_mu[key], optim.MaskedNode)
    on_adam = not isinstance(adam_mu[key], optim.MaskedNode)
    assert (on_muon, on_adam) == (key in muon_leaves, key not in muon_leaves)
  updates, _ = jax.eval_shape(tx.update, params, state, params)
  chex.assert_trees_all_equal_shapes(updates, params)


# ----------------------------------------------------------------- sophia


def test_hutchinson_is_exact_on_a_diagonal_hessian_and_equals_optax():
  curvature = {'a': jnp.array([1.0, 2.0, 3.0]), 'b': jnp.array([[0.5, 2.0]])}
  quad = lambda p: sum(  # noqa: E731
      jnp.sum(0.5 * c * x**2) for c, x in zip(jax.tree.leaves(curvature),
                                             jax.tree.leaves(p)))
  params = jax.tree.map(jnp.ones_like, curvature)
  tx = optim.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
  diag, _ = tx.update(params, tx.init(params), params, obj_fn=quad)
  chex.assert_trees_all_close(diag, curvature)
  # A non-diagonal Hessian: the same probe as Optax's, so the same estimate.
  coupled = lambda p: quad(p) + jnp.sum(p['a']) ** 2 * jnp.sum(p['b'])  # noqa: E731
  ref = optax.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
  state, ref_state = tx.init(params), ref.init(params)
  for _ in range(2):
    ours, state = tx.update(params, state, params, obj_fn=coupled)
    theirs, ref_state = ref.update(params, ref_state, params, obj_fn=coupled)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


def test_hutchinson_needs_obj_fn():
  tx = optim.contrib.hutchinson_estimator_diag_hessian()
  with pytest.raises(ValueError, match='obj_fn'):
    tx.update(W0, tx.init(W0), W0)


# ------------------------------------------------------------------ names


NAMES = [
    'HutchinsonState', 'MomoAdamState', 'MomoState', 'MuonDimensionNumbers',
    'MuonState', 'NormalizeState', 'ProdigyState', 'ReduceLROnPlateauState',
    'SAMState', 'ScheduleFreeState', 'SophiaState',
    'SplitRealAndImaginaryState', 'hutchinson_estimator_diag_hessian', 'momo',
    'momo_adam', 'muon', 'normalize', 'prodigy', 'reduce_on_plateau', 'sam',
    'scale_by_muon', 'schedule_free', 'schedule_free_adamw',
    'schedule_free_eval_params', 'schedule_free_sgd', 'sophia',
    'split_real_and_imaginary',
]


@pytest.mark.parametrize('name', NAMES)
def test_names_and_state_fields_match_optax(name):
  ours, theirs = getattr(optim.contrib, name), getattr(optax.contrib, name)
  assert getattr(ours, '_fields', None) == getattr(theirs, '_fields', None)


def _parameters(fn):
  """(name, kind, default) per parameter; transformations as defaults by type."""
  def default(d):
    return 'a transformation' if hasattr(d, 'update') else d
  return [(p.name, p.kind, default(p.default))
          for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize('name', [n for n in NAMES if n[0].islower()])
def test_signatures_match_optax(name):
  ours = _parameters(getattr(optim.contrib, name))
  theirs = _parameters(getattr(optax.contrib, name))
  # Ours may add trailing options (reduce_on_plateau's mode).
  assert ours[:len(theirs)] == theirs


@pytest.mark.parametrize('name,kwargs', [
    ('momo', {}), ('momo_adam', {}), ('prodigy', {}),
    ('schedule_free_sgd', {}),
])
def test_scalar_state_in_the_lowest_dtype_of_the_params(name, kwargs):
  params = {'a': jnp.ones(2, jnp.bfloat16), 'b': jnp.ones(3, jnp.float32)}
  ours = getattr(optim.contrib, name)(**kwargs).init(params)
  theirs = getattr(optax.contrib, name)(**kwargs).init(params)
  assert ([x.dtype for x in jax.tree.leaves(ours)]
          == [x.dtype for x in jax.tree.leaves(theirs)])
  scalars = {x.dtype for x in jax.tree.leaves(ours) if x.ndim == 0}
  assert jnp.dtype(jnp.bfloat16) in scalars


def test_reduce_on_plateau_is_also_top_level():
  assert optim.contrib.reduce_on_plateau is optim.reduce_on_plateau


# -------------------------------------------------------------- bad input


BAD_INPUTS = [
    (optim.contrib.momo, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (optim.contrib.momo, dict(beta=1.0), 'beta=1.0'),
    (optim.contrib.momo, dict(weight_decay=-0.1), 'weight_decay=-0.1'),
    (optim.contrib.momo_adam, dict(b1=1.5), 'b1=1.5'),
    (optim.contrib.momo_adam, dict(b2=-0.1), 'b2=-0.1'),
    (optim.contrib.momo_adam, dict(eps=-1e-8), 'eps=-1e-08'),
    (optim.contrib.muon, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.contrib.muon, dict(learning_rate=0.1, beta=1.0), 'beta=1.0'),
    (optim.contrib.muon, dict(learning_rate=0.1, ns_steps=-1), 'ns_steps=-1'),
    (optim.contrib.muon, dict(learning_rate=0.1, ns_coeffs='fast'),
     "ns_coeffs='fast'"),
    (optim.contrib.muon, dict(learning_rate=0.1, ns_coeffs=(1.0, 2.0)),
     r'ns_coeffs has shape \(2,\)'),
    (optim.contrib.muon, dict(learning_rate=0.1, ns_coeffs='dion',
                              ns_steps=3), 'ns_steps=3'),
    (optim.contrib.muon, dict(learning_rate=0.1, preconditioning='svd'),
     "preconditioning='svd'"),
    (optim.contrib.muon, dict(learning_rate=0.1, adam_b2=1.0), 'adam_b2=1.0'),
    (optim.contrib.muon, dict(learning_rate=0.1, weight_decay=-1.0),
     'weight_decay=-1.0'),
    (optim.contrib.muon, dict(learning_rate=0.1, consistent_rms=-0.2),
     'consistent_rms=-0.2'),
    (optim.contrib.scale_by_muon, dict(eps=-1.0), 'eps=-1.0'),
    (optim.contrib.prodigy, dict(betas=(0.9, 1.0)), r'betas\[1\]=1.0'),
    (optim.contrib.prodigy, dict(beta3=-0.5), 'beta3=-0.5'),
    (optim.contrib.prodigy, dict(estim_lr0=0.0), 'estim_lr0=0.0'),
    (optim.contrib.prodigy, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (optim.contrib.reduce_on_plateau, dict(factor=1.5), 'factor=1.5'),
    (optim.contrib.schedule_free_sgd, dict(b1=0.0), 'b1=0.0'),
    (optim.contrib.schedule_free_sgd, dict(weight_decay=-0.1),
     'weight_decay=-0.1'),
    (optim.contrib.schedule_free_adamw, dict(b2=1.0), 'b2=1.0'),
    (optim.contrib.schedule_free_adamw, dict(learning_rate=-0.1),
     'learning_rate=-0.1'),
    (optim.contrib.schedule_free_adamw, dict(weight_lr_power=-2.0),
     'weight_lr_power=-2.0'),
    (optim.contrib.sophia, dict(learning_rate=0.1, b2=1.0), 'b2=1.0'),
    (optim.contrib.sophia, dict(learning_rate=0.1, clip_threshold=0.0),
     'clip_threshold=0.0'),
    (optim.contrib.sophia, dict(learning_rate=0.1, update_interval=0),
     'update_interval=0'),
    (optim.contrib.sophia, dict(learning_rate=0.1, gamma=-1.0), 'gamma=-1.0'),
    (optim.contrib.sophia, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
]


@pytest.mark.parametrize(
    'factory,kwargs,match', BAD_INPUTS,
    ids=[f'{f.__name__}-{m}' for f, _, m in BAD_INPUTS])
def test_bad_hyperparameters_raise_at_construction(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


def test_sam_rejects_sync_period_0():
  with pytest.raises(ValueError, match='sync_period=0'):
    optim.contrib.sam(optim.sgd(0.1), optim.sgd(0.1), sync_period=0)


def test_schedule_free_warmup_0_behaves_as_optax():
  # Optax accepts warmup_steps=0: the rate stays 0 and the params do not move
  # (up to the rounding of y -> x -> y).
  for lib in (optim, optax):
    tx = lib.contrib.schedule_free_sgd(warmup_steps=0)
    state = tx.init(W0)
    for _ in range(2):
      updates, state = tx.update(jax.grad(sharp_loss)(W0), state, W0)
      chex.assert_trees_all_close(
          updates, jax.tree.map(jnp.zeros_like, W0), atol=1e-6)
    assert float(state.max_lr) == 0.0
