"""The generalization study: config checks, the fitter, the smoke scale end to end."""

import json
import os

import numpy as np
import pytest

from configs import generalization as config_lib
from experiments import common
from experiments import generalization
from tests.experiments import helpers


@pytest.mark.parametrize('field, value', [
    ('seeds', 0),
    ('capacity.degrees', (1, 3, 40)),
    ('capacity.few', 0),
    ('capacity.num_points', 7),  # does not divide steps
    ('capacity.learning_rate', -0.1),
    ('selection.num_folds', 21),  # > num_train = 20
    ('selection.num_folds', 1),
    ('selection.validation_fraction', 1.0),
    ('selection.validation_fraction', 0.01),  # rounds to no validation example
    ('selection.weight_decays', (0.0, -1.0)),
    ('selection.degrees', (3,)),
    ('weight_decay.input_dim', 0),
    ('weight_decay.weight_decays', ()),
    ('capacity.batch_size', 11),  # > capacity.few = 10: no silent clamp
    ('selection.batch_size', 16),  # > 15, the holdout's training part
    ('weight_decay.batch_size', 21),
    ('capacity.degrees', (1, 3, 3)),  # two runs of one name
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    generalization.validate(config)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_default_config_is_valid():
  generalization.validate(config_lib.get_config())


def test_batch_plan_visits_each_example_once_per_epoch():
  plan = generalization.batch_plan(10, 3, steps=9, seed=0)
  assert plan.shape == (9, 3)
  for epoch in range(3):  # 3 batches per epoch, the tenth example dropped
    rows = plan[3 * epoch:3 * epoch + 3].ravel()
    assert len(set(rows.tolist())) == 9
  assert generalization.batch_plan(10, 0, steps=2, seed=0).shape == (2, 10)


def test_fit_reaches_the_least_squares_solution_and_masks_features():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((50, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
  masks = np.array([[1, 1, 1], [1, 0, 0]])
  params, curves = generalization.fit(
      x, y, {}, [0.0, 0.0], steps=2000, batch_size=0, learning_rate=0.1, masks=masks)
  np.testing.assert_allclose(params['w'][0], [1.0, -2.0, 0.5], atol=1e-4)
  assert params['b'][0] == pytest.approx(0.3, abs=1e-4)
  assert curves['train'][0, -1] < 1e-6
  # The masked model never moves the weights of its masked features.
  np.testing.assert_array_equal(params['w'][1, 1:], [0.0, 0.0])
  assert curves['train'][1, -1] > 1.0


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('generalization_smoke')
  config = config_lib.get_config('smoke')
  return config, workdir, generalization.run(config, str(workdir))


def test_smoke_runs_end_to_end(smoke):
  config, tmp_path, results = smoke
  for name in ('config.json', 'results.json', 'results.md', 'capacity.png',
               'selection.png', 'weight_decay.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  json.loads((tmp_path / 'results.json').read_text())
  md = (tmp_path / 'results.md').read_text()
  assert '5-fold mean' in md and 'Weight decay in high dimension' in md

  def final(key, which):
    return np.array([r[which][-1] for r in results['capacity'][key]['runs']])

  floor = 0.5 * config.noise**2
  # Overfitting: degree 20 on 10 samples fits below the noise and tests far above.
  assert np.all(final('few/20', 'train') < floor)
  assert np.median(final('few/20', 'test') / final('few/20', 'train')) > 10
  # A good fit: degree 3 on many samples tests as it trains, near the noise.
  assert np.all(final('many/3', 'test') / final('many/3', 'train') < 1.5)
  assert np.all(final('many/3', 'test') < 2 * floor)
  # Underfitting: degree 1 cannot get its training loss down.
  assert np.all(final('many/1', 'train') > 100 * final('many/3', 'train'))

  # Model selection: the K-fold statistics are those of the folds, and
  # cross-validation picks the true degree.
  for sweep in results['selection'].values():
    for r in sweep['seeds']:
      folds = np.asarray(r['folds'])
      assert folds.shape == (config.selection.num_folds, len(sweep['candidates']))
      np.testing.assert_allclose(r['kfold_mean'], folds.mean(0), rtol=1e-6)
      np.testing.assert_allclose(r['kfold_std'], folds.std(0), rtol=1e-6)
  for r in results['selection']['degree']['seeds']:
    assert r['chosen']['kfold'] == 'degree 3'

  # Weight decay on d = 200, n = 20: lambda = 3 tests far better than 0.
  decays = results['weight_decay']['weight_decays']
  none, three = decays.index(0.0), decays.index(3.0)
  for r in results['weight_decay']['runs']:
    assert r['test'][three][-1] < 0.01 * r['test'][none][-1]
    assert r['train'][none][-1] < r['train'][three][-1]  # lambda = 0 interpolates
    assert r['w_norm'][three] < r['w_norm'][none]


def test_an_interrupted_study_reruns_only_the_unfinished_part(smoke, tmp_path):
  # A kill leaves the part it was in 'running' and no results.json; the
  # rerun skips every complete part and ends with the same results.json.
  config, done, _ = smoke
  assert sorted(p.name for p in (done / 'runs').iterdir()) == sorted(
      name for name, _ in generalization.parts(config))
  got, want = helpers.rerun_after_a_kill(generalization.run, config_lib.get_config('smoke'),
                                         done, tmp_path / 'killed', 'weight_decay-seed=1')
  assert got == want


def test_a_workdir_of_another_config_is_refused(smoke):
  _, workdir, _ = smoke
  other = config_lib.get_config('smoke')
  other.noise = 0.2
  with pytest.raises(common.StudyConfigError, match='first difference: noise'):
    generalization.run(other, str(workdir))
