"""Each optimizer alias against Optax's function of the same name.

Rows are ``(name, kwargs)``; the same kwargs go to ours and to optax's. The
generic checks (float32 with and without jit, float64, a schedule as the
learning rate, complex64, dtype preservation, lax.cond stability, unknown
keyword arguments) come from ``harness.alias_suite``.
"""

import chex
import jax
import pytest

from research import optim
from tests.optim import harness

ALIASES = [
    ('sgd', dict(learning_rate=0.1)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9)),
    ('sgd', dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
]
COMPLEX = {'sgd'}

globals().update(harness.alias_suite(ALIASES, ours_module=optim, complex_names=COMPLEX))

# name, quadratic kwargs, steps, tol, Rosenbrock kwargs, steps, tol.
CONVERGENCE = [
    ('sgd', dict(learning_rate=0.1, momentum=0.9), 500, 1e-6,
     dict(learning_rate=1e-3, momentum=0.9), 10000, 1e-3),
]
globals().update(harness.convergence_suite(CONVERGENCE, ours_module=optim))


@pytest.mark.parametrize('kwargs,match', [
    (dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (dict(learning_rate=0.1, momentum=1.0), 'momentum=1.0'),
    (dict(learning_rate=0.1, momentum=-0.5), 'momentum=-0.5'),
])
def test_sgd_rejects_bad_hyperparameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.sgd(**kwargs)


def test_traced_hyperparameters_are_not_checked():
  # Inside jit a hyperparameter is a tracer: it is not checked and must work.
  problem = harness.make_problem(steps=2)

  @jax.jit
  def step(lr, momentum):
    opt = optim.sgd(lr, momentum=momentum)
    return opt.update(problem.grad(problem.params), opt.init(problem.params))[0]

  chex.assert_tree_all_finite(step(0.1, 0.9))
