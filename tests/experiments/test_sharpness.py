"""The sharpness study: smoke end to end, SAM's two steps, resume, bad input."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sharpness as cfg_lib
from experiments import common
from experiments import sharpness as study
from research import data as data_lib
from research.train import losses
from research.train import state as state_lib
from research.train import trainer as trainer_lib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sharpness_smoke'))
  config = cfg_lib.get_config('smoke')
  config.train.progress = False
  config.lock()  # as the command line hands it over
  return config, workdir, study.run(config, workdir)


def test_smoke_runs_every_part_and_writes_the_table_and_figures(smoke):
  config, workdir, results = smoke
  for name in ('results.md', 'results.json', 'config.json', 'eos.png', 'flat_sharp.png',
               'landscape_1d.png', 'landscape_2d.png', 'interpolation.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  table = open(os.path.join(workdir, 'results.md')).read()
  for heading in ('## Edge of stability', '## Flat and sharp minima',
                  '## Loss barriers on linear paths', '## What the numbers say'):
    assert heading in table
  eos = results['eos']
  assert sorted(eos) == ['eos_adam_eta=0.001', 'eos_gd_eta=0.1']
  for r in eos.values():
    h = r['history']
    assert h['steps'] == list(range(10, r['steps_run'] + 1, 10))
    assert len(h['step_losses']) == r['steps_run']
    assert all(np.isfinite(h['sharpness'])) and min(h['sharpness']) > 0
  assert eos['eos_adam_eta=0.001']['threshold'] == pytest.approx(38 / 1e-3)
  assert len(eos['eos_adam_eta=0.001']['history']['preconditioned']) == len(
      eos['eos_adam_eta=0.001']['history']['steps'])
  flat = results['flat_summary']
  assert sorted(flat) == ['flat_mnist1d_mlp_large_batch', 'flat_mnist1d_mlp_sam',
                          'flat_mnist1d_mlp_small_batch']
  for r in results['flat'].values():
    assert len(r['sharpness']) == len(r['trace']) == len(r['test_error']) == config.flat.num_seeds
    assert np.asarray(r['curve']).shape == (config.flat.num_seeds, config.flat.curve_points)
  land = results['landscape']
  kinds = [p['kind'] for p in land['paths']]
  m = config.landscape.num_snapshots
  assert kinds.count('consecutive') == 2 * (m - 1) and kinds.count('independent') == m
  assert all(p['barrier'] >= 0 for p in land['paths'])  # the path's ends lie on the line
  assert np.asarray(land['surface']).shape == (config.landscape.points_2d,) * 2
  # The slices' centre is the trained model: alpha = 0 in the 1-D and 2-D plots.
  mid = config.landscape.points_2d // 2
  np.testing.assert_allclose(land['curve_1d'][config.landscape.points_1d // 2],
                             land['surface'][mid][mid], rtol=1e-5)


def test_a_rerun_skips_every_finished_run(smoke):
  config, workdir, results = smoke
  status = json.load(open(os.path.join(workdir, 'runs', 'landscape', 'status.json')))
  again = study.run(config, workdir)
  assert json.load(open(os.path.join(workdir, 'runs', 'landscape', 'status.json'))) == status
  assert again['flat_summary'] == results['flat_summary']


def test_sam_arm_is_the_two_step_formula():
  # Two SAM updates through the Trainer: each is the ascent w + rho g / |g| and
  # the step from w with the gradient at the ascent point, on the same batch.
  config = cfg_lib.get_config('smoke')
  config.train.checkpoints = False
  config.train.progress = False
  config.train.steps_per_dispatch = 2
  config.flat.cosine_decay = False  # a constant rate in the formula below
  f = config.flat
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 5)).astype(np.float32)
  y = rng.integers(0, 3, size=32).astype(np.int32)
  loader = data_lib.TrainLoader(data_lib.ArraySource(x, y), 8, seed=0)
  w0 = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  apply_fn = lambda variables, inputs: inputs @ variables['params']['w']  # noqa: E731
  state = state_lib.TrainState.create(apply_fn=apply_fn, variables={'params': {'w': w0}},
                                      tx=study.flat_tx(config, 'sam'), rng=jax.random.key(0))
  fit = trainer_lib.Trainer(config.train).fit(state, study.EachBatchTwice(loader), num_steps=4,
                                              log_every=2)

  def loss(w, batch):
    return jnp.mean(losses.softmax_cross_entropy(batch['x'] @ w, batch['y']))

  w, trace = np.asarray(w0, np.float64), 0.0
  for batch in [b for b, _ in zip(loader.batches(0), range(2))]:
    g = jax.grad(loss)(jnp.asarray(w, jnp.float32), batch)
    w_adv = w + f.sam_rho * np.asarray(g) / np.linalg.norm(g)
    g_adv = np.asarray(jax.grad(loss)(jnp.asarray(w_adv, jnp.float32), batch))
    trace = g_adv + f.momentum * trace
    w = w - f.learning_rate * trace
  np.testing.assert_allclose(fit.state.params['w'], w, rtol=1e-5, atol=1e-6)


def test_an_interrupted_eos_run_resumes_to_the_same_history(tmp_path):
  config = cfg_lib.get_config('smoke')
  config.eos.max_steps = 30
  config.train.checkpoint_every = 10
  ds = study._dataset(config, config.eos.num_train)
  problem = study.eos_problem(config, ds)
  segment = study.make_segment(config, problem[0], problem[1],
                               study.eos_tx(config, 'gd', 0.1), 'gd')
  whole = study.eos_run(config, problem, segment, 'gd', 0.1, str(tmp_path / 'a'))
  short = config.copy_and_resolve_references()
  short.eos.max_steps = 20  # "killed" after step 20, its progress saved
  study.eos_run(short, problem, segment, 'gd', 0.1, str(tmp_path / 'b'))
  resumed = study.eos_run(config, problem, segment, 'gd', 0.1, str(tmp_path / 'b'))
  assert resumed['history'] == whole['history']
  assert resumed['steps_run'] == 30


def test_a_workdir_of_another_config_is_refused(tmp_path):
  config = cfg_lib.get_config('smoke')
  common.Study(str(tmp_path), config)
  other = cfg_lib.get_config('smoke')
  other.eos.etas = (0.05,)
  with pytest.raises(common.StudyConfigError, match='first difference: eos.etas'):
    study.run(other, str(tmp_path))


@pytest.mark.parametrize('field,value,match', [
    ('eos.model.name', 'transformer', "config.eos.model: .*'transformer'"),
    ('eos.optimizers', 'gd,lion', "config.eos.optimizers='lion'"),
    ('eos.etas', (0.1, 0.0), r'config.eos.etas=\(0.1, 0.0\)'),
    ('eos.adam_etas', (-1e-3,), 'config.eos.adam_etas'),
    ('eos.lanczos_order', 10**6, r'config.eos.lanczos_order=1000000 .*\[1, 2698\]'),
    ('flat.lanczos_order', 10**6, 'config.flat.lanczos_order'),
    ('flat.models', 'mnist1d_mlp,resnet', "config.flat.models='resnet'"),
    ('flat.arms', 'sam,adam', "config.flat.arms='adam'"),
    ('landscape.direction', 'spectral', "config.landscape.direction='spectral'"),
    ('landscape.model.name', 'mlp', 'config.landscape.model.name'),
    ('parts', 'eos,hessian', "config.parts='hessian'"),
])
def test_bad_config_fails_before_training(field, value, match):
  config = cfg_lib.get_config('smoke')
  node = config
  *head, last = field.split('.')
  for k in head:
    node = node[k]
  node[last] = value
  with pytest.raises(ValueError, match=match):
    study.validate(config)


def test_unknown_scale():
  with pytest.raises(ValueError, match="unknown scale 'huge'"):
    cfg_lib.get_config('huge')
