"""The accelerator check runs end to end on CPU in its reduced form."""

import json
import math
import os
import subprocess
import sys

from experiments.benchmarks import _device_check
from experiments.benchmarks import _device_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_reduced_device_check_runs_every_step_and_prints_its_tables(tmp_path):
  workdir = tmp_path / 'check'
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS='cpu')
  proc = subprocess.run(['bash', 'experiments/benchmarks/device_check.sh', '--reduced',
                         f'--workdir={workdir}'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  steps = [line.split('\t') for line in (workdir / 'steps.tsv').read_text().splitlines()]
  assert [(name, rc) for name, rc, _ in steps] == [
      ('tests', '0'), ('optim_update', '0'), ('train_throughput', '0'), ('device', '0')]
  for name in ('## Precision policies', '## Parallel strategies',
               '## snapshot_ensembles:cifar10_resnet20', '## optim_update',
               '## train_throughput\n', 'Every step ran.'):
    assert name in proc.stdout, name  # (no model size: the reduced run skips deep_mlp)
  assert (workdir / 'results.md').read_text() in proc.stdout

  out = json.loads((workdir / 'device.json').read_text())
  assert out['device']['platform'] == 'cpu' and out['device']['peak_bf16_flops'] is None
  policies = out['training']['policies']
  assert set(policies) == {'float32', 'bfloat16', 'float16'}
  for row in policies.values():
    assert row['steps_per_second'] > 0 and row['nonfinite_steps'] == 0
    assert abs(row['final_loss'] - policies['float32']['final_loss']) < 0.05
  for key in ('sharded/float16', 'pmap/float16'):  # every local device
    row = out['training']['parallel'][key]
    assert row['devices'] == 4 and row['loss_difference'] < 1e-3, (key, row)
  proto = out['protocol']
  assert proto['parallel'] == 'sharded' and proto['precision'] == 'bfloat16'
  assert proto['batch'] == 64 and proto['augment'] is True
  assert proto['flops_per_step'] > 0 and proto['examples_per_second'] > 0
  assert proto['percent_of_peak_bf16'] is None  # no peak for a CPU
  assert math.isfinite(proto['final_loss'])


def test_report_lists_both_throughput_runs_with_their_ratios(tmp_path):
  (tmp_path / 'steps.tsv').write_text('train_throughput\t0\t5\n'
                                      'train_throughput_small_leaves\t1\t7\n')
  for name, width, ratio in (('train_throughput', 64, 0.95),
                             ('train_throughput_small_leaves', 16, 1.25)):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'results.json').write_text(json.dumps(dict(
        rows=[dict(contender='ours', steps_per_second=1234.4),
              dict(contender='ours [deep_mlp]', steps_per_second=99.0)],
        ratios=dict(deep_mlp_flat_over_jax_loop=ratio), deep_width=width, deep_depth=50,
        deep_batch=1)))
  text = _device_report.report(str(tmp_path))
  assert '## train_throughput (deep_mlp 50 x 64, batch 1)' in text
  assert '## train_throughput_small_leaves (deep_mlp 50 x 16, batch 1)' in text
  assert '- deep_mlp_flat_over_jax_loop: 0.95' in text
  assert '- deep_mlp_flat_over_jax_loop: 1.25' in text
  assert '| ours | 1234 |' in text
  assert '| train_throughput_small_leaves | FAILED (exit 1) | 7 |' in text
  assert '1 step(s) failed.' in text
  assert (tmp_path / 'results.md').read_text() == text


def test_peak_flops_by_device_kind():
  peak = _device_check.peak_bf16_flops
  assert peak('NVIDIA H100 80GB HBM3') == 989e12
  assert peak('NVIDIA H100 PCIe') == 756e12
  assert peak('NVIDIA A100-SXM4-40GB') == 312e12
  assert peak('TPU v5 lite') == 197e12 and peak('TPU v5p') == 459e12
  assert peak('TPU v4') == 275e12
  assert peak('cpu') is None and peak('Tesla V100-SXM2-16GB') is None


def test_launch_lists_the_shell_benchmark():
  out = subprocess.run(['./launch.sh', '--help'], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout
  assert '  device_check\n' in out and '_device_check' not in out
