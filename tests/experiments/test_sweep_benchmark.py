"""The sweep benchmark runs end to end at a tiny size and checks its work."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sweep_benchmark_times_the_same_runs_both_ways(tmp_path):
  subprocess.run([sys.executable, '-m', 'experiments.benchmarks.sweep', '--quick',
                  f'--workdir={tmp_path}'], cwd=REPO, check=True, capture_output=True,
                 text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  out = json.loads((tmp_path / 'results.json').read_text())
  # The grid's final params equal the sequential runs' (the benchmark fails
  # otherwise): both measure the same work.
  assert out['params_allclose'] is True
  assert out['setup']['replicas'] == 4 and out['setup']['steps'] == 20
  assert len(out['setup']['learning_rates']) == 2
  assert out['sequential_s'] > 0 and out['vmapped_s'] > 0
  assert out['ratio'] == out['ratios'][0] > 0
  assert len(out['runs']['vmapped']) == len(out['runs']['sequential']) == 1
