"""Each optimizer alias against Optax's function of the same name.

Rows: (name, kwargs). The same kwargs are passed to ours and to optax's.
"""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from absl.testing import parameterized

from research import optim
from tests.optim import harness

# name, kwargs for the equality runs.
ALIASES = [
    ('sgd', dict(learning_rate=0.1)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
]

# Optimizers whose optax version supports complex params.
COMPLEX = {'sgd'}

_decayed = lambda count: 0.1 * 0.97 ** count  # noqa: E731


def _both(name, kwargs):
  return getattr(optim, name)(**kwargs), getattr(optax, name)(**kwargs)


def _ids(rows):
  return [f'{n}-{"-".join(f"{k}={v}" for k, v in kw.items())}' for n, kw in rows]


class EqualsOptaxTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(i, n, kw) for i, (n, kw) in zip(_ids(ALIASES), ALIASES)])
  def test_float32(self, name, kwargs):
    ours, ref = _both(name, kwargs)
    harness.assert_matches_reference(ours, ref, variant=self.variant)

  @parameterized.named_parameters(*[(i, n, kw) for i, (n, kw) in zip(_ids(ALIASES), ALIASES)])
  def test_float64(self, name, kwargs):
    with jax.enable_x64(True):
      ours, ref = _both(name, kwargs)
      harness.assert_matches_reference(ours, ref, variant=jax.jit, dtype=jnp.float64)

  @parameterized.named_parameters(*[(i, n, kw) for i, (n, kw) in zip(_ids(ALIASES), ALIASES)])
  def test_schedule_as_learning_rate(self, name, kwargs):
    kwargs = dict(kwargs, learning_rate=_decayed)
    ours, ref = _both(name, kwargs)
    harness.assert_matches_reference(ours, ref, variant=jax.jit)


@pytest.mark.parametrize('name,kwargs', [r for r in ALIASES if r[0] in COMPLEX],
                         ids=_ids([r for r in ALIASES if r[0] in COMPLEX]))
def test_complex64(name, kwargs):
  ours, ref = _both(name, kwargs)
  harness.assert_matches_reference(ours, ref, variant=jax.jit, dtype=jnp.complex64)


@pytest.mark.parametrize('name,kwargs', ALIASES, ids=_ids(ALIASES))
@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float32])
def test_dtype_preserved(name, kwargs, dtype):
  harness.assert_dtypes_preserved(getattr(optim, name)(**kwargs), dtype)


@pytest.mark.parametrize('name,kwargs', ALIASES, ids=_ids(ALIASES))
def test_state_stable_under_cond(name, kwargs):
  harness.assert_state_stable_under_cond(getattr(optim, name)(**kwargs))


@pytest.mark.parametrize('name,kwargs', ALIASES, ids=_ids(ALIASES))
def test_accepts_unknown_kwargs(name, kwargs):
  harness.assert_accepts_unknown_kwargs(getattr(optim, name)(**kwargs))


# name, kwargs, steps, tolerance on the final loss (quadratic from (-5, -2),
# Rosenbrock from (-1.5, 2)).
CONVERGENCE = [
    ('sgd', dict(learning_rate=0.1, momentum=0.9), 500, 1e-6, 1e-3),
]


@pytest.mark.parametrize('name,kwargs,steps,quad_tol,rosen_tol', CONVERGENCE,
                         ids=[r[0] for r in CONVERGENCE])
def test_converges(name, kwargs, steps, quad_tol, rosen_tol):
  opt = getattr(optim, name)(**kwargs)
  loss, _ = harness.minimize(opt, harness.quadratic, [-5.0, -2.0], steps)
  assert loss < quad_tol, f'quadratic: final loss {loss}'
  opt = getattr(optim, name)(**dict(kwargs, learning_rate=kwargs['learning_rate'] / 100))
  loss, _ = harness.minimize(opt, harness.rosenbrock, [-1.5, 2.0], 20 * steps)
  assert loss < rosen_tol, f'rosenbrock: final loss {loss}'


@pytest.mark.parametrize('kwargs,match', [
    (dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
    (dict(learning_rate=0.1, momentum=-0.5), 'momentum=-0.5'),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.sgd(**kwargs)


def test_traced_hyperparameters_are_not_checked():
  # Inside jit a learning rate is a tracer: no check, no error.
  problem = harness.make_problem(steps=2)
  @jax.jit
  def step(lr, momentum):
    opt = optim.sgd(lr, momentum=momentum)
    return opt.update(problem.grad(problem.params), opt.init(problem.params))[0]
  chex.assert_tree_all_finite(step(0.1, 0.9))
