"""Helpers shared by the study tests: compilations counted per run, a kill
simulated or sent, and ``experiments.main`` in a subprocess."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from experiments import common
from tests.train import helpers as train_helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_counting_compiles(run, config, workdir):
  """``run(config, workdir)`` of a study, with the XLA compilations of each of
  its :meth:`experiments.common.Study.run` calls counted.

  Returns ``(results, compiles)``: what ``run`` returned and ``{run name:
  number of compilations}``.
  """
  events = train_helpers.count_compiles()
  compiles = {}
  study_run = common.Study.run

  def counted(self, name, train):
    before = len(events)
    out = study_run(self, name, train)
    compiles[name] = len(events) - before
    return out

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(common.Study, 'run', counted)
    results = run(config, workdir)
  return results, compiles


def rerun_after_a_kill(run, config, done, workdir, unfinished):
  """Reruns a study where a kill in one of its runs would have left it.

  ``workdir`` becomes a copy of the finished study ``done`` (a
  ``pathlib.Path``) without its ``results.json``, the run ``unfinished``
  'running' and without its ``result.json``. ``run(config, str(workdir))``
  must then leave every other run's ``result.json`` untouched and complete
  ``unfinished``.

  Returns ``(rerun, done)``: the two ``results.json``, loaded.
  """
  shutil.copytree(done, workdir)
  (workdir / 'results.json').unlink()
  killed = workdir / 'runs' / unfinished
  (killed / 'result.json').unlink()
  (killed / 'status.json').write_text(json.dumps(dict(status='running')))
  finished = {p: p.stat().st_mtime_ns for p in (workdir / 'runs').glob('*/result.json')}
  run(config, str(workdir))
  after = {p: p.stat().st_mtime_ns for p in finished}
  assert after == finished, f'the rerun rewrote finished runs: {after} != {finished}'
  status = json.loads((killed / 'status.json').read_text())['status']
  assert status == 'complete', f'{unfinished} is {status!r} after the rerun'
  return (json.loads((workdir / 'results.json').read_text()),
          json.loads((done / 'results.json').read_text()))


def start_main(study, config, workdir, *args, **popen):
  """``python -m experiments.main`` of ``study`` with ``configs/<study>.py:<config>``
  into ``workdir``, on CPU, started: a ``subprocess.Popen`` with text pipes."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'experiments.main', f'--study={study}',
         f'--config=configs/{study}.py:{config}', f'--workdir={workdir}', *args]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=600):
  """Waits for ``proc`` (of :func:`start_main`); returns its stderr, and fails
  with the end of it unless the process exited with status 0."""
  _, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return err


def kill_when(proc, ready, timeout=400):
  """SIGKILLs ``proc`` once ``ready()`` holds (or after ``timeout`` seconds, or
  once it ended by itself) and waits for it; its ``returncode`` tells which."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not ready():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def run_status(workdir, name):
  """The status ('running', 'complete') in ``runs/<name>/status.json`` of a study."""
  with open(os.path.join(workdir, 'runs', name, 'status.json')) as f:
    return json.load(f)['status']


def without_timings(tree):
  """``tree`` (JSON: dicts and lists) without its 'seconds' entries, which
  differ from run to run."""
  if isinstance(tree, dict):
    return {k: without_timings(v) for k, v in tree.items() if k != 'seconds'}
  if isinstance(tree, list):
    return [without_timings(v) for v in tree]
  return tree
