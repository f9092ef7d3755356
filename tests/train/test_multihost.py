"""Two processes on 127.0.0.1 with 2 CPU devices each end where 1 x 4 devices ends.

Each process reads only its half of every global batch; gradients are averaged
across all four devices through gloo collectives.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(devices, extra_env):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', TINY_STEPS='20',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', **extra_env)
  return subprocess.Popen([sys.executable, '-m', 'tests.train.run_tiny', '-'], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc):
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return out


@pytest.mark.parametrize('parallel', ['sharded', 'pmap'])
def test_two_processes_match_one_process_with_four_devices(parallel):
  single = json.loads(_result(_launch(4, dict(TINY_PARALLEL=parallel))).strip().splitlines()[-1])
  address = f'127.0.0.1:{_free_port()}'
  procs = [
      _launch(2, dict(TINY_PARALLEL=parallel, TINY_COORDINATOR=address,
                      TINY_NUM_PROCESSES='2', TINY_PROCESS_ID=str(i)))
      for i in range(2)
  ]
  outs = [_result(p) for p in procs]
  multi = json.loads(outs[0].strip().splitlines()[-1])
  assert multi['step'] == single['step'] == 20
  for a, b in zip(multi['params'], single['params']):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
