"""The regularization study: arms, config checks, the smoke scale end to end."""

import json
import math
import os

import pytest

from configs import regularization as config_lib
from experiments import regularization as study


def test_arm_settings():
  config = config_lib.get_config('smoke')
  assert study.arm_settings(config, 'dropout_0.2').dropout == 0.2
  assert study.arm_settings(config, 'l2').l2 == config.l2
  assert study.arm_settings(config, 'max_norm').max_norm == config.max_norm
  # Arms that differ only in hooks or data share the compiled step of `none`.
  for arm in ('early_stopping', 'augment'):
    assert study.arm_settings(config, arm).shape == study.arm_settings(config, 'none').shape


@pytest.mark.parametrize('field, value', [
    ('arms', 'none,dropout_1.5'),
    ('arms', 'none,dropout_x'),
    ('arms', 'none,mixup'),
    ('arms', 'none,none'),
    ('arms', 'none,augment'),        # MNIST-1D has no images to crop
    ('arms', ''),
    ('optimizer.name', 'adamx'),
    ('optimizer.momentum', 1.0),
    ('l2', 0.0),
    ('max_norm', -1.0),
    ('mc_samples', 0),
    ('patience', 0),
    ('early_stopping_monitor', 'test/loss'),
    ('num_seeds', 0),
    ('eval_every', 0),
    ('data.batch_size', 200),        # more than the 180 training examples
    ('data.num_train', 1),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  if field == 'data.batch_size':
    config.train.batch_size = value
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    study.validate(config)


def test_early_stopping_needs_a_validation_set_and_unknown_scale_fails():
  config = config_lib.get_config('smoke')
  config.data.validation_fraction = 0.0
  with pytest.raises(ValueError, match=r'config\.data\.validation_fraction'):
    study.validate(config)
  config.arms = 'none,l2'
  study.validate(config)  # without early stopping no validation set is needed
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_default_paper_and_cifar10_configs_are_valid():
  for scale in (None, 'paper', 'cifar10'):
    study.validate(config_lib.get_config(scale))
  assert 'augment' in config_lib.get_config('cifar10').arms


def test_smoke_runs_end_to_end(tmp_path):
  config = config_lib.get_config('smoke')
  results = study.run(config, str(tmp_path))
  for name in ('config.json', 'results.json', 'results.md', 'curves.png', 'errors.png',
               'mc_dropout.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  json.loads((tmp_path / 'results.json').read_text())
  md = (tmp_path / 'results.md').read_text()
  assert 'MC dropout against the deterministic network' in md
  assert 'one seed: no claim' in md  # one seed never supports a claim

  per_arm = results['per_arm']
  assert list(per_arm) == study.arms_of(config)
  for arm, runs in per_arm.items():
    r = runs[0]
    assert 0.0 <= r['train_error'] <= 1.0 and 0.0 <= r['test_error'] <= 1.0, arm
    assert math.isfinite(r['deterministic']['nll']), arm
    assert r['curves']['test']['step'][-1] == r['steps'], arm
  # The projection holds every hidden unit inside the ball; without it the
  # He-initialized units are outside it.
  assert per_arm['max_norm'][0]['max_unit_norm'] <= config.max_norm * (1 + 1e-5)
  assert per_arm['none'][0]['max_unit_norm'] > config.max_norm
  # MC dropout only for dropout arms, with finite metrics.
  assert 'mc_dropout' in per_arm['dropout_0.5'][0] and 'mc_dropout' not in per_arm['none'][0]
  mc = per_arm['dropout_0.5'][0]['mc_dropout']
  assert 0.0 <= mc['error'] <= 1.0 and math.isfinite(mc['nll']) and 0.0 <= mc['ece'] <= 1.0
  # Early stopping keeps the weights of its best evaluation.
  es = per_arm['early_stopping'][0]
  assert es['best_step'] in es['curves']['validation']['step']
