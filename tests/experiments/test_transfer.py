"""The transfer study: config checks, the lower-layers / head split, and the
smoke scale end to end (frozen layers unchanged, the cached arm training the
same head as the frozen one, no compilation per seed, resume, refused
workdir)."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from configs import transfer as config_lib
from experiments import common
from experiments import transfer as study
from research import models
from tests.experiments import helpers

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
    ('log_every', 0),
    ('train.checkpoint_every', -1),
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


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  """The smoke study, with the compilations of each of its runs counted."""
  workdir = str(tmp_path_factory.mktemp('transfer_smoke'))
  config = config_lib.get_config('smoke')
  results, compiles = helpers.run_counting_compiles(study.run, config, workdir)
  return config, workdir, results, compiles


def test_smoke_runs_end_to_end(smoke):
  config, workdir, results, _ = smoke
  for name in ('config.json', 'results.json', 'results.md', 'accuracy.png', 'epoch_time.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  saved = json.loads(open(os.path.join(workdir, 'results.json')).read())
  assert set(saved['summary']['arms']) == set(config_lib.ARMS)
  md = open(os.path.join(workdir, 'results.md')).read()
  assert 'faster' in md and 'in the same order' in md
  # One folder per run, every one complete.
  seeds = study.seeds(config)
  assert seeds == [0, 1]
  expected = {'pretrain', 'timing'} | {f'{a}_seed{s}' for a in config_lib.ARMS for s in seeds}
  assert set(os.listdir(os.path.join(workdir, 'runs'))) == expected
  for run in expected:
    status = json.load(open(os.path.join(workdir, 'runs', run, 'status.json')))
    assert status['status'] == 'complete', run
  # The pretrain grid trained distinct replicas, and both learned the source task.
  accs = [s['source_test_accuracy'] for s in results['per_seed']]
  assert all(a > 0.4 for a in accs), accs
  a, b = (study.load_pretrained(workdir, config, s) for s in seeds)
  assert not np.array_equal(a['head']['kernel'], b['head']['kernel'])

  for seed in seeds:
    pretrained = study.load_pretrained(workdir, config, seed)
    final = {arm: study.load_final_params(workdir, arm, seed) for arm in config_lib.ARMS}
    arms = results['per_seed'][seeds.index(seed)]['arms']
    lower = lambda p: {k: v for k, v in p.items() if k != 'head'}  # noqa: E731
    # Frozen lower layers are bit-identical to the pretrained ones after
    # training; fine-tuning moves them.
    jax.tree.map(np.testing.assert_array_equal, lower(final['frozen']), lower(pretrained))
    assert not arms['frozen']['lower_changed_from_pretrained']
    assert arms['finetune']['lower_changed_from_pretrained']
    # Both transfer arms trained a head (it moved from its initialization,
    # which scratch shares); the cached arm trained the same head as the
    # frozen one. The features are computed in another compiled program than
    # the frozen model's forward pass, so they may differ in the last bit.
    parts = study.build_parts(config)
    start = study.arm_state(config, parts, 'frozen', pretrained, seed).params
    assert not np.allclose(final['frozen']['head']['kernel'], start['head']['kernel'])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 final['cached']['head'], final['frozen']['head'])
    assert abs(arms['cached']['test_accuracy'] - arms['frozen']['test_accuracy']) <= 0.01
  timing = results['timing']
  assert all(v > 0 for v in timing['median'].values())
  assert len(timing['frozen_over_cached']['per_round']) == config.timing.rounds


def test_a_second_seed_and_the_timing_rounds_compile_nothing(smoke):
  _, _, _, compiles = smoke
  assert compiles['pretrain'] > 0  # the counter sees this study's compilations
  # scratch and finetune share the model object and the optimizer; a second
  # seed and the timing rounds reuse every program.
  assert compiles['finetune_seed0'] == 0, compiles
  assert all(compiles[f'{arm}_seed1'] == 0 for arm in config_lib.ARMS), compiles
  assert compiles['timing'] == 0, compiles


def test_an_interrupted_study_resumes_to_the_same_results(smoke, tmp_path, caplog):
  # The smoke study again, as if killed in the middle of pretraining (its
  # last checkpoint gone, the one at step 50 of 100 kept) and at the end of
  # the frozen arm's training (before its result was written).
  config, workdir, _, _ = smoke
  copy = tmp_path / 'study'
  shutil.copytree(workdir, copy)
  pretrain = copy / 'runs' / 'pretrain'
  shutil.rmtree(pretrain / 'checkpoints' / str(config.pretrain.num_steps))
  assert sorted(os.listdir(pretrain / 'checkpoints')) == ['50']
  for run in (pretrain, copy / 'runs' / 'frozen_seed0'):
    (run / 'result.json').unlink()
    (run / 'status.json').write_text(json.dumps(dict(status='running')))
  scratch = (copy / 'runs' / 'scratch_seed0' / 'metrics.jsonl').stat().st_mtime_ns
  with caplog.at_level(logging.INFO):
    study.run(config, str(copy))
  assert 'pretrain (2 seeds): resumed from step 50' in caplog.text
  assert 'frozen (seed 0): resumed from step 20' in caplog.text
  assert 'run timing: complete, skipped' in caplog.text
  assert (copy / 'runs' / 'scratch_seed0' / 'metrics.jsonl').stat().st_mtime_ns == scratch
  assert sorted(os.listdir(pretrain / 'checkpoints')) == ['100', '50']
  # Everything equal, the timings too (the timing run was complete, so skipped).
  assert (copy / 'results.json').read_text() == open(os.path.join(workdir, 'results.json')).read()


def test_a_workdir_of_another_config_is_refused_untouched(tmp_path):
  common.Study(str(tmp_path), config_lib.get_config('smoke'))
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
  other = config_lib.get_config('smoke')
  other.target.learning_rate = 1e-2
  with pytest.raises(common.StudyConfigError, match=r'first difference: target\.learning_rate'):
    study.run(other, str(tmp_path))
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == before
