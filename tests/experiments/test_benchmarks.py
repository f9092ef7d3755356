"""The benchmark scripts run end to end at a tiny size and write their rows."""

import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench(name, workdir, *flags):
  subprocess.run([sys.executable, '-m', f'experiments.benchmarks.{name}',
                  f'--workdir={workdir}', *flags], cwd=REPO, check=True,
                 capture_output=True, text=True)
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_optim_update_rows(tmp_path):
  rows = _bench('optim_update', str(tmp_path), '--optimizers=sgd,adam',
                '--trees=resnet20', '--rounds=3', '--calls=2')
  paired = [r for r in rows if 'variant' not in r]
  assert [(r['optimizer'], r['tree']) for r in paired] == [('sgd', 'resnet20'),
                                                           ('adam', 'resnet20')]
  # optim.flat and optax.flatten against Optax per leaf, for each row.
  assert sorted((r['optimizer'], r['variant']) for r in rows if 'variant' in r) == [
      ('adam', 'flat'), ('adam', 'optax_flatten'), ('sgd', 'flat'), ('sgd', 'optax_flatten')]
  for r in paired:
    assert r['same_program'] is True
    assert r['ours_ms'] > 0 and r['reference_ms'] > 0
    assert 0 < r['ratio'] < 10 and 0 < r['control_ratio'] < 10


def test_optim_update_contrib_rows_with_extra_args(tmp_path):
  # momo takes the loss value, sophia the objective function.
  rows = _bench('optim_update', str(tmp_path), '--optimizers=momo,sophia',
                '--trees=one_10M', '--rounds=3', '--calls=2', '--noflat')
  assert [r['optimizer'] for r in rows] == ['momo', 'sophia']
  for r in rows:
    assert r['same_program'] is True
    assert r['ours_ms'] > 0 and r['reference_ms'] > 0
    assert 0 < r['ratio'] < 10 and 0 < r['control_ratio'] < 10


def test_train_throughput_contenders_train_the_same_run(tmp_path):
  # 5 rounds: each deep_mlp run takes 1-5 ms here, and the shares below are
  # medians over rounds; one round's ratio flipped above 1 under CI's load.
  out = _bench('train_throughput', str(tmp_path), '--steps=80', '--rounds=5',
               '--dispatch=40', '--deep_steps=40', '--deep_batch=20', '--deep_width=16',
               '--deep_depth=20')
  # The contenders' names (the module defines absl flags, so it is not imported
  # here: another benchmark's flags may already live in this process).
  ours, ours_loss = 'ours (Trainer)', "ours (Trainer, nonfinite_check='loss')"
  loop = 'jax_loop (flax + optax, jit + scan)'
  deep_ours, deep_flat = 'ours (Trainer) [deep_mlp]', 'ours (Trainer, flat_params) [deep_mlp]'
  deep_ours_loss = "ours (Trainer, nonfinite_check='loss') [deep_mlp]"
  deep_flat_loss = "ours (Trainer, flat_params, nonfinite_check='loss') [deep_mlp]"
  deep_loop, deep_sgd = loop + ' [deep_mlp]', 'jax_loop, plain SGD (bound) [deep_mlp]'
  deep_control = 'jax_loop, second copy (A/A control) [deep_mlp]'
  update, update_flat = ('optax adam update alone, per leaf [deep_mlp]',
                         'optim.flat(adam) update alone [deep_mlp]')
  by = {r['contender']: r for r in out['rows']}
  for name in (ours, ours_loss, loop, deep_ours, deep_flat, deep_ours_loss, deep_flat_loss,
               deep_loop, deep_control, deep_sgd, update, update_flat):
    assert by[name]['steps_per_second'] > 0, name
  assert (by[deep_flat]['variant'] == by[deep_flat_loss]['variant'] == by[update_flat]['variant']
          == 'flat')
  assert by[update]['final_loss'] is None
  assert (out['deep_batch'], out['deep_width'], out['deep_depth']) == (20, 16, 20)
  # The update alone is a part of a training step: a share in (0, 1), and the
  # ceiling it implies is 1 / (1 - (per-leaf share - flat share)).
  r = out['ratios']
  for key in ('deep_mlp_update_share', 'deep_mlp_flat_update_share'):
    assert 0 < r[key] < 1, (key, r[key])
  assert 0 < r['deep_mlp_flat_ceiling'] < 1 / (1 - r['deep_mlp_update_share'])
  # Same init, data order and optimizer: ours (per leaf or flat) and the hand
  # loop end at the same loss (float reassociation only).
  for a, b in ((ours, loop), (deep_ours, deep_loop), (deep_flat, deep_loop),
               (deep_ours_loss, deep_loop), (deep_flat_loss, deep_loop),
               (deep_control, deep_loop)):
    assert math.isclose(by[a]['final_loss'], by[b]['final_loss'], rel_tol=1e-3), a
  for key in ('ours_over_jax_loop', 'deep_mlp_ours_over_jax_loop',
              'deep_mlp_flat_over_jax_loop', 'deep_mlp_ours_loss_check_over_jax_loop',
              'deep_mlp_flat_loss_check_over_jax_loop', 'deep_mlp_sgd_bound_over_jax_loop',
              'deep_mlp_aa_control_over_jax_loop'):
    assert key in out['ratios'], key
  by = {r['contender'].split(' ')[0]: r for r in out['rows']}
  assert ('torch' in by) == ('ours_over_torch' in out['ratios'])
  assert ('torch' in by) or any('torch is not installed' in n for n in out['notes'])
