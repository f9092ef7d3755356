"""The trajectory study: the textbook's runs reproduced exactly, Rosenbrock, bad input."""

import json
import os
import shutil

import pytest

from configs import optimizer_trajectories as cfg_lib
from experiments import common
from experiments import optimizer_trajectories as study


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trajectories')
  return workdir, study.run(cfg_lib.get_config('smoke'), str(workdir))


def test_textbook_runs_are_reproduced_exactly(smoke):
  _, results = smoke
  assert len(results['textbook']) == len(study.TEXTBOOK_RUNS)
  for row in results['textbook']:
    assert row['max_abs_diff'] < 1e-9, row['label']
    assert len(row['trajectory']) == 21  # x_0 .. x_20
  by_label = {r['label']: r for r in results['textbook']}
  # The textbook's observations: eta = 0.6 makes gd diverge along x2; momentum
  # with the same eta converges.
  assert abs(by_label['gd, eta=0.6']['final_point'][1]) > 100
  assert by_label['momentum, eta=0.6, beta=0.5']['final_loss'] < 1e-3


def test_outputs_and_rosenbrock(smoke):
  workdir, results = smoke
  for name in ('results.md', 'results.json', 'config.json', 'textbook.png', 'rosenbrock.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  table = open(os.path.join(workdir, 'results.md')).read()
  assert 'adagrad(learning_rate=0.4, initial_accumulator_value=0.0, eps=1e-06)' in table
  rows = {r['label']: r for r in results['rosenbrock']}
  assert set(rows) == {'sgd', 'adam', 'rmsprop', 'lbfgs'}
  start_loss = study.rosenbrock([-1.5, 2.0])
  for r in rows.values():
    assert r['final_loss'] < start_loss, r['label']
  assert rows['lbfgs']['final_loss'] < 1e-6
  assert rows['adam']['learning_rate'] in (1e-3, 1e-2)
  assert json.load(open(os.path.join(workdir, 'results.json')))['rosenbrock'][0]['trajectory']


@pytest.mark.parametrize('field,value,match', [
    ('rosenbrock.optimizers', 'sgd,adamm', "rosenbrock.optimizers='adamm'"),
    ('rosenbrock.steps', 0, 'rosenbrock.steps'),
    ('textbook.steps', 0, 'textbook.steps'),
    ('rosenbrock.learning_rates', (0.1, -1.0), 'rosenbrock.learning_rates'),
    ('rosenbrock.optimizers', 'sgd,adam,sgd', 'distinct names'),
    ('rosenbrock.optimizers', ',', 'rosenbrock.optimizers'),
])
def test_bad_config(field, value, match):
  config = cfg_lib.get_config('smoke')
  group, key = field.split('.')
  config[group][key] = value
  with pytest.raises(ValueError, match=match):
    study.validate(config)


def test_an_interrupted_study_reruns_only_the_unfinished_part(smoke, tmp_path):
  # A kill leaves the part it was in 'running' and no results.json; the
  # rerun skips every complete part and ends with the same results.json.
  done, _ = smoke
  assert sorted(p.name for p in (done / 'runs').iterdir()) == [
      'rosenbrock-adam', 'rosenbrock-lbfgs', 'rosenbrock-rmsprop', 'rosenbrock-sgd',
      'textbook']
  workdir = tmp_path / 'killed'
  shutil.copytree(done, workdir)
  (workdir / 'results.json').unlink()
  unfinished = workdir / 'runs' / 'rosenbrock-sgd'
  (unfinished / 'result.json').unlink()
  (unfinished / 'status.json').write_text(json.dumps(dict(status='running')))
  finished = {p: p.stat().st_mtime_ns for p in (workdir / 'runs').glob('*/result.json')}
  study.run(cfg_lib.get_config('smoke'), str(workdir))
  assert {p: p.stat().st_mtime_ns for p in finished} == finished
  assert json.loads((unfinished / 'status.json').read_text())['status'] == 'complete'
  assert (json.loads((workdir / 'results.json').read_text())
          == json.loads((done / 'results.json').read_text()))


def test_a_workdir_of_another_config_is_refused(smoke):
  workdir, _ = smoke
  other = cfg_lib.get_config('smoke')
  other.rosenbrock.steps = 101
  with pytest.raises(common.StudyConfigError, match=r'first difference: rosenbrock\.steps'):
    study.run(other, str(workdir))
