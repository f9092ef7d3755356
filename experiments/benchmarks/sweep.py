"""A learning-rate sweep as one vmapped program against its runs one by one.

The optimizers_compared sweep of one optimizer (``--optimizer``, default
Adam) on the study's MNIST-1D MLP and data: ``--rates`` learning rates (the
usual default times factors from 1/10 to 10, geometrically spaced) x
``--seeds`` seeds, ``--steps`` steps each, two ways:

  (a) ``vmapped``: the whole grid as one state with a replica axis
      (``state.create_replicas`` with the rates in the optimizer state),
      trained by one ``Trainer.fit``: the study's way;
  (b) ``sequential``: the same runs one after another, one ``Trainer.fit``
      of a single state each (replica ``i`` of the same initial grid, so the
      same initialization, rate and optimizer object: no recompiles).

Both start from the same states and walk the same batches. The first run
(``--check_steps`` steps both ways; it also takes the process's start-up and
the compilations, and is not timed) checks that the grid's final params
equal the sequential runs' (allclose): the two measure the same work. Over
the full length they drift apart by more than rounding (vmap reassociates
float sums; ReLU kinks and Adam's division by tiny second moments amplify
the last bits), which is reported, not asserted. A warm-up round at full
length follows, not timed. Then ``--rounds`` rounds time (a) and (b) in turn
(which goes first alternates); the ratio is the median over rounds of
vmapped / sequential within a round, so a slow spell of the machine cancels
out. Only ``fit`` is timed (the states are built before). The machine's load
average is recorded with the results in
``runs/benchmarks/sweep/<timestamp>/results.json``.

Usage: ./launch.sh bench sweep [--rates=8] [--seeds=3] [--steps=1000] [--quick]
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import numpy as np
from absl import app
from absl import flags

from configs import common as config_common
from configs import optimizers_compared as config_lib
from experiments import common
from experiments import optimizers_compared as study
from research import data as data_lib
from research.train import trainer as trainer_lib

_OPTIMIZER = flags.DEFINE_string('optimizer', 'adam', 'An optimizer of the study.')
_RATES = flags.DEFINE_integer('rates', 8, 'Learning rates in the grid.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per rate.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Training steps of every run.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (after the compiling one).')
_DISPATCH = flags.DEFINE_integer('dispatch', 50, 'Steps per call (lax.scan).')
_CHECK_STEPS = flags.DEFINE_integer(
    'check_steps', 50, 'Steps of the run that checks both ways end at the same params.')
_QUICK = flags.DEFINE_bool('quick', False, 'A tiny size for the tests: 2 rates x 2 seeds, '
                           '20 steps, 1 round.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')

MODEL = 'mnist1d_mlp'


def _setup():
  if _QUICK.value:
    return dict(rates=2, seeds=2, steps=20, rounds=1, dispatch=10, check_steps=20)
  return dict(rates=_RATES.value, seeds=_SEEDS.value, steps=_STEPS.value,
              rounds=_ROUNDS.value, dispatch=_DISPATCH.value, check_steps=_CHECK_STEPS.value)


def _replica(tree, i: int):
  return jax.tree.map(lambda v: v[i], tree)


class Sweep:
  """The grid, its initial state, and the two ways to train it."""

  def __init__(self, name: str, rates: int, seeds: int, steps: int, dispatch: int):
    config = config_lib.get_config()
    common.require_choices('optimizer', [name], config_lib.OPTIMIZERS
                           + config_lib.MODERN_OPTIMIZERS)
    self.data = data_lib.get_dataset(config.data)
    self.model = study.build_model(MODEL)
    self.factors = np.geomspace(0.1, 10.0, rates) if rates > 1 else np.ones(1)
    lrs = [float(config.default_lr[name] * f) for f in self.factors]
    # One optimizer object for every run: the rates live in its state.
    tx = study.make_optimizer(config, name, lrs[0])
    self.grid = study.Grid('bench', MODEL, name, tx, steps,
                           [(lr, config.seed + s) for lr in lrs for s in range(seeds)],
                           self.data, {})
    tc = config_common.study_train_config(
        steps_per_dispatch=dispatch, checkpoints=False, tensorboard=False, progress=False)
    self.trainer = trainer_lib.Trainer(tc)
    self.single_trainer = trainer_lib.Trainer(tc)

  def states(self):
    """The grid's initial state and each replica's as a single state."""
    state = jax.block_until_ready(study.grid_state(self.grid, self.model))
    return state, [_replica(state, i) for i in range(len(self.grid.replicas))]

  def vmapped(self, state, steps: int):
    return self.trainer.fit(state, self.data.train, num_steps=steps,
                            log_every=steps).state.params

  def sequential(self, singles, steps: int):
    return [self.single_trainer.fit(s, self.data.train, num_steps=steps,
                                    log_every=steps).state.params for s in singles]


def _compare(grid_params, seq_params) -> tuple[bool, float]:
  """(allclose, max |diff|) of each replica's params against its run's."""
  pairs = [(np.asarray(a)[i], np.asarray(b)) for i, run in enumerate(seq_params)
           for a, b in zip(jax.tree.leaves(grid_params), jax.tree.leaves(run))]
  return (all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs),
          max(float(np.max(np.abs(a - b))) for a, b in pairs))


def _timed(fn, *args) -> tuple[float, object]:
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0, out


def main(argv):
  del argv
  setup = _setup()
  steps = setup['steps']
  sweep = Sweep(_OPTIMIZER.value, setup['rates'], setup['seeds'], steps, setup['dispatch'])
  n = len(sweep.grid.replicas)
  load_before = os.getloadavg()

  # The throwaway run (the process's start-up and the compilations) is the
  # check: from the same states, ``check_steps`` steps both ways end at the
  # same params. Longer runs drift apart by more than rounding: float sums
  # reassociated by vmap change the last bits, and training (ReLU kinks,
  # Adam's division by tiny second moments) amplifies them; the drift at
  # the full length is reported.
  check_steps = setup['check_steps']
  state, singles = sweep.states()
  same, check_diff = _compare(sweep.vmapped(state, check_steps),
                              sweep.sequential(singles, check_steps))
  if not same:
    raise AssertionError(f'after {check_steps} steps the vmapped grid and the sequential '
                         f'runs differ (max |diff| {check_diff:.3g}): they do not run the '
                         'same work.')
  state, singles = sweep.states()  # a warm-up round at full length, not timed
  _, final_diff = _compare(sweep.vmapped(state, steps), sweep.sequential(singles, steps))

  times = dict(vmapped=[], sequential=[])
  for r in range(setup['rounds']):
    order = ['vmapped', 'sequential'] if r % 2 == 0 else ['sequential', 'vmapped']
    for name in order:
      state, singles = sweep.states()
      if name == 'vmapped':
        times[name].append(_timed(sweep.vmapped, state, steps)[0])
      else:
        times[name].append(_timed(sweep.sequential, singles, steps)[0])
  ratios = [v / s for v, s in zip(times['vmapped'], times['sequential'])]
  results = dict(
      sequential_s=statistics.median(times['sequential']),
      vmapped_s=statistics.median(times['vmapped']),
      ratio=statistics.median(ratios),
      ratios=ratios, runs=times,
      params_allclose=same, check_steps=check_steps, max_abs_param_diff=check_diff,
      max_abs_param_diff_at_full_length=final_diff,
      setup=dict(setup, optimizer=_OPTIMIZER.value, model=MODEL, data='mnist1d',
                 replicas=n, batch_size=sweep.data.train.batch_size,
                 learning_rates=[lr for lr, _ in sweep.grid.replicas[::setup['seeds']]],
                 factors=[float(f) for f in sweep.factors], cpus=os.cpu_count(),
                 devices=[str(d) for d in jax.devices()]),
      load_average=dict(before=list(load_before), after=list(os.getloadavg())))
  print(f'{n} runs of {steps} steps ({setup["rates"]} rates x {setup["seeds"]} seeds, '
        f'{_OPTIMIZER.value}, {MODEL}); medians over {setup["rounds"]} round(s):')
  print(f'  sequential {results["sequential_s"]:.2f} s, vmapped {results["vmapped_s"]:.2f} s, '
        f'ratio vmapped / sequential {results["ratio"]:.3f}')
  print(f'  final params equal (allclose) after {check_steps} steps: {same} (max |diff| '
        f'{check_diff:.2g}; {final_diff:.2g} after {steps}); load '
        f'average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after')
  workdir = _WORKDIR.value or common.new_workdir(
      'sweep', root=f'{common.REPO_ROOT}/runs/benchmarks')
  common.write_json(f'{workdir}/results.json', results)
  print(f'results: {workdir}/results.json')


if __name__ == '__main__':
  app.run(main)
