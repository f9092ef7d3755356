"""The command line: one-line errors before any work, --print_config, --help."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*args, workdir=None):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'experiments.main', '--study=snapshot_ensembles', *args]
  if workdir:
    cmd.append(f'--workdir={workdir}')
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('args,message', [
    (('--config.budget_step=5',),
     'error: unknown config field config.budget_step; nearest: config.budget_steps'),
    (('--config.train.num_steps=5',), 'error: unknown config field config.train.num_steps'),
    (('extra',), 'error: unexpected argument(s) extra'),
    (('--config.num_snapshots=0',), 'error: config.num_snapshots=0 is invalid; allowed: >= 1.'),
    (('--config.budget_steps=abc',), "invalid literal for int() with base 10: 'abc'"),
])
def test_bad_command_lines_fail_in_one_line_before_any_work(tmp_path, args, message):
  workdir = tmp_path / 'study'
  out = _main('--config=configs/snapshot_ensembles.py:smoke', *args, workdir=workdir)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], out.stderr
  assert not workdir.exists()


def test_an_unknown_scale_names_the_allowed_ones():
  out = _main('--config=configs/snapshot_ensembles.py:huge')
  assert out.returncode == 2
  assert "unknown scale 'huge'; allowed: smoke, no_batchnorm" in out.stderr.strip()


def test_print_config_prints_the_resolved_config_and_exits(tmp_path):
  out = _main('--config=configs/snapshot_ensembles.py:smoke', '--config.budget_steps=77',
              '--print_config', workdir=tmp_path / 'study')
  assert out.returncode == 0, out.stderr
  assert 'budget_steps: 77' in out.stdout and 'batch_norm: true' in out.stdout
  assert not (tmp_path / 'study').exists()


def test_help_lists_every_study_with_its_scales():
  out = subprocess.run(['bash', os.path.join(REPO, 'launch.sh'), '--help'], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0
  assert 'snapshot_ensembles' in out.stdout
  assert ':smoke :no_batchnorm :cifar10 :cifar10_resnet20' in out.stdout
  for name in os.listdir(os.path.join(REPO, 'configs')):
    if name.endswith('.py') and name not in ('__init__.py', 'common.py'):
      assert name[:-3] in out.stdout, name
