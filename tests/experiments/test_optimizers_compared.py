"""The optimizers_compared study: config checks, the rate-in-the-state
mechanism it relies on, and the smoke scale end to end."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import optimizers_compared as config_lib
from experiments import optimizers_compared as study
from research import optim


@pytest.mark.parametrize('field, value', [
    ('optimizers', 'sgd,lion'),
    ('optimizers', 'adam,adam'),
    ('models', 'resnet'),
    ('reference.models', 'mnist1d_rnn'),
    ('lr_factors', ()),
    ('lr_factors', (1.0, 0.0)),
    ('lr_factors', (1.0, 1.0)),
    ('default_lr.adam', -1e-3),
    ('batch_size', 5000),
    ('batch_size', 0),
    ('validation_count', 4000),
    ('num_seeds', 0),
    ('num_steps', 0),
    ('momentum', 1.0),
    ('adamw_weight_decay', -0.1),
    ('reference.learning_rate', 0.0),
    ('reference.batch_size', 4001),
    ('data.name', 'tfds:cifar10'),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.') + '='):
    study.validate(config)


def test_no_model_at_all_is_refused():
  config = config_lib.get_config('smoke')
  config.models, config.reference.models = '', ''
  with pytest.raises(ValueError, match=r'config\.models'):
    study.validate(config)


def test_every_scale_is_valid_and_unknown_scales_fail():
  for scale in (None, 'smoke', 'reference', 'paper'):
    study.validate(config_lib.get_config(scale))
  paper = config_lib.get_config('paper')
  assert paper.reference.num_steps == 8000 and paper.reference.learning_rate == 1e-2
  assert paper.reference.batch_size == 100
  assert set(config_lib.OPTIMIZERS) == set(study.LABELS)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


@pytest.mark.parametrize('name', config_lib.OPTIMIZERS)
def test_rate_set_in_the_state_equals_a_fresh_optimizer(name):
  # The sweep builds one optimizer per name and sets each rate in its state
  # (so that rates share a compilation); this must train exactly like the
  # optimizer built with that rate.
  config = config_lib.get_config()
  rate = 3.0 * config.default_lr[name]
  shared = study.make_optimizer(name, config, config.default_lr[name])
  fresh = study.make_optimizer(name, config, rate)
  params = {'w': jnp.array([0.5, -1.0, 2.0]), 'b': jnp.array(0.3)}
  s_shared = optim.set_hyperparams(shared.init(params), learning_rate=rate)
  s_fresh = fresh.init(params)
  p_shared = p_fresh = params
  for t in range(3):
    grads = jax.tree.map(lambda p: jnp.sin(p * (t + 1)), p_shared)
    u1, s_shared = shared.update(grads, s_shared, p_shared)
    u2, s_fresh = fresh.update(grads, s_fresh, p_fresh)
    p_shared = optim.apply_updates(p_shared, u1)
    p_fresh = optim.apply_updates(p_fresh, u2)
  np.testing.assert_allclose(p_shared['w'], p_fresh['w'], rtol=1e-6)
  np.testing.assert_allclose(p_shared['b'], p_fresh['b'], rtol=1e-6)
  assert not np.allclose(p_shared['w'], params['w'])  # it did move


def test_smoke_runs_end_to_end(tmp_path):
  config = config_lib.get_config('smoke')
  results = study.run(config, str(tmp_path))
  for name in ('config.json', 'results.json', 'results.md', 'loss_curves_mnist1d_mlp.png',
               'best_curves_mnist1d_mlp.png', 'lr_sweep_mnist1d_mlp.png', 'reference.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert set(saved['sweep']['mnist1d_mlp']) == {'sgd', 'adam'}
  md = (tmp_path / 'results.md').read_text()
  assert 'reference setting' in md and 'Adam' in md and 'SGD' in md

  sweep = results['runs']['sweep']['mnist1d_mlp']
  summary = results['sweep']['mnist1d_mlp']
  for name, per_rate in sweep.items():
    # Different rates give different runs from the same start: the rate set
    # in the state is the one used.
    a, b = per_rate[0][0], per_rate[1][0]
    assert not a['diverged'] and not b['diverged']
    assert a['final']['train']['loss'] != b['final']['train']['loss']
    s = summary[name]
    # Training works: at the chosen rate the whole-split training loss falls
    # well below its value at initialization (about ln 10 for 10 classes).
    assert per_rate[s['best']][0]['curves']['train']['loss'][-1] < math.log(10) - 0.3
    # The chosen rate is the best on validation, and is reported on test.
    vals = [cell['validation']['mean_std'][0] for cell in s['cells']]
    assert s['best'] == int(np.argmax(vals))
    chosen = per_rate[s['best']][0]['final']['test']['accuracy']
    assert s['cells'][s['best']]['test']['mean_std'][0] == pytest.approx(chosen)
  ref = results['reference']['mnist1d_mlp']
  assert ref['test']['mean_std'][0] > 0.3  # far above chance (0.1) after 100 steps
  assert ref['paper'] == pytest.approx(0.68)
