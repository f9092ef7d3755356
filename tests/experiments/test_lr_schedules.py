"""The lr_schedules study: config checks, the optimizers of the arms, the
plateau hook, the smoke scale end to end (runs, no recompilation per seed,
rerun, refused workdir)."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lr_schedules as config_lib
from experiments import common
from experiments import lr_schedules
from tests.experiments import helpers

@pytest.mark.parametrize('field, value', [
    ('race.arms', 'constant,warp_drive'),
    ('race.arms', ''),
    ('race.arms', 'power,power'),
    ('grid.names', 'power,nope'),
    ('race.model', 'resnet'),
    ('data.batch_size', 5000),
    ('data.validation_count', 4000),
    ('race.epochs', 3),  # < 2 * cyclic_num_cycles
    ('log_every', 0),
    ('schedules.plateau_factor', 1.5),
    ('schedules.plateau_patience', -1),
    ('schedules.piecewise_epochs', (15, 5)),
    ('schedules.piecewise_scales', (1.0, 0.5)),
    ('schedules.piecewise_scales', (1.0, 0.0, 0.5)),  # no rate after a zero
    ('schedules.exponential_s_epochs', 0.0),
    ('train.steps_per_dispatch', 0),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    lr_schedules.validate(config)


def test_default_config_is_valid_and_unknown_scales_fail():
  lr_schedules.validate(config_lib.get_config())
  with pytest.raises(ValueError, match="unknown scale 'huge'"):
    config_lib.get_config('huge')


def test_each_arms_optimizer_applies_the_rate_the_study_records():
  # A constant gradient 1 under SGD with momentum m: the trace after update
  # k is sum_{j<k} m^j, so update_k / trace_k is minus the rate applied.
  config = config_lib.get_config()
  p, race = config.schedules, config.race
  h = lr_schedules.Horizon(0.05, 8, 3)
  fractional = config_lib.get_config().schedules
  fractional.sgdr_t_mult = 1.5  # not a program constant: the schedule is the program
  arms = {name: arm.schedule(p, h) for name, arm in lr_schedules.ARMS.items()}
  arms['sgdr_fractional'] = lr_schedules.ARMS['sgdr'].schedule(fractional, h)
  assert not arms['sgdr_fractional'].in_state and arms['sgdr'].in_state
  txs = {name: lr_schedules.race_tx(race, s) for name, s in arms.items()}

  @jax.jit
  def rates():
    out = {}
    for name, tx in txs.items():
      params = {'w': jnp.zeros(())}
      grads = {'w': jnp.ones(())}

      def step(state, _, tx=tx, params=params, grads=grads):
        updates, state = tx.update(grads, state, params)
        return state, updates['w']
      _, updates = jax.lax.scan(step, tx.init(params), None, length=h.steps)
      trace = jnp.cumsum(race.momentum ** jnp.arange(h.steps))
      out[name] = -updates / trace
    return out

  got = jax.device_get(rates())
  steps = np.arange(1, h.steps + 1)
  for name, s in arms.items():
    np.testing.assert_allclose(got[name], lr_schedules.applied_rates(s, steps),
                               rtol=2e-5, atol=1e-9, err_msg=name)
  # The rates move where the schedules say they do.
  assert got['warmup_cosine'][0] == 0.0
  assert got['piecewise'][5 * 3] == pytest.approx(0.5 * 0.05, rel=1e-6)
  assert got['piecewise'][5 * 3 - 1] == pytest.approx(0.05, rel=1e-6)


def test_performance_hook_lowers_the_rate_in_the_optimizer_state():
  config = config_lib.get_config('smoke')
  p = config.schedules
  p.plateau_patience, p.plateau_factor = 2, 0.5
  hook = lr_schedules.performance_hook(p)
  tx = lr_schedules.race_tx(config.race, lr_schedules.Schedule(0.1))

  class Trainer:
    def host_state(self, state):
      return state

  class State:  # the part of a TrainState the hook touches
    def __init__(self, opt_state):
      self.opt_state = opt_state

    def replace(self, opt_state):
      return State(opt_state)

  state = State(tx.init({'w': jnp.zeros(3)}))
  rates = []
  # Improves twice, then stalls: after `patience` = 2 stalled epochs the rate
  # halves, after 2 more it halves again.
  for loss in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95):
    state = hook(Trainer(), state, {'validation': {'loss': loss}})
    rates.append(float(state.opt_state.hyperparams['learning_rate']))
  np.testing.assert_allclose(rates, [0.1, 0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_grid_performance_curve_follows_the_scripted_validation_loss():
  config = config_lib.get_config('smoke')
  h = lr_schedules.Horizon(1.0, 8, 2)
  # Stalls from epoch 2 on; patience 1: each stalled epoch halves the rate,
  # which applies from the next epoch.
  validation = jnp.asarray([1.0, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
  rates = np.asarray(lr_schedules.plateau_rates(config.schedules, h, validation))
  per_epoch = rates[::2]
  np.testing.assert_allclose(per_epoch, [1, 1, 1, 0.5, 0.25, 0.125, 0.0625, 0.03125])


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke study, with the compilations of each of its runs counted."""
  workdir = str(tmp_path_factory.mktemp('lr_schedules_smoke'))
  config = config_lib.get_config('smoke')
  results, compiles = helpers.run_counting_compiles(lr_schedules.run, config, workdir)
  return config, workdir, results, compiles


