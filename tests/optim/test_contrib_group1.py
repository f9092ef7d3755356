"""``optax.contrib`` group 1 against Optax 0.2.8's functions of the same names.

Rows build an optimizer from a library (``research.optim`` or ``optax``), so
both sides get the same arguments, including library-specific objects (base
optimizers, ``GaLoreDimensionNumbers``). Each row runs 12 steps of the
harness's reference problem; ``scale_by_*`` rows are wrapped as ``chain(t,
scale(-0.05))`` on both sides, and every update gets keyword arguments it
does not use (``value``, ``grad``, ``value_fn``), which must be ignored.
Rows are run op by op (cheap for 12 steps) except those built on
``lax.cond`` (GaLore, Mechanic), which are jitted: op by op, each cond would
be traced anew at every step.

DP-SGD takes per-example gradients, which the harness does not produce: its
tests build a small least-squares problem with a batch axis.
"""

import inspect
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness

STEPS = 12


def matrices(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def warmup(count):
  return 5.0 * jnp.minimum(1.0, count / 10)


def decay(count):
  return 0.1 * 0.9**count


def unit_decay(count):
  return 0.97**count


def wrapped(name, **kwargs):
  """``scale_by_<name>`` followed by a fixed step, in either library."""
  return lambda lib: lib.chain(getattr(lib.contrib, name)(**kwargs),
                               lib.scale(-0.05))


def alias(name, **kwargs):
  return lambda lib: getattr(lib.contrib, name)(**kwargs)


def alone(name, **kwargs):
  # A final-update transform alone; Optax's takes extra arguments in a chain.
  return lambda lib: lib.chain(getattr(lib.contrib, name)(**kwargs))


def galore_specs(lib):
  spec = lib.contrib.GaLoreDimensionNumbers
  # The conv kernel as a (18, 4) matrix; the (5, 3) matrix transposed.
  return {'conv': spec((0, 1, 2), 3), 'matrix': spec(1, 0),
          'scalar': None, 'vector': None}


def galore_custom(lib):
  # Rank 2 < 3: a real projection, refreshed at steps 1, 4, 7, 10.
  return lib.contrib.galore(
      0.1, rank=2, update_proj_gap=3, scale=0.5, weight_decay=0.1,
      base_optimizer=lib.scale_by_adam(b1=0.8),
      weight_dimension_numbers=lambda params: galore_specs(lib))


def mechanize(base_name, **kwargs):
  return lambda lib: lib.contrib.mechanize(getattr(lib, base_name)(1.0), **kwargs)


EAGER = [
    ('acprop', alias('acprop', learning_rate=0.1)),
    ('acprop-decay', alias('acprop', learning_rate=0.1, b1=0.5, eps=1e-8,
                           weight_decay=0.1, mask=matrices)),
    ('scale_by_acprop', wrapped('scale_by_acprop', b2=0.99)),
    ('ademamix', alias('ademamix', learning_rate=0.1)),
    ('ademamix-custom', alias('ademamix', learning_rate=decay, b3=0.99,
                              alpha=2.0, eps_root=1e-8, weight_decay=0.1)),
    ('ademamix-schedules', alias('ademamix', learning_rate=0.1, b3=unit_decay,
                                 alpha=warmup)),
    ('scale_by_ademamix', wrapped('scale_by_ademamix')),
    ('simplified_ademamix', alias('simplified_ademamix', learning_rate=0.01)),
    ('simplified_ademamix-custom', alias(
        'simplified_ademamix', learning_rate=0.01, b1=0.9, alpha=warmup,
        eps_root=1e-8, weight_decay=0.1)),
    ('scale_by_simplified_ademamix', wrapped('scale_by_simplified_ademamix',
                                             alpha=3.0)),
    ('adopt', alias('adopt', learning_rate=0.1)),
    ('adopt-nesterov-noclip', alias('adopt', learning_rate=decay, b2=0.99,
                                    nesterov=True, use_clipping=False)),
    ('scale_by_adopt', wrapped('scale_by_adopt', clip_value_fn=jnp.sqrt)),
    ('cocob', alias('cocob')),
    ('cocob-custom', alias('cocob', learning_rate=0.5, alpha=10.0,
                           weight_decay=0.1)),
    ('scale_by_cocob', alone('scale_by_cocob', alpha=50.0)),
    ('dadapt_adamw', alias('dadapt_adamw')),
    ('dadapt_adamw-custom', alias(
        'dadapt_adamw', learning_rate=unit_decay, betas=(0.8, 0.99),
        estim_lr0=1e-3, weight_decay=0.1)),
    ('dog', alias('dog')),
    ('dog-distance', alias('dog', init_step=('distance', 0.1),
                           weight_decay=0.1, mask=matrices)),
    ('dog-learning_rate', alias('dog', learning_rate=unit_decay,
                                init_step=('learning_rate', 0.1))),
    ('dowg', alias('dowg')),
    ('dowg-custom', alias('dowg', init_estim_sq_dist=0.1, eps=1e-6,
                          weight_decay=0.1)),
    ('madgrad', alias('madgrad', learning_rate=0.1)),
    ('madgrad-custom', alias('madgrad', learning_rate=decay, momentum=0.5,
                             weight_decay=0.1, eps=1e-4)),
    ('scale_by_madgrad', alone('scale_by_madgrad', learning_rate=0.05)),
]
JITTED = [
    # rank 128 > min(5, 3): full rank; the projector is set at step 1 only.
    ('scale_by_galore', wrapped('scale_by_galore')),
    ('galore-custom', galore_custom),
    ('mechanize-sgd', mechanize('sgd')),
    ('mechanize-adam', mechanize('adam', weight_decay=0.0, eps=1e-6,
                                 s_init=1e-3, num_betas=3)),
]
ROWS = [(i, f, harness.no_jit) for i, f in EAGER] + [
    (i, f, jax.jit) for i, f in JITTED]


@pytest.mark.parametrize('make,variant', [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_equals_optax(make, variant):
  harness.assert_matches_reference(
      make(optim), make(optax), steps=STEPS, variant=variant, extra_args=True)


def test_equals_optax_float64():
  # A row with scalar state in the params' dtype and a schedule. (Every row
  # matches in float64 to 1e-10; one is run to keep the file fast.)
  make = dict((i, f) for i, f, _ in ROWS)['dadapt_adamw-custom']
  with jax.enable_x64(True):
    harness.assert_matches_reference(
        make(optim), make(optax), steps=STEPS, dtype=jnp.float64,
        variant=jax.jit)


# Families whose state holds more than moments of the params' dtype (scalars
# in the params' lowest dtype, accumulators of another dtype, copies of the
# params, projectors, flags): dtypes kept in bfloat16, and a state that
# lax.cond (hence jit and scan) accepts. The others (acprop, adopt,
# simplified AdEMAMix) are element-wise in one dtype.
STATEFUL = {
    'ademamix-mu_dtype': alias('ademamix', learning_rate=0.1,
                               mu_dtype=jnp.bfloat16),
    'cocob': alias('cocob'),
    'dadapt_adamw': alias('dadapt_adamw'),
    'dog': alias('dog'),
    'dowg': alias('dowg'),
    'galore': alias('galore', learning_rate=0.1),
    'madgrad': alias('madgrad', learning_rate=0.1),
    'mechanize': mechanize('sgd'),
}


@pytest.mark.parametrize('make', STATEFUL.values(), ids=STATEFUL.keys())
def test_bfloat16_dtypes_preserved(make):
  harness.assert_dtypes_preserved(make(optim), jnp.bfloat16)


@pytest.mark.parametrize('make', STATEFUL.values(), ids=STATEFUL.keys())
def test_state_stable_under_cond(make):
  harness.assert_state_stable_under_cond(make(optim), extra_args=True)


# --- DP-SGD on per-example gradients.

BATCH = 4


def _per_example_problem():
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            'b': jnp.zeros((2,), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(BATCH, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(BATCH, 2)), jnp.float32)

  def loss(p, xi, yi):
    return jnp.sum((xi @ p['w'] + p['b'] - yi) ** 2)

  return params, jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))), x, y


