"""The optimizers_compared study: config checks, rates in the state, the SAM
and schedule-free arms, the smoke scale end to end, a killed study resumed."""

import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import optimizers_compared as config_lib
from experiments import common
from experiments import optimizers_compared as study
from research import data as data_lib
from research import optim
from research.train import state as state_lib
from research.train import trainer as trainer_lib
from tests.experiments import helpers


@pytest.mark.parametrize('field, value', [
    ('optimizers', 'sgd,lion'),
    ('optimizers', 'adam,adam'),
    ('modern_optimizers', 'muon,shampoo'),
    ('models', 'resnet'),
    ('reference.models', 'mnist1d_rnn'),
    ('lr_factors', ()),
    ('lr_factors', (1.0, 0.0)),
    ('lr_factors', (1.0, 1.0)),
    ('modern_lr_factors', (1.0, -3.0)),
    ('default_lr.adam', -1e-3),
    ('default_lr.prodigy', 0.0),
    ('data.batch_size', 5000),
    ('data.batch_size', 0),
    ('data.validation_count', 4000),
    ('num_seeds', 0),
    ('num_steps', 0),
    ('momentum', 1.0),
    ('adamw_weight_decay', -0.1),
    ('sam_rho', 0.0),
    ('reference.learning_rate', 0.0),
    ('reference.batch_size', 4001),
    ('data.name', 'tfds:cifar10'),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.') + '='):
    study.validate(config)


def test_no_model_or_optimizer_at_all_is_refused():
  config = config_lib.get_config('smoke')
  config.models, config.reference.models = '', ''
  with pytest.raises(ValueError, match=r'config\.models'):
    study.validate(config)
  config = config_lib.get_config('smoke')
  config.optimizers = ''
  with pytest.raises(ValueError, match=r'config\.optimizers'):
    study.validate(config)
  config.modern_optimizers = 'sam'  # the modern ones alone are a sweep
  study.validate(config)


def test_every_scale_is_valid_and_unknown_scales_fail():
  assert config_lib.SCALES == ('smoke', 'modern', 'reference', 'paper')
  for scale in (None,) + config_lib.SCALES:
    study.validate(config_lib.get_config(scale))
  paper = config_lib.get_config('paper')
  assert paper.reference.num_steps == 8000 and paper.reference.learning_rate == 1e-2
  assert paper.reference.batch_size == 100
  modern = config_lib.get_config('modern')
  assert study.arms(modern)[-5:] == list(config_lib.MODERN_OPTIMIZERS)
  assert set(config_lib.OPTIMIZERS + config_lib.MODERN_OPTIMIZERS) == set(study.LABELS)
  # The study's user fields are not run fields of the Trainer.
  assert 'num_steps' not in config_lib.get_config().train
  assert 'batch_size' not in config_lib.get_config().train
  with pytest.raises(ValueError, match="unknown scale 'huge'"):
    config_lib.get_config('huge')


@pytest.mark.parametrize('name', config_lib.OPTIMIZERS + config_lib.MODERN_OPTIMIZERS)
def test_rate_set_in_the_state_equals_a_fresh_optimizer(name):
  # A grid builds one optimizer per name and sets each replica's rate in its
  # state; this must train exactly like the optimizer built with that rate.
  config = config_lib.get_config()
  rate = 3.0 * config.default_lr[name]
  shared = study.make_optimizer(config, name, config.default_lr[name])
  fresh = study.make_optimizer(config, name, rate)
  if name in config_lib.OPTIMIZERS:  # optim.make: equal programs, no recompiles
    assert shared == fresh
  params = {'w': jnp.array([[0.5, -1.0], [2.0, 0.1]]), 'b': jnp.array([0.3, -0.2])}
  s_shared = optim.set_hyperparams_in(shared.init(params), learning_rate=rate)
  s_fresh = fresh.init(params)
  p_shared = p_fresh = params
  for t in range(4):
    grads = jax.tree.map(lambda p: jnp.sin(p * (t + 1)), p_shared)
    u1, s_shared = shared.update(grads, s_shared, p_shared)
    u2, s_fresh = fresh.update(grads, s_fresh, p_fresh)
    p_shared = optim.apply_updates(p_shared, u1)
    p_fresh = optim.apply_updates(p_fresh, u2)
  for a, b in zip(jax.tree.leaves(p_shared), jax.tree.leaves(p_fresh)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not np.allclose(p_shared['w'], params['w'])  # it did move


def _tiny_grid_state(config, name, rates, model_name='mnist1d_mlp'):
  model = study.build_model(model_name)
  grid = study.Grid('g', model_name, name, study.make_optimizer(config, name, rates[0]), 4,
                    [(lr, 0) for lr in rates], None, {})
  return model, study.grid_state(grid, model)


def test_the_sam_arm_takes_both_gradients_on_the_same_batch():
  # Two Trainer steps of the SAM arm (each batch given twice) are one SAM
  # step: w' = w - lr grad L_b(w + rho g / |g|), g = grad L_b(w), on batch b.
  config = config_lib.get_config('smoke')
  config.train.checkpoints = False
  config.train.progress = False
  lr, rho = 0.05, config.sam_rho
  model, state = _tiny_grid_state(config, 'sam', [lr])
  ds = data_lib.get_dataset(config.data)
  loader = study.EachBatchTwice(ds.train)
  trainer = trainer_lib.Trainer(config.train)
  fit = trainer.fit(state, loader, num_steps=4, log_every=2)
  module, _ = model
  x, y = jnp.asarray(ds.train.source.x), jnp.asarray(ds.train.source.y)  # source indices
  w = jax.tree.map(lambda v: v[0], state.params)

  def loss(params, rows):
    logits = module.apply({'params': params}, x[rows])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[rows, None], 1))

  grad = jax.jit(jax.grad(loss))
  # SGD + momentum 0.9 (trace = g + 0.9 trace) for two SAM steps.
  trace = jax.tree.map(jnp.zeros_like, w)
  for t in range(2):  # SAM step t on the loader's batch t
    rows = next(ds.train.indices(t))
    g = grad(w, rows)
    norm = jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g)))
    adv = jax.tree.map(lambda p, v: p + rho * v / norm, w, g)
    g_adv = grad(adv, rows)
    trace = jax.tree.map(lambda t, v: v + config.momentum * t, trace, g_adv)
    w = jax.tree.map(lambda p, t: p - lr * t, w, trace)
  got = jax.tree.map(lambda v: v[0], fit.state.params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(w)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  # Started at an odd step, the loader gives the second copy first.
  twice = list(zip(range(5), loader.indices(3)))
  np.testing.assert_array_equal(twice[0][1], next(ds.train.indices(1)))
  np.testing.assert_array_equal(twice[1][1], next(ds.train.indices(2)))
  np.testing.assert_array_equal(twice[2][1], next(ds.train.indices(2)))


def test_schedule_free_is_evaluated_at_its_averaged_params_per_replica():
  config = config_lib.get_config('smoke')
  _, state = _tiny_grid_state(config, 'schedule_free_adamw', [1e-3, 3e-2])
  grads = jax.tree.map(jnp.ones_like, state.params)
  opt_state, params = state.opt_state, state.params
  update = jax.jit(jax.vmap(state.tx.update))
  for _ in range(3):
    updates, opt_state = update(grads, opt_state, params)
    params = optim.apply_updates(params, updates)
  state = state.replace(params=params, opt_state=opt_state)
  got = study.schedule_free_eval_params(state)
  for i in range(2):
    one = jax.tree.map(lambda v, i=i: v[i], state)
    want = optim.contrib.schedule_free_eval_params(
        study._schedule_free_state(one.opt_state), one.params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a[i], b, rtol=1e-6)
  assert not np.allclose(got['head']['kernel'], params['head']['kernel'])


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('optimizers_compared_smoke')
  config = config_lib.get_config('smoke')
  config.train.progress = False
  return config, workdir, study.run(config, str(workdir))


def test_smoke_runs_end_to_end(smoke):
  config, tmp_path, results = smoke
  for name in ('config.json', 'results.json', 'results.md', 'loss_curves_mnist1d_mlp.png',
               'best_curves_mnist1d_mlp.png', 'lr_sweep_mnist1d_mlp.png', 'reference.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  # One run folder per grid (every rate and seed of an optimizer), complete.
  runs = sorted(os.listdir(tmp_path / 'runs'))
  assert runs == ['reference_mnist1d_mlp', 'sweep_mnist1d_mlp_adam', 'sweep_mnist1d_mlp_sgd']
  for run in runs:
    folder = tmp_path / 'runs' / run
    assert json.load(open(folder / 'status.json'))['status'] == 'complete'
    assert (folder / 'metrics.jsonl').exists() and (folder / 'checkpoints').is_dir()
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert set(saved['sweep']['mnist1d_mlp']) == {'sgd', 'adam'}
  md = (tmp_path / 'results.md').read_text()
  assert 'reference setting' in md and 'Adam' in md and 'SGD' in md

  sweep = results['runs']['sweep']['mnist1d_mlp']
  summary = results['sweep']['mnist1d_mlp']
  for name, per_rate in sweep.items():
    # Different rates give different runs from the same start: the rate set
    # in each replica's state is the one used.
    a, b = per_rate[0][0], per_rate[1][0]
    assert not a['diverged'] and not b['diverged']
    assert a['final']['train']['loss'] != b['final']['train']['loss']
    assert a['eval_steps'] == [50, 100] and a['steps'] == list(range(10, 101, 10))
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


def test_a_rerun_skips_every_finished_run(smoke):
  config, workdir, results = smoke
  before = {p: p.stat().st_mtime_ns for p in (workdir / 'runs').rglob('*')}
  again = study.run(config, str(workdir))
  assert {p: p.stat().st_mtime_ns for p in (workdir / 'runs').rglob('*')} == before
  assert helpers.without_timings(again) == helpers.without_timings(results)


def test_a_workdir_of_another_config_is_refused_untouched(tmp_path):
  config = config_lib.get_config('smoke')
  common.Study(str(tmp_path), config)
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
  other = config_lib.get_config('smoke')
  other.lr_factors = (1.0, 3.0)
  with pytest.raises(common.StudyConfigError, match=r'first difference: lr_factors'):
    study.run(other, str(tmp_path))
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == before


def test_the_modern_arms_train(tmp_path):
  # Schedule-free AdamW and SAM train in the kill-and-resume test below.
  config = config_lib.get_config('modern')
  config.update_from_flattened_dict({
      'models': 'mnist1d_mlp', 'optimizers': '', 'modern_optimizers': 'muon,prodigy,soap',
      'num_seeds': 1, 'num_steps': 40,
      'modern_lr_factors': (1.0,), 'log_every': 10, 'train.eval_every': 20,
      'train.steps_per_dispatch': 10, 'train.checkpoint_every': 20,
      'train.tensorboard': False, 'train.progress': False})
  results = study.run(config, str(tmp_path))
  sweep = results['runs']['sweep']['mnist1d_mlp']
  assert list(sweep) == ['muon', 'prodigy', 'soap']
  for name, per_rate in sweep.items():
    run = per_rate[0][0]
    assert not run['diverged'], name
    assert run['eval_steps'] == [20, 40], name
    assert np.isfinite(run['final']['test']['loss']), name
  md = (tmp_path / 'results.md').read_text()
  for label in ('Muon (+ Adam)', 'Prodigy', 'SOAP'):
    assert label in md


def _main(workdir, *overrides):
  return helpers.start_main('optimizers_compared', 'smoke', workdir,
                            '--config.train.progress=False', *overrides)


def test_a_killed_study_resumes_and_ends_with_the_same_results(tmp_path):
  # Killed inside the schedule-free grid (fit in chunks, evaluated at its
  # averaged params) after its first chunk. One step per dispatch, a
  # checkpoint every 20. (SAM's two Trainer steps per update are checked by
  # test_the_modern_arms_train and the SAM test above.)
  overrides = ('--config.num_steps=120', '--config.train.steps_per_dispatch=1',
               '--config.train.checkpoint_every=20', '--config.train.eval_every=40',
               '--config.optimizers=sgd', '--config.modern_optimizers=schedule_free_adamw',
               '--config.modern_lr_factors=(1.0,)', '--config.reference.models=')
  helpers.finish(_main(tmp_path / 'ref', *overrides))
  workdir = tmp_path / 'killed'
  proc = _main(workdir, *overrides)
  record = workdir / 'runs' / 'sweep_mnist1d_mlp_schedule_free_adamw' / study.EVAL_PARAMS_FILE
  helpers.kill_when(proc, record.exists)
  assert proc.returncode == -signal.SIGKILL
  assert helpers.run_status(workdir, 'sweep_mnist1d_mlp_sgd') == 'complete'
  assert helpers.run_status(workdir, 'sweep_mnist1d_mlp_schedule_free_adamw') == 'running'
  assert not (workdir / 'results.json').exists()
  err = helpers.finish(_main(workdir, *overrides))
  assert 'run sweep_mnist1d_mlp_sgd: complete, skipped' in err
  assert 'resumed from step' in err
  want = json.load(open(tmp_path / 'ref' / 'results.json'))
  got = json.load(open(workdir / 'results.json'))
  sweep = want['runs']['sweep']['mnist1d_mlp']
  for name in ('sgd', 'schedule_free_adamw'):
    run = sweep[name][0][0]
    assert not run['diverged'] and run['eval_steps'] == [40, 80, 120], name
    assert run['steps'] == list(range(10, 121, 10)), name
  # Schedule-free is reported at its averaged params, as recorded in its folder.
  recorded = json.load(open(record))
  assert [e['step'] for e in recorded] == [40, 80, 120]
  assert sweep['schedule_free_adamw'][0][0]['final']['test']['accuracy'] == pytest.approx(
      recorded[-1]['test']['accuracy'][0])
  assert helpers.without_timings(got) == helpers.without_timings(want)
  assert oct((workdir / 'results.json').stat().st_mode & 0o777) == '0o644'
