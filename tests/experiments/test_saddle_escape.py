"""The saddle-escape study: config checks and the smoke scale end to end."""

import json
import os

import pytest

from configs import saddle_escape as config_lib
from experiments import saddle_escape


@pytest.mark.parametrize('field, value, match', [
    ('functions', 'saddle,nope', 'config.functions'),
    ('optimizers', 'gd,lbfgs', 'config.optimizers'),
    ('strict.dims', (1, 10), 'config.strict.dims'),
    ('strict.num_negative', 0, 'config.strict.num_negative'),
    ('strict.num_negative', 3, 'config.strict.num_negative'),  # > d = 2
    ('network.lanczos_order', 10**6, 'config.network.lanczos_order'),
    ('chain.dim', 1, 'config.chain.dim'),
    ('distances', (1e-3, -1.0), 'config.distances'),
])
def test_bad_config_names_the_field(field, value, match):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=match.replace('.', r'\.')):
    saddle_escape.validate(config)


def test_bad_function_arguments():
  with pytest.raises(ValueError, match='d=1'):
    saddle_escape.strict_saddle(1, 1)
  with pytest.raises(ValueError, match='k=4'):
    saddle_escape.strict_saddle(3, 4)
  with pytest.raises(ValueError, match='dim=1'):
    saddle_escape.saddle_chain(1)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_smoke_runs_end_to_end(tmp_path):
  config = config_lib.get_config('smoke')
  saddle_escape.validate(config)
  results = saddle_escape.run(config, str(tmp_path))
  for name in ('config.json', 'results.json', 'results.md', 'trajectories.png',
               'escape_vs_distance.png', 'escape_vs_dim.png', 'chain.png',
               'hessian_index.png', 'hessian_density.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  md = (tmp_path / 'results.md').read_text()
  assert '5x^2 - y^2' in md and 'Chain of 2 saddles' in md and 'MNIST-1D MLP' in md
  json.loads((tmp_path / 'results.json').read_text())
  rows = results['functions']['saddle_5']
  exact_saddle = -1  # distances = (1e-2, 1e-6, 0.0)
  # Claims the smoke run already shows: Newton never escapes, gd cannot leave
  # the exact saddle, the perturbation can, saddle-free Newton escapes.
  assert all(r['never'] == 1.0 for r in rows['newton']['by_distance'])
  assert rows['gd']['by_distance'][exact_saddle]['never'] == 1.0
  assert rows['perturbed_gd']['by_distance'][exact_saddle]['never'] == 0.0
  assert rows['saddle_free_newton']['by_distance'][0]['never'] == 0.0
  for row in results['network']['sgd']:
    assert row['lambda_min'] <= row['lambda_max']
    assert 0.0 <= row['index'] <= 1.0