def test_smoke_runs_end_to_end(smoke):
  config, workdir, results, _ = smoke
  for name in ('config.json', 'results.json', 'results.md', 'schedules_grid.png',
               'training_curves.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  json.loads(open(os.path.join(workdir, 'results.json')).read())
  md = open(os.path.join(workdir, 'results.md')).read()
  assert 'final validation loss' in md and 'cyclic cosine' in md
  assert 'the batch order are the same for every seed' in md
  # One folder per run: a grid for the scheduled arm, a run per seed for
  # performance scheduling, and the curves of part 1.
  runs = sorted(os.listdir(os.path.join(workdir, 'runs')))
  assert runs == ['grid', 'race_exponential', 'race_performance_seed0',
                  'race_performance_seed1']
  for run in runs:
    status = json.load(open(os.path.join(workdir, 'runs', run, 'status.json')))
    assert status['status'] == 'complete', run

  # Every schedule of the grid, each starting where its rule says.
  grid = results['grid']
  assert set(grid) == set(lr_schedules.ARMS)
  g = config.grid
  assert grid['exponential']['rates'][0] == pytest.approx(g.eta0)
  assert grid['warmup_cosine']['rates'][0] == 0.0
  spe = g.steps_per_epoch
  assert grid['piecewise']['rates'][5 * spe] == pytest.approx(0.5 * g.eta0)
  assert grid['piecewise']['rates'][5 * spe - 1] == pytest.approx(g.eta0)

  # The recorded rate is the schedule's value for the update just made
  # (count = step - 1), in the units of the notes.
  r, s = config.race, config.schedules
  spe = results['steps_per_epoch']
  seeds = results['race']['exponential']
  assert [x['seed'] for x in seeds] == [0, 1]
  steps = np.asarray(seeds[0]['lr_steps'])
  expected = r.eta0 * 0.1 ** ((steps - 1) / (s.exponential_s_epochs * spe))
  np.testing.assert_allclose(seeds[0]['learning_rate'], expected, rtol=1e-5)
  # The replicas of the grid are different runs (initialisations).
  assert seeds[0]['train_loss'] != seeds[1]['train_loss']
  # Performance scheduling only ever lowers the rate, by whole factors.
  for run in results['race']['performance']:
    rates = np.asarray(run['learning_rate'])
    assert np.all(np.diff(rates) <= 0)
    k = np.log(rates / r.eta0) / np.log(s.plateau_factor)
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)
  # Training does something: the training loss falls for every arm and seed.
  for runs in results['race'].values():
    for run in runs:
      assert run['train_loss'][-1] < 0.8 * run['train_loss'][0]


def test_a_second_seed_of_an_arm_compiles_nothing(smoke):
  _, _, _, compiles = smoke
  assert sum(compiles.values()) > 0  # the counter sees this study's compilations
  # Performance scheduling trains one run per seed: the second reuses the
  # first one's programs (same model object, equal optim.make optimizers).
  assert compiles['race_performance_seed1'] == 0, compiles


def test_a_rerun_skips_the_finished_runs_and_gives_the_same_results(smoke):
  config, workdir, results, _ = smoke
  before = {run: os.stat(os.path.join(workdir, 'runs', run, 'metrics.jsonl')).st_mtime_ns
            for run in ('race_exponential', 'race_performance_seed0')}
  saved = open(os.path.join(workdir, 'results.json')).read()
  again = lr_schedules.run(config, workdir)
  assert open(os.path.join(workdir, 'results.json')).read() == saved
  assert again['race'] == results['race']
  for run, mtime in before.items():
    assert os.stat(os.path.join(workdir, 'runs', run, 'metrics.jsonl')).st_mtime_ns == mtime


def test_an_interrupted_study_resumes_to_the_same_results(smoke, tmp_path, caplog):
  # The smoke study again, as if killed in the middle of the grid and of
  # the first performance-scheduling run (their last checkpoints gone): the
  # hook's plateau counters come back with the checkpoint.
  config, workdir, _, _ = smoke
  copy = tmp_path / 'study'
  shutil.copytree(workdir, copy)
  last = str(config.race.epochs * json.load(open(copy / 'results.json'))['steps_per_epoch'])
  for name in ('race_exponential', 'race_performance_seed0'):
    run = copy / 'runs' / name
    shutil.rmtree(run / 'checkpoints' / last)
    (run / 'result.json').unlink()
    (run / 'status.json').write_text(json.dumps(dict(status='running')))
  with caplog.at_level(logging.INFO):
    lr_schedules.run(config, str(copy))
  assert 'performance (seed 0): resumed from step 120' in caplog.text
  assert 'exponential (2 seeds): resumed from step 120' in caplog.text
  assert 'run race_performance_seed1: complete, skipped' in caplog.text
  assert (copy / 'results.json').read_text() == open(os.path.join(workdir, 'results.json')).read()


def test_a_workdir_of_another_config_is_refused_untouched(tmp_path):
  common.Study(str(tmp_path), config_lib.get_config('smoke'))
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
  other = config_lib.get_config('smoke')
  other.race.eta0 = 0.1
  with pytest.raises(common.StudyConfigError, match=r'first difference: race\.eta0'):
    lr_schedules.run(other, str(tmp_path))
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == before