def _dp_trajectory(opt, steps=8):
  params, per_example_grad, x, y = _per_example_problem()
  state = opt.init(params)
  out = []
  for _ in range(steps):
    grads = per_example_grad(params, x, y)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


def _reference_dp(factory, **kwargs):
  with warnings.catch_warnings():  # Optax's dpsgd passes the deprecated seed.
    warnings.simplefilter('ignore', DeprecationWarning)
    return factory(**kwargs)


@pytest.mark.parametrize('kwargs', [
    dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.5, seed=3),
    dict(learning_rate=0.05, l2_norm_clip=2.0, noise_multiplier=0.1, seed=0,
         momentum=0.9, nesterov=True),
], ids=['plain', 'nesterov'])
def test_dpsgd_equals_optax(kwargs):
  ours = _dp_trajectory(optim.contrib.dpsgd(**kwargs))
  ref = _dp_trajectory(_reference_dp(optax.contrib.dpsgd, **kwargs))
  chex.assert_trees_all_close(ours, ref, rtol=1e-6, atol=1e-6)
  params, per_example_grad, x, y = _per_example_problem()
  norms = jax.vmap(optim.tree.tree_norm)(per_example_grad(params, x, y))
  # The clip is active on the first step, so the comparison covers it.
  assert float(jnp.max(norms)) > kwargs['l2_norm_clip']


