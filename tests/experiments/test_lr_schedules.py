"""The lr_schedules study: config checks, the plateau hook, the smoke scale end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lr_schedules as config_lib
from experiments import lr_schedules
from research import optim


@pytest.mark.parametrize('field, value', [
    ('train.arms', 'constant,warp_drive'),
    ('train.arms', ''),
    ('grid.names', 'power,nope'),
    ('train.model', 'resnet'),
    ('train.batch_size', 5000),
    ('train.validation_count', 4000),
    ('train.epochs', 3),  # < 2 * cyclic_num_cycles
    ('schedules.plateau_factor', 1.5),
    ('schedules.plateau_patience', -1),
    ('schedules.piecewise_epochs', (15, 5)),
    ('schedules.piecewise_scales', (1.0, 0.5)),
    ('schedules.exponential_s_epochs', 0.0),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    lr_schedules.validate(config)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_default_config_is_valid():
  lr_schedules.validate(config_lib.get_config())


class _Trainer:
  def host_state(self, state):
    return state


def test_performance_hook_lowers_the_rate_in_the_optimizer_state():
  config = config_lib.get_config('smoke')
  p = config.schedules
  p.plateau_patience, p.plateau_factor = 2, 0.5
  hook = lr_schedules.performance_hook(p)
  tx = optim.inject_hyperparams(optim.sgd)(learning_rate=0.1, momentum=0.9)

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
    state = hook(_Trainer(), state, {'validation': {'loss': loss}})
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


def test_smoke_runs_end_to_end(tmp_path):
  config = config_lib.get_config('smoke')
  results = lr_schedules.run(config, str(tmp_path))
  for name in ('config.json', 'results.json', 'results.md', 'schedules_grid.png',
               'training_curves.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  json.loads((tmp_path / 'results.json').read_text())
  md = (tmp_path / 'results.md').read_text()
  assert 'final validation loss' in md and 'cyclic cosine' in md

  # Every schedule of the grid, each starting where its rule says.
  grid = results['grid']
  assert set(grid) == set(lr_schedules.ARMS)
  g = config.grid
  assert grid['exponential']['rates'][0] == pytest.approx(g.eta0)
  assert grid['warmup_cosine']['rates'][0] == 0.0
  spe = g.steps_per_epoch
  assert grid['piecewise']['rates'][5 * spe] == pytest.approx(0.5 * g.eta0)
  assert grid['piecewise']['rates'][5 * spe - 1] == pytest.approx(g.eta0)

  # The learning rate read from the optimizer state is the schedule's value
  # for the update just made (count = step - 1).
  t, s = config.train, config.schedules
  spe = results['steps_per_epoch']
  run = results['race']['exponential'][0]
  steps = np.asarray(run['lr_steps'])
  expected = t.eta0 * 0.1 ** ((steps - 1) / (s.exponential_s_epochs * spe))
  np.testing.assert_allclose(run['learning_rate'], expected, rtol=1e-5)
  # Performance scheduling only ever lowers the rate, by whole factors.
  rates = np.asarray(results['race']['performance'][0]['learning_rate'])
  assert np.all(np.diff(rates) <= 0)
  k = np.log(rates / t.eta0) / np.log(s.plateau_factor)
  np.testing.assert_allclose(k, np.round(k), atol=1e-4)
  # Training does something: the training loss falls for every arm.
  for runs in results['race'].values():
    assert runs[0]['train_loss'][-1] < 0.8 * runs[0]['train_loss'][0]
