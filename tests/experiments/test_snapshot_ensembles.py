"""The snapshot-ensemble study: end to end, snapshot timing, cost, bad input."""

import os
import statistics
import time

import jax
import numpy as np
import pytest

from configs import snapshot_ensembles as cfg_lib
from experiments import snapshot_ensembles as study
from research import data as data_lib
from research import models
from research import optim


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('snapshot_smoke'))
  config = cfg_lib.get_config('smoke')
  return config, workdir, study.run(config, workdir)


def test_smoke_writes_the_table_and_figures(smoke):
  config, workdir, results = smoke
  for name in ('results.md', 'results.json', 'config.json', 'error_vs_snapshots.png',
               'lr_and_loss.png', 'disagreement.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  table = open(os.path.join(workdir, 'results.md')).read()
  for label in ('Single model', 'NoCycle snapshot ensemble', 'SingleCycle ensembles',
                'Snapshot ensemble (alpha_0 = 0.1)', 'Snapshot ensemble (alpha_0 = 0.2)',
                'True ensemble'):
    assert label in table
  m = config.num_snapshots
  for arm, s in results['summary'].items():
    expected = 1 if arm == 'single' else m
    assert len(s['error_vs_m']) == expected, arm
    assert 0.0 <= s['ensemble_error'][0] <= 1.0
  # The curve's last point is the full ensemble.
  snap = results['summary']['snapshot_0.2']
  assert snap['error_vs_m'][-1][0] == pytest.approx(snap['ensemble_error'][0])


def _runner(config):
  ds = data_lib.get_dataset(config.data)
  return study.Runner(config, ds, models.build_model(config.model))


def test_snapshots_are_taken_exactly_at_the_cycle_ends():
  config = cfg_lib.get_config('smoke')
  config.budget_steps, config.num_snapshots = 50, 3  # cycles of ceil(50/3) = 17
  runner = _runner(config)
  schedule = optim.cyclic_cosine_schedule(0.2, 50, 3)
  tx = study._sgd(config, schedule)
  ends = optim.snapshot_steps(50, 3)
  assert ends == [17, 34, 50]
  run = runner.train('snap', tx, 50, ends, init_seed=0)
  assert run.snapshot_steps == ends
  # Update s used the smallest rate of its cycle; update s + 1 restarts at alpha_0.
  for s in ends[:-1]:
    assert float(schedule(s - 1)) < float(schedule(s - 2))
    assert float(schedule(s)) == pytest.approx(0.2)
  # Each snapshot is the state after exactly that many updates.
  for s, snap in zip(ends[:2], run.snapshots):
    short = runner.train(f'snap_{s}', tx, s, [s], init_seed=0)
    for a, b in zip(jax.tree.leaves(snap), jax.tree.leaves(short.snapshots[-1])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_snapshot_arm_costs_what_the_single_model_costs():
  # Both arms train B steps of the same model; the snapshot arm also copies M
  # snapshots to the host. Measured alternately, median of 7 after a compiling
  # run. The measure is this process's CPU time: on a shared 2-core machine the
  # wall clock of identical runs varies by +-30% with the other processes'
  # load, while the CPU time of the same work does not.
  config = cfg_lib.get_config('smoke')
  config.budget_steps, config.num_snapshots = 400, 5
  runner = _runner(config)
  single = runner.optimizer('single', lambda: study._sgd(config, study.single_schedule(config)))
  snap = runner.optimizer('snap', lambda: study._sgd(
      config, optim.cyclic_cosine_schedule(0.2, 400, 5)))
  runs = dict(single=(single, []), snapshot=(snap, optim.snapshot_steps(400, 5)))
  times = {k: [] for k in runs}
  for _ in range(8):
    for name, (tx, snaps) in runs.items():
      t0 = time.process_time()
      run = runner.train(name, tx, 400, snaps, init_seed=0)
      times[name].append(time.process_time() - t0)
  assert len(run.snapshots) == 5
  single_t = statistics.median(times['single'][1:])  # the first run compiles
  snap_t = statistics.median(times['snapshot'][1:])
  assert snap_t <= 1.10 * single_t, (snap_t, single_t)


@pytest.mark.parametrize('field,value,match', [
    ('num_snapshots', 0, 'num_snapshots'),
    ('num_snapshots', 100, 'at most budget_steps'),
    ('snapshot_lrs', (0.1, 0.0), 'snapshot_lrs'),
    ('arms', 'single,fancy', "arms='fancy'"),
    ('num_seeds', 0, 'num_seeds'),
])
def test_bad_config_fails_before_training(field, value, match):
  config = cfg_lib.get_config('smoke')
  config[field] = value
  with pytest.raises(ValueError, match=match):
    study.validate(config)


def test_unknown_scale():
  with pytest.raises(ValueError, match="unknown scale 'huge'"):
    cfg_lib.get_config('huge')


def test_verdict_signs_are_the_arm_minus_the_single_model():
  config = cfg_lib.get_config()
  summary = {
      'single': dict(last_error=(0.050, 0.004), ensemble_error=(0.050, 0.004)),
      'snapshot_0.1': dict(ensemble_error=(0.055, 0.010)),  # worse, within spread
      'snapshot_0.2': dict(ensemble_error=(0.030, 0.005)),  # better, beyond spread
  }
  lines = study.verdict(summary, config)
  assert 'alpha_0 = 0.1): differs from the single model by +0.50 points' in lines[0]
  assert 'alpha_0 = 0.2): test error lower than the single model by 2.00 points' in lines[1]
  assert 'beyond the seed spread' in lines[1]
