"""The transfer study: config checks, the lower-layers / head split, and the
smoke scale end to end (frozen layers unchanged, the cached arm training the
same head as the frozen one)."""

import json
import os

import jax
import numpy as np
import pytest

from configs import transfer as config_lib
from experiments import transfer as study
from research import models


@pytest.mark.parametrize('field, value', [
    ('arms', 'scratch,distill'),
    ('arms', ''),
    ('arms', 'frozen,frozen'),
    ('model', 'resnet'),
    ('source_classes', (0,)),
    ('source_classes', (0, 1, 1)),
    ('target_classes', (4, 5, 6)),   # 4 is a source digit
    ('target_classes', (5, 10)),
    ('target.examples_per_class', 100_000),
    ('target.examples_per_class', 0),
    ('target.batch_size', 51),       # smoke: 10 examples x 5 classes
    ('target.epochs', 0),
    ('target.learning_rate', 0.0),
    ('pretrain.batch_size', 100_000),
    ('pretrain.num_steps', 0),
    ('lower_layers', 'head/.*|hidden_0/.*'),   # would freeze the new head
    ('lower_layers', 'conv_.*'),               # matches nothing in the MLP
    ('lower_layers', '(unclosed'),
    ('timing.rounds', 0),
    ('data_name', 'tfds:mnist'),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.') + '='):
    study.validate(config)


def test_every_scale_is_valid_and_unknown_scales_fail():
  for scale in (None, 'smoke', 'paper'):
    study.validate(config_lib.get_config(scale))
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


@pytest.mark.parametrize('name', ['mnist1d_mlp', 'mnist1d_cnn'])
def test_head_on_the_lower_layers_outputs_is_the_whole_model(name):
  mc = models.default_config(name)
  mc.num_classes = 5
  model, variables = models.init_model(mc, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (7, 40))
  feats = study.head_input(model, variables, x)
  assert feats.ndim == 2 and feats.shape[0] == 7 and feats.shape[1] != 5
  top = study.Head(5).apply({'params': {'head': variables['params']['head']}}, feats)
  np.testing.assert_allclose(top, model.apply(variables, x), rtol=1e-5, atol=1e-6)


def test_few_shot_draws_per_class_without_repeats():
  y = np.repeat(np.arange(5), 30)
  x = np.arange(150)[:, None].astype(np.float32)
  xs, ys = study.few_shot(x, y, 7, seed=3)
  assert np.bincount(ys).tolist() == [7] * 5
  assert len(np.unique(xs)) == 35
  np.testing.assert_array_equal(y[xs[:, 0].astype(int)], ys)


def test_smoke_runs_end_to_end(tmp_path):
  config = config_lib.get_config('smoke')
  results = study.run(config, str(tmp_path))
  for name in ('config.json', 'results.json', 'results.md', 'accuracy.png', 'epoch_time.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert set(saved['summary']['arms']) == set(config_lib.ARMS)
  assert 'faster' in (tmp_path / 'results.md').read_text()

  seed = results['per_seed_full'][0]
  pretrained, arms = seed['pretrained'], seed['arms']
  lower = lambda p: {k: v for k, v in p.items() if k != 'head'}
  # Frozen lower layers are bit-identical to the pretrained ones after
  # training; fine-tuning moves them.
  jax.tree.map(np.testing.assert_array_equal, lower(arms['frozen']['params']), lower(pretrained))
  assert not arms['frozen']['lower_changed_from_pretrained']
  assert arms['finetune']['lower_changed_from_pretrained']
  # Both transfer arms trained a head (it moved from its initialization,
  # which scratch shares); the cached arm trained the same head as the
  # frozen one. The features are computed in another compiled program than
  # the frozen model's forward pass, so they may differ in the last bit.
  start = study.Runner(config).arm_state('frozen', pretrained, config.seed).params
  assert not np.allclose(arms['frozen']['params']['head']['kernel'], start['head']['kernel'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               arms['cached']['params']['head'], arms['frozen']['params']['head'])
  assert abs(arms['cached']['test_accuracy'] - arms['frozen']['test_accuracy']) <= 0.01
  timing = results['timing']
  assert all(v > 0 for v in timing['median'].values())
  assert len(timing['frozen_over_cached']['per_round']) == config.timing.rounds
