"""Each preconditioner against Optax's transform of the same name.

A transform is not an optimizer by itself, so both sides are wrapped the same
way, ``chain(t, scale(-0.1))``, and run through ``harness.alias_suite`` (100
steps, float32 with and without jit, float64, complex64 where Optax supports
it, dtype preservation, lax.cond stability, unknown keyword arguments). The
rows pick non-default options; the defaults are exercised by the aliases in
``test_alias.py`` (``ema(debias=False)`` by ``signum``).
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

STEP = -0.1

TRANSFORMS = [
    ('scale_by_rss', dict(initial_accumulator_value=0.0, eps=1e-5)),
    ('scale_by_rms', dict(decay=0.5, eps=1e-4, eps_in_sqrt=False,
                          bias_correction=True)),
    ('scale_by_stddev', dict(decay=0.8, initial_scale=0.5,
                             bias_correction=True)),
    ('scale_by_adadelta', dict(rho=0.8, eps=1e-3)),
    ('scale_by_adam', dict(b1=0.5, b2=0.9, eps_root=1e-6, nesterov=True)),
    ('scale_by_amsgrad', dict(eps_root=1e-8, bias_correction_mu=False,
                              bias_correction_nu=False)),
    ('scale_by_adamax', dict(b1=0.5, b2=1.0)),
    ('scale_by_belief', dict(nesterov=True)),
    ('scale_by_yogi', dict(eps_root=1e-8, initial_accumulator_value=0.1)),
    ('scale_by_radam', dict(b2=0.99, threshold=4.0, nesterov=True)),
    ('scale_by_adan', dict(b1=0.9, eps_root=1e-8)),
    ('scale_by_lion', dict(mode='smooth', smooth_beta=2.0)),
    ('scale_by_lion', dict(b1=0.5, mode='refined')),
    ('scale_by_sign', dict()),
    ('scale_by_rprop', dict(learning_rate=0.1, eta_minus=0.3, eta_plus=1.5,
                            max_step_size=1.0)),
    ('scale_by_polyak', dict(f_min=-2.0, max_learning_rate=0.5, eps=1e-3,
                             variant='sps+')),
    ('scale_by_optimistic_gradient', dict(alpha=0.5, beta=0.5)),
    ('ema', dict(decay=0.9)),
    ('centralize', dict()),
    ('normalize_by_update_norm', dict(scale_factor=2.0)),
]
NAMES = sorted({name for name, _ in TRANSFORMS})
# Those whose Optax version handles complex updates (|g|^2 = conj(g) g, or
# linear in g).
COMPLEX = {
    'scale_by_rss', 'scale_by_rms', 'scale_by_stddev', 'scale_by_adam',
    'scale_by_amsgrad', 'scale_by_adamax', 'scale_by_belief', 'scale_by_yogi',
    'scale_by_radam', 'scale_by_optimistic_gradient', 'ema', 'centralize',
    'normalize_by_update_norm',
}
EXTRA_ARGS = {'scale_by_polyak'}


def _wrapped(lib, name):
  return lambda **kw: lib.chain(getattr(lib, name)(**kw), lib.scale(STEP))


OURS = types.SimpleNamespace(**{n: _wrapped(optim, n) for n in NAMES})
REFERENCE = types.SimpleNamespace(**{n: _wrapped(optax, n) for n in NAMES})

globals().update(harness.alias_suite(
    TRANSFORMS, ours_module=OURS, reference_module=REFERENCE,
    complex_names=COMPLEX, extra_args_names=EXTRA_ARGS,
    # scale_by_rprop's learning_rate is a stored initial step size.
    schedule_names=set(),
))


@pytest.mark.parametrize('name,kwargs', TRANSFORMS,
                         ids=[f'{n}-{i}' for i, (n, _) in enumerate(TRANSFORMS)])
def test_state_has_optax_field_names(name, kwargs):
  params = {'a': jnp.zeros(3), 'b': jnp.zeros((2, 2))}
  ours = getattr(optim, name)(**kwargs).init(params)
  ref = getattr(optax, name)(**kwargs).init(params)
  assert ours._fields == ref._fields
  chex.assert_trees_all_equal_shapes_and_dtypes(tuple(ours), tuple(ref))


@pytest.mark.parametrize('name,kwargs,field', [
    ('scale_by_adam', dict(mu_dtype=jnp.bfloat16), 'mu'),
    ('scale_by_amsgrad', dict(mu_dtype=jnp.bfloat16), 'mu'),
    ('scale_by_lion', dict(mu_dtype=jnp.bfloat16), 'mu'),
    ('ema', dict(decay=0.9, accumulator_dtype=jnp.bfloat16), 'ema'),
])
def test_accumulator_dtype(name, kwargs, field):
  # The accumulator is stored in the requested dtype (float32 params), and the
  # rounding that implies happens at the same points as in Optax.
  state = harness.assert_matches_reference(
      _wrapped(optim, name)(**kwargs), _wrapped(optax, name)(**kwargs),
      variant=jax.jit,
  )
  dtypes = {x.dtype for x in jax.tree.leaves(getattr(state[0], field))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}


def test_rss_zero_accumulator_gives_zero_not_nan():
  # A zero gradient on a zero accumulator: the update is 0, not 0/0.
  tx = optim.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
  g = jnp.array([0.0, 2.0])
  u, _ = tx.update(g, tx.init(g))
  np.testing.assert_array_equal(u, np.array([0.0, 1.0]))


def test_centralize_removes_the_mean_of_matrices_only():
  updates = {'v': jnp.array([1.0, 2.0]), 'm': jnp.array([[1.0, 3.0], [2.0, 6.0]])}
  u, _ = optim.centralize().update(updates, optim.EmptyState())
  np.testing.assert_array_equal(u['v'], updates['v'])
  np.testing.assert_array_equal(u['m'], np.array([[-1.0, 1.0], [-2.0, 2.0]]))


def test_normalize_by_update_norm_gives_the_requested_norm():
  u, _ = optim.normalize_by_update_norm(scale_factor=-3.0, eps=0.0).update(
      {'a': jnp.array([3.0]), 'b': jnp.array([[4.0]])}, optim.EmptyState()
  )
  np.testing.assert_allclose(
      float(optim.global_norm(u)), 3.0, rtol=1e-6
  )
  assert float(u['a'][0]) < 0


BAD_INPUTS = [
    ('scale_by_rss', dict(eps=-1e-7), 'eps=-1e-07'),
    ('scale_by_rms', dict(decay=1.0), 'decay=1.0'),
    ('scale_by_rms', dict(initial_scale=-1.0), 'initial_scale=-1.0'),
    ('scale_by_stddev', dict(decay=-0.1), 'decay=-0.1'),
    ('scale_by_stddev', dict(eps=-1.0), 'eps=-1.0'),
    ('scale_by_adadelta', dict(eps=0.0), 'eps=0.0'),
    ('scale_by_adadelta', dict(rho=1.0), 'rho=1.0'),
    ('scale_by_adam', dict(b1=1.0), 'b1=1.0'),
    ('scale_by_amsgrad', dict(b2=1.2), 'b2=1.2'),
    ('scale_by_adamax', dict(b2=1.01), 'b2=1.01'),
    ('scale_by_belief', dict(b1=-0.9), 'b1=-0.9'),
    ('scale_by_yogi', dict(initial_accumulator_value=-1e-6),
     'initial_accumulator_value=-1e-06'),
    ('scale_by_radam', dict(threshold=2.0), 'threshold=2.0'),
    ('scale_by_adan', dict(b2=1.0), 'b2=1.0'),
    ('scale_by_lion', dict(mode='soft'), "mode='soft'"),
    ('scale_by_lion', dict(mode='smooth', smooth_beta=0.0), 'smooth_beta=0.0'),
    ('scale_by_rprop', dict(learning_rate=0.1, eta_minus=0.0), 'eta_minus=0.0'),
    ('scale_by_polyak', dict(variant='polyak'), "variant='polyak'"),
    ('scale_by_polyak', dict(eps=-1.0), 'eps=-1.0'),
    ('ema', dict(decay=1.0), 'decay=1.0'),
    ('normalize_by_update_norm', dict(scale_factor=0.0), 'scale_factor=0'),
    ('normalize_by_update_norm', dict(eps=-1e-6), 'eps=-1e-06'),
]


@pytest.mark.parametrize(
    'name,kwargs,match', BAD_INPUTS,
    ids=[f'{n}-{m}' for n, _, m in BAD_INPUTS],
)
def test_rejects_bad_hyperparameters(name, kwargs, match):
  with pytest.raises(ValueError, match=match) as err:
    getattr(optim, name)(**kwargs)
  assert name in str(err.value)


def test_traced_hyperparameters_are_not_checked():
  g = jnp.array([1.0, -2.0])

  @jax.jit
  def step(b, eps):
    out = []
    for tx in (optim.scale_by_adam(b, b, eps), optim.scale_by_rms(b, eps),
               optim.scale_by_lion(b, b), optim.ema(b),
               optim.scale_by_radam(b, b, eps, threshold=eps + 5.0)):
      out.append(tx.update(g, tx.init(g))[0])
    return out

  chex.assert_tree_all_finite(step(0.9, 1e-8))
