"""Fault injection: kills inside every kind of save, corrupt checkpoints,
partial metrics, a full disk, two processes on one workdir, a lost peer.

Each resumed run must end bit-identical to the uninterrupted one. Kills run
the tiny run of ``tests.faults.tiny`` as a subprocess (all started at once);
resumes run here, sharing one compilation.
"""

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from research.train import checkpoints as ck
from research.train import trainer as trainer_lib
from tests.faults import tiny

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(workdir, **env):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             **{k: str(v) for k, v in env.items()})
  return subprocess.Popen([sys.executable, '-m', 'tests.faults.tiny', str(workdir)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  return tiny.leaves(tiny.run(str(tmp_path_factory.mktemp('ref'))))


def _same(result, reference):
  got = tiny.leaves(result)
  assert len(got[0]) == len(reference[0])
  for a, b in zip(got[0], reference[0]):
    np.testing.assert_array_equal(a, b)  # bit-identical
  assert got[1:] == reference[1:]  # snapshot steps, history, evaluations


SEED = random.randrange(10**6)
KILLS = ['ckpt-written:3', 'ckpt-published:2', 'snapshot-written:2', 'best-published:3',
         'metrics-partial:3', f'random:{SEED}']


def test_sigkill_inside_every_save_then_resume_is_bit_identical(tmp_path, reference, caplog):
  procs = {}
  for i, kill in enumerate(KILLS):
    env = dict(FAULT_DELAY=0.01)
    if kill.startswith('random'):  # a random moment of the run (seed printed on failure)
      env['FAULT_KILL_AFTER'] = random.Random(int(kill.split(':')[1])).uniform(0.0, 0.4)
    else:
      env['FAULT_KILL'] = kill
    procs[kill] = (tmp_path / str(i), _spawn(tmp_path / str(i), **env))
  for kill, (workdir, proc) in procs.items():
    _, err = proc.communicate(timeout=300)
    if not kill.startswith('random'):
      assert proc.returncode == -signal.SIGKILL, (kill, err[-2000:])
    with caplog.at_level(logging.WARNING):
      _same(tiny.run(str(workdir)), reference)
    assert not [n for n in os.listdir(workdir / 'checkpoints') if n.startswith('.')], kill


def _partial_run(workdir):
  tiny.run(str(workdir), num_steps=16)  # checkpoints 8, 12, 16
  return os.path.join(workdir, 'checkpoints', '16')


def _truncate(path):
  f = os.path.join(path, 'state', 'arrays.bin')
  os.truncate(f, os.path.getsize(f) // 2)


def _garbage(path):
  with open(os.path.join(path, 'state', 'manifest.json'), 'wb') as f:
    f.write(os.urandom(200))


def _bitflip(path, seed):
  f = os.path.join(path, 'state', 'arrays.bin')
  data = bytearray(open(f, 'rb').read())
  bit = random.Random(seed).randrange(len(data) * 8)
  data[bit // 8] ^= 1 << (bit % 8)
  open(f, 'wb').write(bytes(data))


CORRUPTIONS = dict(
    truncate=_truncate, garbage=_garbage,
    delete=lambda p: os.remove(os.path.join(p, 'state', 'arrays.bin')),
    delete_meta=lambda p: os.remove(os.path.join(p, 'meta.json')),
    bitflip0=lambda p: _bitflip(p, 0), bitflip1=lambda p: _bitflip(p, 1),
    bitflip2=lambda p: _bitflip(p, 2),
    snapshot=lambda p: _truncate(os.path.join(os.path.dirname(os.path.dirname(p)),
                                              'snapshots', 'step_00000013', '..', '..',
                                              'checkpoints', '16')),
)


def test_a_corrupt_latest_checkpoint_falls_back_and_ends_identical(tmp_path, reference, caplog):
  base = tmp_path / 'base'
  _partial_run(base)
  for name, corrupt in CORRUPTIONS.items():
    workdir = tmp_path / name
    shutil.copytree(base, workdir)
    corrupt(str(workdir / 'checkpoints' / '16'))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      result = tiny.run(str(workdir))
    _same(result, reference)
    unusable = [l for l in caplog.messages if 'is unusable' in l]
    assert len(unusable) == 1 and '/16' in unusable[0] and '\n' not in unusable[0], name
    # Nothing deleted: the bad checkpoint was moved aside, by name.
    assert [n.split('-')[0] for n in os.listdir(workdir / 'unusable_checkpoints')] == ['16']


def test_when_no_checkpoint_is_usable_resume_fails_listing_each_and_deletes_nothing(tmp_path):
  _partial_run(tmp_path)
  for step in (8, 12, 16):
    _bitflip(str(tmp_path / 'checkpoints' / str(step)), step)
  before = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                  for d, _, fs in os.walk(tmp_path) for f in fs if not f.startswith('.'))
  with pytest.raises(ck.CheckpointError, match='no usable checkpoint.*step 16.*step 12.*step 8'):
    tiny.run(str(tmp_path))
  after = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                 for d, _, fs in os.walk(tmp_path) for f in fs if not f.startswith('.'))
  assert before == after


def test_a_partial_metrics_line_is_dropped_with_a_warning(tmp_path, reference, caplog):
  _partial_run(tmp_path)
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 17, "train/lo')
  with caplog.at_level(logging.WARNING):
    _same(tiny.run(str(tmp_path)), reference)
  assert any('not a complete JSON row' in m for m in caplog.messages)


def test_resume_never_refuses_checkpoints_and_force_rewrites_config(tmp_path):
  _partial_run(tmp_path)
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  with pytest.raises(ValueError, match=r"resume='never' but .* holds the checkpoints .*\[8, 12, 16\]"):
    tiny.run(str(tmp_path), resume='never')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before
  from research.train import metric_writers
  metric_writers.write_run_config(str(tmp_path), dict(lr=0.05))
  from research.train import trainer as t
  with pytest.raises(ValueError, match='different config'):
    t.check_resume(str(tmp_path), dict(lr=0.07), 'auto')
  # force: the run continues and config.json says what it runs now.
  state_cfg = dict(lr=0.07)
  orig = trainer_lib.Trainer.__init__

  def with_config(self, *a, **kw):
    orig(self, *a, **dict(kw, run_config=state_cfg))
  trainer_lib.Trainer.__init__ = with_config
  try:
    tiny.run(str(tmp_path), resume='force', num_steps=20)
  finally:
    trainer_lib.Trainer.__init__ = orig
  assert json.load(open(tmp_path / 'config.json'))['config'] == state_cfg


@pytest.mark.parametrize('change,named', [
    (dict(lr=0.1), 'learning_rate'), (dict(batch_size=8), 'batch_size'),
    (dict(l2=1e-3), 'l2')])
def test_a_resume_with_another_optimizer_setting_is_refused_unless_forced(tmp_path, change,
                                                                          named):
  _partial_run(tmp_path)
  with pytest.raises(ValueError, match=f'differs from this one: .*{named}'):
    tiny.run(str(tmp_path), **change)
  tiny.run(str(tmp_path), resume='force', num_steps=20, **change)


def test_a_changed_rate_of_an_optimizer_without_injected_numbers_is_refused(tmp_path):
  from research import optim
  from research.train import state as state_lib
  from research.data import pipeline
  from tests.train.models import TinyMLP
  import jax
  x, y = tiny.data()
  model = TinyMLP()
  c = trainer_lib.default_config()
  c.update(dict(progress=False, tensorboard=False))

  def fit(lr):
    state = state_lib.TrainState.create(apply_fn=model.apply, variables=model.init(
        jax.random.key(0), x[:2]), tx=optim.sgd(lr), rng=jax.random.key(1))
    return trainer_lib.Trainer(c, str(tmp_path)).fit(
        state, pipeline.TrainLoader(pipeline.ArraySource(x, y), 16), num_steps=4)
  fit(0.1)
  with pytest.raises(ValueError, match="optimizer's first update"):
    fit(0.2)


def test_a_second_process_on_a_live_workdir_exits_naming_the_holder(tmp_path, reference):
  proc = _spawn(tmp_path, FAULT_DELAY=0.15)
  lock = tmp_path / '.lock'
  deadline = time.time() + 120
  while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
    time.sleep(0.05)
  with pytest.raises(ck.WorkdirLocked, match=f'in use by process {proc.pid}'):
    tiny.run(str(tmp_path))
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  rows = [l for l in open(tmp_path / 'metrics.jsonl')]
  assert len(rows) == len(set(rows))  # no duplicated rows
  _same(tiny.run(str(tmp_path)), reference)  # complete: nothing more to train


def test_disk_full_fails_cleanly_and_resumes_identical(tmp_path, reference):
  if os.geteuid() != 0 or not shutil.which('mount'):
    pytest.skip('disk-full needs a small tmpfs, which needs root; not root here')
  mnt = tmp_path / 'small'
  mnt.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=24k', 'tmpfs', str(mnt)]).returncode:
    pytest.skip('disk-full: mounting a tmpfs failed (no CAP_SYS_ADMIN)')
  try:
    with pytest.raises(OSError):
      tiny.run(str(mnt / 'run'))
    assert not [n for n in os.listdir(mnt / 'run' / 'checkpoints') if n.startswith('.')]
    shutil.copytree(mnt / 'run', tmp_path / 'moved')  # more space, same run
  finally:
    subprocess.run(['umount', str(mnt)])
  _same(tiny.run(str(tmp_path / 'moved')), reference)


def test_nonfinite_steps_are_logged_and_a_nonfinite_snapshot_is_not_written(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    with pytest.raises(trainer_lib.NonFiniteError):
      tiny.run(str(tmp_path / 'g'), lr=1e12, early=False, max_nonfinite_in_row=2)
  assert any(re_ok(m) for m in caplog.messages)
  import jax
  trainer = trainer_lib.Trainer(trainer_lib.default_config(), str(tmp_path / 's'))
  result = tiny.run(None, num_steps=2, early=False)
  bad = result.state.replace(params=jax.tree.map(lambda p: p * np.nan, result.state.params))
  with pytest.raises(trainer_lib.NonFiniteError, match='no snapshot was written'):
    trainer._save_snapshot(bad, 2, dict(snapshot_steps=[]))
  assert not os.path.exists(tmp_path / 's' / 'snapshots')


def re_ok(message):
  import re
  return re.search(r"step \d+: non-finite loss or a gradient \(nonfinite_check='grads'\)",
                   message)


def test_a_data_error_leaves_no_run_folder(tmp_path):
  from research.data import pipeline

  class Broken(pipeline.ArraySource):
    def read(self, indices):
      raise OSError('data file unreadable')
  x, y = tiny.data()
  c = trainer_lib.default_config()
  c.update(dict(progress=False, tensorboard=False))
  from research.train import state as state_lib
  from tests.train.models import TinyMLP
  from research import optim
  import jax
  model = TinyMLP()
  state = state_lib.TrainState.create(apply_fn=model.apply, variables=model.init(
      jax.random.key(0), x[:2]), tx=optim.sgd(0.1), rng=jax.random.key(1))
  with pytest.raises(OSError, match='unreadable'):
    trainer_lib.Trainer(c, str(tmp_path / 'run'), run_config=dict(a=1)).fit(
        state, pipeline.TrainLoader(Broken(x, y), 16), num_steps=4)
  assert not (tmp_path / 'run').exists()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_one_writer_and_a_lost_peer_ends_the_survivor_cleanly(tmp_path):
  env = dict(FAULT_COORDINATOR=f'127.0.0.1:{_free_port()}', FAULT_PARALLEL='sharded',
             FAULT_DELAY=0.2, FAULT_STEPS=400, FAULT_HEARTBEAT=10,
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  procs = [_spawn(tmp_path, FAULT_PROCESS_ID=i, **env) for i in range(2)]
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 200
  while time.time() < deadline and not (metrics.exists() and len(metrics.read_text()) > 0):
    time.sleep(0.1)
  time.sleep(1.0)
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  _, err = procs[0].communicate(timeout=120)
  took = time.time() - killed
  # The survivor ends within the heartbeat timeout (10 s) plus polling, with
  # status 75 and one line: when its next collective fails (the usual case)
  # or when its peer watch misses the peer's beats first (5 s).
  assert procs[0].returncode == 75, err[-3000:]
  assert ('multihost: process 0 of 2 stopped' in err
          or 'multihost: process 1 of 2 has not been heard from' in err), err[-3000:]
  assert took < 10 + 20
  procs[1].wait()
  rows = open(metrics).read().splitlines()
  assert rows and len(rows) == len(set(rows))  # process 0 alone wrote metrics


def test_a_lost_peer_ends_a_survivor_outside_any_collective_within_the_heartbeat_timeout(
    tmp_path):
  # Both processes sit idle after initialization (no collective to fail):
  # the peer watch ends the survivor after 2.5 s without the peer's beats,
  # before JAX's coordination service (5 s heartbeat timeout) would abort it.
  env = dict(FAULT_COORDINATOR=f'127.0.0.1:{_free_port()}', FAULT_IDLE=300,
             FAULT_HEARTBEAT=5)
  procs = [_spawn(tmp_path, FAULT_PROCESS_ID=i, **env) for i in range(2)]
  for p in procs:  # both connected
    assert p.stdout.readline().strip() == 'idle', p.communicate()[1][-3000:]
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  _, err = procs[0].communicate(timeout=120)
  took = time.time() - killed
  assert procs[0].returncode == 75, err[-3000:]
  assert 'multihost: process 1 of 2 has not been heard from' in err, err[-3000:]
  assert 'heartbeat' not in err.lower() and took < 5, (took, err[-3000:])
  procs[1].wait()
