"""Every optimizer of the update benchmark lowers to Optax's exact program.

The same StableHLO means XLA compiles the same executable: ours is then
exactly as fast as Optax's, whatever the timings of a noisy machine say (see
experiments/benchmarks/optim_update.py, column "same program"). Lowering
only: nothing here is compiled.
"""

import optax
import pytest

from experiments.benchmarks import optim_update as bench
from research import optim

# Mixed ranks; no scalar leaf (Optax's sm3 cannot take one).
SHAPES = [(5,), (4, 3), (3, 3, 2, 4)]

# Rows whose program is not Optax's, and why.
NOT_SAME_PROGRAM = {
    # Optax runs the Newton-Schulz steps in lax.fori_loop(unroll=True), so
    # each step is a closed call in its StableHLO (and a (n, 3) table of
    # coefficients a lax.scan); ours unrolls the steps in Python. Matching it
    # means rewriting the iteration and its aol/schatten first steps.
    'muon': 'Newton-Schulz steps unrolled in Python, not a fori_loop',
    # Ours selects with `where` (Optax blends c * a + (1 - c) * b, where an
    # inf or nan of the branch not taken leaks into the result) and steps
    # from where(first, params, cache), not the stale cache (Optax 0.2.8's
    # sync_period=1 bug, see research/optim/contrib/_sam.py).
    'sam': 'selection by where, not an arithmetic blend; no stale cache',
}

CASES = [(label, kwargs) for label, kwargs in bench.OPTIMIZERS.items()] + [
    # The small tree factors only with a low threshold: the row/column path.
    ('adafactor', dict(learning_rate=1e-3, min_dim_size_to_factor=2)),
]
# Rows built by the benchmark itself (contrib aliases and wrappers).
BUILT = [label for label in (*bench.CONTRIB, *bench.WRAPPED)
         if label not in NOT_SAME_PROGRAM]


def lowered(lib, label, kwargs=None):
  opt = (bench._factory(lib, label)(**kwargs) if kwargs is not None
         else bench.build(lib, label))
  return bench.lowered_step(opt, SHAPES, label)


@pytest.mark.parametrize('label,kwargs', CASES, ids=[
    f'{label}-{"-".join(f"{k}={v}" for k, v in kw.items())}' for label, kw in CASES])
def test_step_lowers_to_optax_program(label, kwargs):
  assert lowered(optim, label, kwargs) == lowered(optax, label, kwargs)


@pytest.mark.parametrize('label', BUILT)
def test_contrib_step_lowers_to_optax_program(label):
  assert lowered(optim, label) == lowered(optax, label)


@pytest.mark.parametrize('label', sorted(NOT_SAME_PROGRAM))
def test_not_same_program_rows_still_differ(label):
  # When one becomes Optax's program, it leaves NOT_SAME_PROGRAM.
  assert lowered(optim, label) != lowered(optax, label), (
      f'{label} now lowers to Optax\'s program: remove it from NOT_SAME_PROGRAM')


def test_every_benchmark_row_is_checked():
  rows = {*bench.OPTIMIZERS, *bench.CONTRIB, *bench.WRAPPED}
  assert rows == {label for label, _ in CASES} | set(BUILT) | set(NOT_SAME_PROGRAM)