def test_differentially_private_aggregate_equals_optax():
  # An int seed on our side, the key it stands for on Optax's.
  kw = dict(l2_norm_clip=0.5, noise_multiplier=1.0)
  ours = optim.chain(
      optim.contrib.differentially_private_aggregate(key=7, **kw), optim.sgd(0.1))
  ref = optax.chain(
      optax.contrib.differentially_private_aggregate(
          key=jax.random.key(7), **kw), optax.sgd(0.1))
  ours, ref = _dp_trajectory(ours, 3), _dp_trajectory(ref, 3)
  chex.assert_trees_all_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_dp_aggregate_without_clip_or_noise_is_the_mean():
  params, per_example_grad, x, y = _per_example_problem()
  grads = per_example_grad(params, x, y)
  tx = optim.contrib.differentially_private_aggregate(
      l2_norm_clip=1e6, noise_multiplier=0.0, key=0)
  updates, state = tx.update(grads, tx.init(params))
  chex.assert_trees_all_close(
      updates, jax.tree.map(lambda g: g.mean(axis=0), grads), rtol=1e-6)
  assert not jnp.array_equal(jax.random.key_data(state.rng_key),
                             jax.random.key_data(jax.random.key(0)))


def test_dp_aggregate_key_arguments_warn_like_optax():
  with pytest.warns(DeprecationWarning, match='seed'):
    optim.contrib.differentially_private_aggregate(1.0, 1.0, seed=0)
  with pytest.warns(UserWarning, match='key'):
    optim.contrib.differentially_private_aggregate(1.0, 1.0)
  with pytest.raises(ValueError, match='key or seed'), warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    optim.contrib.differentially_private_aggregate(1.0, 1.0, key=1, seed=0)


def test_dp_aggregate_rejects_gradients_without_batch_axis():
  tx = optim.contrib.differentially_private_aggregate(1.0, 1.0, key=0)
  grads = {'a': jnp.ones((4, 2)), 'b': jnp.ones((3,))}
  with pytest.raises(ValueError, match='batch axis'):
    tx.update(grads, tx.init(grads))


# --- Bad input.

