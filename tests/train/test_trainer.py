"""The Trainer: fit, evaluation, snapshots, guards, checkpoints and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.data import pipeline
from research.train import state as state_lib
from research.train import trainer as trainer_lib
from tests.train import helpers
from tests.train.models import TinyMLP

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(n=96, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
  return dict(x=x, y=y)


def _loader(data, batch_size=16):
  return pipeline.TrainLoader(pipeline.ArraySource(data['x'], data['y']), batch_size)


def _state(tx=None, batch_norm=True):
  model = TinyMLP(batch_norm=batch_norm)
  data = _data()
  variables = model.init(jax.random.key(0), data['x'][:2], train=False)
  return state_lib.TrainState.create(
      apply_fn=model.apply, variables=variables,
      tx=tx or optim.sgd(0.1, momentum=0.9), rng=jax.random.key(1))


def _config(**kw):
  c = trainer_lib.default_config()
  c.update(dict(num_steps=30, eval_batch_size=32, log_every=5,
                progress=False, tensorboard=False))
  c.update(kw)
  return c


def test_fit_learns_and_logs(tmp_path):
  data = _data()
  result = trainer_lib.Trainer(_config(eval_every=10, tensorboard=True), str(tmp_path),
                               run_config=dict(lr=0.1)).fit(
      _state(), _loader(data), eval_sets=dict(train=data))
  assert int(result.state.step) == 30
  assert [e['step'] for e in result.evals] == [10, 20, 30]
  assert result.evals[-1]['train']['accuracy'] > 0.8
  assert result.evals[-1]['train']['count'] == 96
  assert result.history[-1]['loss'] < result.history[0]['loss']
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [l['step'] for l in lines if 'train/loss' in l] == [5, 10, 15, 20, 25, 30]
  assert any('train/accuracy' in l for l in lines)
  assert os.listdir(tmp_path / 'tensorboard')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['30']
  info = json.load(open(tmp_path / 'config.json'))
  assert info['config'] == dict(lr=0.1)
  assert set(info['environment']) >= {'python', 'jax', 'flax', 'git_commit'}


def test_snapshots_are_taken_exactly_at_the_requested_steps(tmp_path):
  data = _data()
  result = trainer_lib.Trainer(_config(snapshot_steps=(7, 19, 30), log_every=4),
                               str(tmp_path)).fit(_state(), _loader(data))
  assert [s for s, _ in result.snapshots] == [7, 19, 30]
  # The last snapshot is the final state; the first is not.
  final = jax.tree.leaves(result.state.params)
  np.testing.assert_array_equal(jax.tree.leaves(result.snapshots[-1][1]['params'])[0], final[0])
  assert not np.array_equal(jax.tree.leaves(result.snapshots[0][1]['params'])[0], final[0])
  assert sorted(os.listdir(tmp_path / 'snapshots')) == [
      'step_00000007', 'step_00000019', 'step_00000030']


def test_steps_per_dispatch_gives_the_same_run():
  data = _data()
  a = trainer_lib.Trainer(_config()).fit(_state(), _loader(data))
  b = trainer_lib.Trainer(_config(steps_per_dispatch=4)).fit(_state(), _loader(data))
  for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('check', ['grads', 'loss'])
def test_nonfinite_steps_are_skipped_then_the_run_stops(tmp_path, check):
  data = _data()
  # A huge learning rate blows the loss up within a few steps.
  config = _config(num_steps=200, max_nonfinite_in_row=3, log_every=1, checkpoint_every=2,
                   nonfinite_check=check)
  with pytest.raises(trainer_lib.NonFiniteError,
                     match='3 steps in a row' if check == 'grads' else 'not finite|in a row'):
    trainer_lib.Trainer(config, str(tmp_path)).fit(
        _state(optim.sgd(1e12), batch_norm=False), _loader(data))
  # The last good checkpoint is still there and restores finite params.
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert steps
  from research.train import checkpoints
  ck = checkpoints.Checkpoints(str(tmp_path / 'checkpoints'))
  restored, _ = ck.restore(steps[-1], checkpoints.state_tree(_state(optim.sgd(1e12), False)))
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(restored['params']))


def test_nan_in_input_data_fails_before_the_first_step():
  data = _data()
  data['x'][5, 2] = np.nan
  with pytest.raises(ValueError, match="field 'x' of the training data holds 1 NaN"):
    trainer_lib.Trainer(_config()).fit(
        _state(), _loader(data))

  class Streamed:  # a source that is not in memory is checked batch by batch
    def __init__(self, x, y):
      self._inner = pipeline.ArraySource(x, y)

    def __len__(self):
      return len(self._inner)

    def read(self, indices):
      return self._inner.read(indices)

  with pytest.raises(ValueError, match="field 'x' of the first training batch holds 1 NaN"):
    trainer_lib.Trainer(_config()).fit(
        _state(), pipeline.TrainLoader(Streamed(data['x'], data['y']), 96))


@pytest.mark.parametrize('field,value,match', [
    ('parallel', 'spmd', 'parallel'),
    ('num_steps', 0, 'num_steps'),
    ('steps_per_dispatch', 0, 'steps_per_dispatch'),
    ('resume', 'maybe', 'resume'),
    ('snapshot_steps', (0, 5), 'snapshot_steps'),
    ('eval_batch_size', 10, 'not divisible by the 4 devices'),
])
def test_bad_config_fails_before_training(field, value, match):
  kw = {field: value}
  if field == 'eval_batch_size':
    kw['parallel'] = 'sharded'
  with pytest.raises(ValueError, match=match):
    trainer_lib.Trainer(_config(**kw))


def test_bad_run_arguments_and_batch_sizes_fail_before_training(tmp_path):
  data = _data()
  trainer = trainer_lib.Trainer(_config(parallel='sharded'), str(tmp_path))
  with pytest.raises(ValueError, match='batch_size=10 is not divisible by the 4 devices'):
    trainer.fit(_state(), _loader(data, batch_size=10))
  for kw, match in [(dict(num_steps=0), 'num_steps=0'), (dict(log_every=-1), 'log_every=-1'),
                    (dict(num_steps=5, snapshot_steps=(6,)), r'snapshot_steps=\[6\]')]:
    with pytest.raises(ValueError, match=match):
      trainer.fit(_state(), _loader(data), **kw)
  assert not os.listdir(tmp_path)  # nothing written


def test_run_length_logging_snapshots_and_learning_rate_do_not_recompile(tmp_path):
  data = _data()
  model = TinyMLP()
  variables = model.init(jax.random.key(0), data['x'][:2], train=False)

  def state(lr):
    return state_lib.TrainState.create(
        apply_fn=model.apply, variables=variables,
        tx=optim.make('sgd', lr, momentum=0.9), rng=jax.random.key(1))

  trainer = trainer_lib.Trainer(_config())
  trainer.fit(state(0.1), _loader(data), num_steps=4, log_every=2)  # compiles
  compiles = helpers.count_compiles()
  runs = [dict(num_steps=7, log_every=3, snapshot_steps=(2, 5)),
          dict(num_steps=9, log_every=1)]
  results = [trainer_lib.Trainer(_config(), str(tmp_path / str(i))).fit(
      state(lr), _loader(data), **kw) for i, (lr, kw) in enumerate(zip((0.05, 0.2), runs))]
  assert compiles == []  # new Trainers, lengths, intervals, snapshots, rates
  assert [h['step'] for h in results[0].history] == [3, 6, 7]
  assert [s for s, _ in results[0].snapshots] == [2, 5]
  np.testing.assert_allclose(results[1].history[-1]['learning_rate'], 0.2)


def test_refuses_to_resume_a_run_with_another_config(tmp_path):
  data = _data()
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(dict(config=dict(lr=0.1)), f)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError, match='different config'):
    trainer_lib.Trainer(_config(), str(tmp_path), run_config=dict(lr=0.2)).fit(
        _state(), _loader(data))
  assert sorted(os.listdir(tmp_path)) == before  # nothing written or deleted
  trainer_lib.Trainer(_config(resume='force', num_steps=2), str(tmp_path),
                      run_config=dict(lr=0.2)).fit(_state(), _loader(data))


def _run_tiny(workdir, env_extra, **popen):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', **env_extra)
  return subprocess.Popen([sys.executable, '-m', 'tests.train.run_tiny', workdir],
                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)


def _final(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_killed_and_resumed_run_ends_bit_identical(tmp_path):
  reference = _final(_run_tiny(str(tmp_path / 'ref'), {}))
  workdir = str(tmp_path / 'crash')
  proc = _run_tiny(workdir, dict(TINY_DELAY='0.15'))
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 200
  while time.time() < deadline:
    done = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []) if d.isdigit()]
    if done and max(map(int, done)) >= 20:
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert 20 <= killed_at < 60
  resumed = _final(_run_tiny(workdir, {}))
  assert resumed['step'] == 60
  assert resumed['params'] == reference['params']  # bit-identical


@pytest.mark.parametrize('parallel', ['none', 'sharded', 'pmap'])
def test_data_on_device_gives_the_same_run(parallel):
  data = _data()
  kw = dict(parallel=parallel, num_steps=12)
  a = trainer_lib.Trainer(_config(**kw)).fit(_state(), _loader(data))
  b = trainer_lib.Trainer(_config(data_on_device=True, steps_per_dispatch=5, **kw)).fit(
      _state(), _loader(data))
  for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert [h['step'] for h in b.history] == [5, 10, 12]


def test_fit_does_not_consume_the_callers_arrays():
  data = _data()
  state = _state()
  trainer = trainer_lib.Trainer(_config(num_steps=3))
  first = trainer.fit(state, _loader(data))
  second = trainer.fit(state, _loader(data))  # the same initial state again
  for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params)):
    np.testing.assert_array_equal(a, b)


def test_replicas_train_independent_seeds_at_once():
  data = _data()
  model = TinyMLP()
  tx = optim.sgd(0.1, momentum=0.9)
  init = lambda key: model.init(key, data['x'][:2], train=False)  # noqa: E731
  keys = jax.random.split(jax.random.key(5), 3)
  stacked = state_lib.create_replicas(apply_fn=model.apply, init_fn=init, tx=tx, keys=keys)
  config = _config(num_steps=8)
  result = trainer_lib.Trainer(config).fit(stacked, _loader(data), eval_sets=dict(train=data))
  assert len(result.evals[-1]['train']['accuracy']) == 3
  for i in range(3):  # replica i equals a separate run from the same key
    one = jax.tree.map(lambda x: x[i], stacked)
    single = trainer_lib.Trainer(_config(num_steps=8)).fit(one, _loader(data))
    for a, b in zip(jax.tree.leaves(single.state.params),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], result.state.params))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The replicas differ (different seeds).
  first = jax.tree.leaves(result.state.params)[0]
  assert not np.allclose(first[0], first[1])


def test_replicas_run_one_after_another_equal_separate_runs():
  # replica_loop='map': each replica runs the unbatched step, so SOAP's basis
  # refresh (a lax.switch on its count) stays a branch; every 2nd step here.
  data = _data()
  model = TinyMLP(batch_norm=False)
  init = lambda key: model.init(key, data['x'][:2], train=False)  # noqa: E731
  soap = optim.inject_hyperparams(optim.soap)
  rates = [0.01, 0.05]
  key = jax.random.key(3)
  stacked = state_lib.create_replicas(
      apply_fn=model.apply, init_fn=init,
      tx=soap(learning_rate=rates[0], precondition_frequency=2), keys=jnp.stack([key, key]),
      hyperparams=dict(learning_rate=rates))
  grid = trainer_lib.Trainer(_config(replica_loop='map')).fit(stacked, _loader(data),
                                                               num_steps=6)
  for i, lr in enumerate(rates):
    one = state_lib.create_replicas(apply_fn=model.apply, init_fn=init, keys=key[None],
                                    tx=soap(learning_rate=lr, precondition_frequency=2))
    one = jax.tree.map(lambda x: x[0], one)
    single = trainer_lib.Trainer(_config()).fit(one, _loader(data), num_steps=6)
    for a, b in zip(jax.tree.leaves(single.state.params),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], grid.state.params))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(*[jax.tree.leaves(grid.state.params)[-1][i] for i in (0, 1)])
  with pytest.raises(ValueError, match=r"config.train.replica_loop='scan'.*'vmap', 'map'"):
    trainer_lib.Trainer(_config(replica_loop='scan'))


def test_a_grid_of_learning_rates_and_seeds_equals_separate_runs():
  data = _data()
  model = TinyMLP(batch_norm=False)
  init = lambda key: model.init(key, data['x'][:2], train=False)  # noqa: E731
  tx = optim.make('sgd', 0.1, momentum=0.9)
  rates = [0.05, 0.3]
  keys = jax.random.split(jax.random.key(0), 2)
  grid_keys = jnp.concatenate([keys, keys])
  stacked = state_lib.create_replicas(
      apply_fn=model.apply, init_fn=init, tx=tx, keys=grid_keys,
      hyperparams=dict(learning_rate=[rates[0]] * 2 + [rates[1]] * 2))
  grid = trainer_lib.Trainer(_config()).fit(stacked, _loader(data), num_steps=6)
  for i, (lr, key) in enumerate([(r, k) for r in rates for k in keys]):
    one = state_lib.create_replicas(apply_fn=model.apply, init_fn=init,
                                    tx=optim.make('sgd', lr, momentum=0.9), keys=key[None])
    one = jax.tree.map(lambda x: x[0], one)
    single = trainer_lib.Trainer(_config()).fit(one, _loader(data), num_steps=6)
    for a, b in zip(jax.tree.leaves(single.state.params),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], grid.state.params))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('flat_params', [False, True])
def test_fit_leaves_the_callers_state_usable(flat_params):
  # The steps donate the placed state: placing it must copy, so the state
  # the caller passed (e.g. the start of every seed of a study) stays alive,
  # unchanged, and a second fit from it ends where the first did.
  data, state = _data(), _state()
  before = jax.tree.map(np.array, jax.tree.leaves(state))
  config = _config(num_steps=6, checkpoints=False, flat_params=flat_params)
  first = trainer_lib.Trainer(config).fit(state, _loader(data))
  assert not any(x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array))
  for b, a in zip(before, jax.tree.leaves(state)):
    np.testing.assert_array_equal(b, np.asarray(a))
  second = trainer_lib.Trainer(config).fit(state, _loader(data))
  for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
