"""The batch_size study: config checks and the smoke scale end to end."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import batch_size as config_lib
from experiments import batch_size
from experiments import common


@pytest.mark.parametrize('field, value', [
    ('batch_sizes', '1,10,huge'),
    ('batch_sizes', '0,full'),
    ('batch_sizes', '1,2000'),  # > data.num_train = 1500
    ('learning_rates', (0.1, 0.1)),  # one rate per batch size
    ('learning_rates', (0.1, 0.1, -1.0, 0.1)),
    ('dispatch', 'scan,warp'),
    ('batch_sizes', '1,10,10,full'),  # two runs of one name
    ('epochs', 0),
    ('data.num_train', 0),
    ('data.condition_number', 0.5),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    batch_size.validate(config)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_default_config_is_valid():
  batch_size.validate(config_lib.get_config())


def test_feature_scales_give_the_condition_number():
  scales = batch_size.feature_scales(5, 100.0)
  assert scales[0] == 1.0
  assert (scales[0] / scales[-1]) ** 2 == pytest.approx(100.0)
  assert np.all(np.diff(scales) < 0)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('batch_size_smoke')
  config = config_lib.get_config('smoke')
  return config, workdir, batch_size.run(config, str(workdir))


def test_smoke_runs_end_to_end(smoke):
  config, tmp_path, results = smoke
  for name in ('config.json', 'results.json', 'results.md', 'curves.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  json.loads((tmp_path / 'results.json').read_text())
  assert 'ms / epoch (step)' in (tmp_path / 'results.md').read_text()
  arms = results['arms']
  n = config.data.num_train
  assert [a['batch_size'] for a in arms.values()] == [1, 10, 100, n]
  for arm in arms.values():
    for mode in ('scan', 'step'):
      r = arm['runs'][mode][0]
      assert r['examples'][-1] == config.epochs * (n // arm['batch_size']) * arm['batch_size']
      assert np.all(np.diff(r['seconds']) >= 0)
      assert r['loss'][-1] < 0.2 * r['loss'][0]  # every arm learns
    # The two dispatch modes make the same updates.
    np.testing.assert_allclose(arm['runs']['scan'][0]['loss'], arm['runs']['step'][0]['loss'],
                               rtol=1e-4)
  # Per example, small batches make more progress: after one epoch batch 1 is
  # below the full batch's loss (one gradient step).
  one = lambda arm: arm['runs']['scan'][0]['loss'][  # noqa: E731
      arm['runs']['scan'][0]['examples'].index(n)]
  assert one(arms['1']) < one(arms['full'])
  # Per epoch, batch 1 makes 1500 calls from Python, the full batch one: it
  # takes far more wall clock.
  step = lambda name: arms[name]['runs']['step'][0]['seconds_per_epoch']  # noqa: E731
  assert step('1') > 10 * step('full')


def test_each_seed_arm_and_mode_is_a_run(smoke):
  config, workdir, _ = smoke
  runs = sorted(p.name for p in (workdir / 'runs').iterdir())
  assert runs == sorted(f'seed=0-batch={b}-{m}' for b in ('1', '10', '100', 'full')
                        for m in ('scan', 'step'))


def _without_timings(tree):
  if isinstance(tree, dict):
    return {k: _without_timings(v) for k, v in tree.items()
            if 'seconds' not in k}
  if isinstance(tree, list):
    return [_without_timings(v) for v in tree]
  return tree


def test_an_interrupted_study_reruns_only_the_unfinished_run(smoke, tmp_path):
  # A kill leaves the run it was in 'running' and no results.json; the rerun
  # skips every complete run and ends with the same results (timings aside).
  config, done, _ = smoke
  workdir = tmp_path / 'killed'
  shutil.copytree(done, workdir)
  (workdir / 'results.json').unlink()
  unfinished = workdir / 'runs' / 'seed=0-batch=full-step'
  (unfinished / 'result.json').unlink()
  (unfinished / 'status.json').write_text(json.dumps(dict(status='running')))
  finished = {p: p.stat().st_mtime_ns for p in (workdir / 'runs').glob('*/result.json')}
  batch_size.run(config_lib.get_config('smoke'), str(workdir))
  assert {p: p.stat().st_mtime_ns for p in finished} == finished
  assert json.loads((unfinished / 'status.json').read_text())['status'] == 'complete'
  assert (_without_timings(json.loads((workdir / 'results.json').read_text()))
          == _without_timings(json.loads((done / 'results.json').read_text())))


def test_a_workdir_of_another_config_is_refused(smoke):
  _, workdir, _ = smoke
  other = config_lib.get_config('smoke')
  other.epochs = 4
  with pytest.raises(common.StudyConfigError, match='first difference: epochs'):
    batch_size.run(other, str(workdir))