C = optim.contrib
SGD = optim.sgd(1.0)

BAD_INPUTS = [
    (C.acprop, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (C.acprop, dict(learning_rate=0.1, b1=1.0), 'b1=1.0'),
    (C.acprop, dict(learning_rate=0.1, eps_root=-1.0), 'eps_root=-1.0'),
    (C.scale_by_acprop, dict(b2=1.5), 'b2=1.5'),
    (C.ademamix, dict(learning_rate=0.1, b3=1.0), 'b3=1.0'),
    (C.ademamix, dict(learning_rate=0.1, alpha=-1.0), 'alpha=-1.0'),
    (C.ademamix, dict(learning_rate=0.1, weight_decay=-0.1), 'weight_decay=-0.1'),
    (C.scale_by_ademamix, dict(b1=-0.1), 'b1=-0.1'),
    (C.simplified_ademamix, dict(learning_rate=0.1, b1=1.0), 'b1=1.0'),
    (C.scale_by_simplified_ademamix, dict(eps=-1.0), 'eps=-1.0'),
    (C.adopt, dict(learning_rate=0.1, b2=1.0), 'b2=1.0'),
    (C.scale_by_adopt, dict(eps=-1e-6), 'eps=-1e-06'),
    (C.cocob, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (C.cocob, dict(alpha=-1.0), 'alpha=-1.0'),
    (C.scale_by_cocob, dict(eps=-1.0), 'eps=-1.0'),
    (C.dadapt_adamw, dict(betas=(0.9, 1.0)), r'betas\[1\]=1.0'),
    (C.dadapt_adamw, dict(betas=(0.9,)), 'betas=.*a pair'),
    (C.dadapt_adamw, dict(estim_lr0=0.0), 'estim_lr0=0.0'),
    (C.dadapt_adamw, dict(weight_decay=-0.1), 'weight_decay=-0.1'),
    (C.dog, dict(init_step=('size', 1.0)), r"init_step\[0\]='size'"),
    (C.dog, dict(init_step=('distance', 0.0)), r'init_step\[1\]=0.0'),
    (C.dog, dict(init_step=1e-6), 'init_step=1e-06'),
    (C.dog, dict(eps=-1.0), 'eps=-1.0'),
    (C.dog, dict(weight_decay=-0.1), 'weight_decay=-0.1'),
    (C.dowg, dict(init_estim_sq_dist=0.0), 'init_estim_sq_dist=0.0'),
    (C.dowg, dict(eps=0.0), 'eps=0.0'),
    (C.dowg, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
    (C.dpsgd, dict(learning_rate=0.1, l2_norm_clip=-1.0, noise_multiplier=1.0,
                   seed=0), 'l2_norm_clip=-1.0'),
    (C.dpsgd, dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=-1.0,
                   seed=0), 'noise_multiplier=-1.0'),
    (C.dpsgd, dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0,
                   seed=0, momentum=1.0), 'momentum=1.0'),
    (C.differentially_private_aggregate,
     dict(l2_norm_clip=-1.0, noise_multiplier=1.0, key=0), 'l2_norm_clip=-1.0'),
    (C.galore, dict(learning_rate=0.1, rank=0), 'rank=0'),
    (C.galore, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (C.scale_by_galore, dict(update_proj_gap=0), 'update_proj_gap=0'),
    (C.madgrad, dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
    (C.madgrad, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (C.madgrad, dict(learning_rate=0.1, weight_decay=-1.0), 'weight_decay=-1.0'),
    (C.scale_by_madgrad, dict(learning_rate=0.1, eps=-1.0), 'eps=-1.0'),
    (C.mechanize, dict(base_optimizer=SGD, s_init=0.0), 's_init=0.0'),
    (C.mechanize, dict(base_optimizer=SGD, num_betas=0), 'num_betas=0'),
    (C.mechanize, dict(base_optimizer=SGD, eps=0.0), 'eps=0.0'),
    (C.mechanize, dict(base_optimizer=SGD, weight_decay=-1.0),
     'weight_decay=-1.0'),
]


@pytest.mark.parametrize(
    'factory,kwargs,match', BAD_INPUTS,
    ids=[f'{f.__name__}-{m}' for f, _, m in BAD_INPUTS])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match) as info:
    factory(**kwargs)
  assert factory.__name__ in str(info.value)


def test_galore_rank_must_be_an_int():
  with pytest.raises(TypeError, match='rank=2.0'):
    C.galore(0.1, rank=2.0)


def test_galore_on_an_empty_tree():
  # Optax initialises an empty tree (tree_map_params' placeholder) but fails
  # to update it; ours does both.
  opt, ref = C.galore(0.1), optax.contrib.galore(0.1)
  state = opt.init({})
  # Same layout; the NamedTuple classes are each library's own.
  assert (str(jax.tree.structure(state))
          == str(jax.tree.structure(ref.init({}))))
  updates, _ = opt.update({}, state, {})
  assert updates == {}


def test_galore_rejects_overlapping_axes_at_init():
  spec = C.GaLoreDimensionNumbers(reduction_axis=0, output_axis=-2)
  opt = C.scale_by_galore(weight_dimension_numbers={'w': spec})
  with pytest.raises(ValueError, match='disjoint'):
    opt.init({'w': jnp.ones((4, 3))})


@pytest.mark.parametrize('make', [
    alias('cocob', alpha=0.0),
    alias('ademamix', learning_rate=0.1, alpha=0.0, b3=0.0),
    alias('adopt', learning_rate=0.1, b1=0.0, eps=0.0),
    alias('dowg', init_estim_sq_dist=1.0, eps=0.0),
    alias('madgrad', learning_rate=0.0, momentum=0.0, eps=1e-6),
    mechanize('sgd', weight_decay=0.0),
], ids=['cocob', 'ademamix', 'adopt', 'dowg', 'madgrad', 'mechanize'])
def test_accepts_edge_values_optax_accepts(make):
  # Edge values Optax's math handles: not rejected, and the same two steps.
  params = {'w': jnp.array([[1.0, -2.0, 3.0]])}
  grads = {'w': jnp.array([[0.5, 0.3, -1.0]])}
  out = []
  for opt in (make(optim), make(optax)):
    state = opt.init(params)
    for _ in range(2):
      updates, state = opt.update(grads, state, params)
    out.append(updates)
  chex.assert_trees_all_close(*out, rtol=1e-6)
  chex.assert_tree_all_finite(out[0])


def test_exports_match_optax_contrib():
  names = [
      'acprop', 'scale_by_acprop', 'ademamix', 'scale_by_ademamix',
      'ScaleByAdemamixState', 'simplified_ademamix',
      'scale_by_simplified_ademamix', 'ScaleBySimplifiedAdEMAMixState',
      'adopt', 'scale_by_adopt', 'cocob', 'scale_by_cocob', 'COCOBState',
      'dadapt_adamw', 'DAdaptAdamWState', 'dog', 'DoGState', 'dowg',
      'DoWGState', 'dpsgd', 'differentially_private_aggregate',
      'DifferentiallyPrivateAggregateState', 'galore', 'scale_by_galore',
      'GaLoreState', 'GaLoreDimensionNumbers', 'madgrad', 'scale_by_madgrad',
      'MadgradState', 'mechanize', 'MechanicState',
  ]
  for name in names:
    ours, ref = getattr(optim.contrib, name), getattr(optax.contrib, name)
    if isinstance(ref, type):
      assert ours._fields == ref._fields, name
    else:
      assert _signature(ours) == _signature(ref), name


def _signature(fn):
  # Default functions (adopt's clip_value_fn) are equal in value, not identity.
  return [(p.name, p.kind, 'fn' if callable(p.default) else p.default)
          for p in inspect.signature(fn).parameters.values()]
