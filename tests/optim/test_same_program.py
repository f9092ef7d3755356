"""Every optimizer of the update benchmark lowers to Optax's exact program.

The same StableHLO means XLA compiles the same executable: ours is then
exactly as fast as Optax's, whatever the timings of a noisy machine say (see
experiments/benchmarks/optim_update.py, column "same program").
"""

import optax
import pytest

from experiments.benchmarks import optim_update as bench
from research import optim

# Mixed ranks; no scalar leaf (Optax's sm3 cannot take one).
SHAPES = [(5,), (4, 3), (3, 3, 2, 4)]

CASES = [(label, kwargs) for label, kwargs in bench.OPTIMIZERS.items()] + [
    # The small tree factors only with a low threshold: the row/column path.
    ('adafactor', dict(learning_rate=1e-3, min_dim_size_to_factor=2)),
]


@pytest.mark.parametrize('label,kwargs', CASES, ids=[
    f'{label}-{"-".join(f"{k}={v}" for k, v in kw.items())}' for label, kw in CASES])
def test_step_lowers_to_optax_program(label, kwargs):
  needs_value = label in bench.NEEDS_VALUE
  ours = bench.lowered_step(bench._factory(optim, label)(**kwargs), SHAPES, needs_value)
  ref = bench.lowered_step(bench._factory(optax, label)(**kwargs), SHAPES, needs_value)
  assert ours == ref
