"""The vanishing-gradient study: arm parsing, config checks, grids, the smoke
scale end to end, a workdir of another config (the interrupted-study resume
is tested in test_regularization.py, through the same Study and Trainer)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vanishing_gradients as config_lib
from experiments import common
from experiments import vanishing_gradients as study
from research import models
from research.train import steps as steps_lib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('vanishing_smoke')
  config = config_lib.get_config('smoke')
  return config, workdir, study.run(config, str(workdir))


def test_arms_expand_wildcards_in_order_without_repeats():
  arms = study.parse_arms('*/*', 'probe.arms')
  assert len(arms) == len(config_lib.ACTIVATIONS) * len(config_lib.INITS)
  arms = study.parse_arms('sigmoid/*, sigmoid/glorot, relu/he/bn', 'train_arms')
  assert [a.label for a in arms] == [f'sigmoid/{i}' for i in config_lib.INITS] + ['relu/he/bn']


def test_arm_configs_carry_init_scale_and_arch():
  config = config_lib.get_config('smoke')
  arm = study.Arm('sigmoid', 'normal_0.01', 'residual')
  m = study.model_config(config, arm, 7)
  assert (m.depth, m.activation, m.init, m.init_scale, m.residual) == (
      7, 'sigmoid', 'normal', 0.01, True)
  assert study.model_config(config, study.Arm('relu', 'he'), 3, init_scale=1.5).init_scale == 1.5
  shape = study.shape_config(config, arm, 7)
  assert (shape.init, shape.init_scale) == ('auto', None)


@pytest.mark.parametrize('field, value', [
    ('probe.arms', 'swishy/he'),            # unknown activation
    ('probe.arms', 'relu/kaiming'),         # unknown init
    ('probe.arms', 'relu/he/dense'),        # unknown arch
    ('probe.sweep_arms', 'relu'),           # malformed
    ('train_arms', ''),                     # empty
    ('clip.arm', 'relu/he,tanh/glorot'),    # more than one
    ('clip.arms', 'none,sign'),
    ('optimizer.name', 'adamx'),
    ('optimizer.learning_rate', 0.0),
    ('model.width', 0),
    ('probe.depth', 0),
    ('probe.depth_sweep', (10, 0)),
    ('train_depth', 0),
    ('num_seeds', 0),
    ('log_every', 0),
    ('train.eval_every', 41),               # > num_steps = 40
    ('clip.value', -1.0),
    ('clip.num_points', 41),                # > clip.num_steps = 40
    ('clip.init_scale', 0.0),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    study.validate(config)


def test_impossible_probe_batch_and_unknown_scale_fail():
  config = config_lib.get_config('smoke')
  config.data.num_train = 100
  with pytest.raises(ValueError, match=r'config\.probe\.batch_size'):
    study.validate(config)
  with pytest.raises(ValueError, match='scale'):
    config_lib.get_config('huge')


def test_default_and_paper_configs_are_valid():
  study.validate(config_lib.get_config())
  study.validate(config_lib.get_config('paper'))


def test_arms_sharing_a_network_train_as_one_grid():
  config = config_lib.get_config()
  grids = {g.name: g for g in study.train_grids(config)}
  sigmoid = grids['train-sigmoid-plain'].replicas
  assert [(arm.label, seed) for arm, seed in sigmoid] == [
      ('sigmoid/normal_0.01', 0), ('sigmoid/normal_0.01', 1),
      ('sigmoid/glorot', 0), ('sigmoid/glorot', 1)]
  assert len(grids) == 6  # sigmoid, tanh, relu, selu plain; sigmoid bn, residual
  # Another learning rate is the same program: equal optimizers.
  other = config.optimizer.copy_and_resolve_references()
  other.learning_rate = 0.5
  assert study.optimizer(other) == study.optimizer(config.optimizer)


def test_a_replica_counts_its_own_non_finite_steps():
  config = config_lib.get_config('smoke')
  arm = study.Arm('relu', 'he')
  model = models.build_model(study.shape_config(config, arm, 2))
  _, state = study.init_replicas(config, model, study.optimizer(config.optimizer),
                                 ((arm, 0), (arm, 1)), 2)
  # Replica 0's weights are NaN: its step is skipped, replica 1's is not.
  state = state.replace(params=jax.tree.map(lambda p: p.at[0].set(jnp.nan), state.params))
  batch = dict(x=jnp.ones((4, 40)), y=jnp.arange(4))
  step = jax.jit(steps_lib.train_step, static_argnames='spec')
  for _ in range(2):
    state, _ = step(state, batch, jnp.asarray(False), spec=steps_lib.StepSpec(replicas=True))
  assert study.skipped_steps(state).tolist() == [2, 0]


def test_smoke_runs_end_to_end(smoke):
  config, workdir, results = smoke
  for name in ('config.json', 'results.json', 'results.md', 'probe_grad_norms.png',
               'probe_act_var.png', 'depth_sweep.png', 'training_curves.png',
               'trained_grad_norms.png', 'clipping.png'):
    assert os.path.getsize(workdir / name) > 0, name
  json.loads((workdir / 'results.json').read_text())
  names = ['probe'] + [g.name for g in study.train_grids(config)] + [
      f'clip-{n}' for n in common.split_names(config.clip.arms)]
  assert sorted(os.listdir(workdir / 'runs')) == sorted(names)
  for name in names:
    status = json.loads((workdir / 'runs' / name / 'status.json').read_text())
    assert status['status'] == 'complete', name
  assert any(d.isdigit() for d in os.listdir(workdir / 'runs' / 'train-relu-plain' /
                                             'checkpoints'))
  md = (workdir / 'results.md').read_text()
  assert '## Clipping where the gradients explode' in md and '## Training at depth 6' in md

  probes = results['probe']
  for label, p in probes.items():
    assert len(p['grad_norm']) == len(p['act_var']) == config.probe.depth, label
  # Sigmoid with N(0, 1) weights: the derivative is at most 1/4 and the units
  # saturate, so the gradient shrinks by orders of magnitude towards the input.
  sig = probes['sigmoid/normal_1']['grad_norm']
  assert sig[0] < 0.1 * sig[-1]
  # ReLU with He init keeps it level within a factor 10.
  assert abs(study.grad_ratio(probes['relu/he'])) < 1.0
  # BatchNorm normalizes the pre-activations whatever the init scale: the
  # ReLU output variance stays O(1) with N(0, 1) weights.
  assert 0.05 < probes['relu/normal_1/bn']['act_var'][-1] < 5.0
  # The sweep reuses the probe at the shared depth.
  assert results['depth_sweep']['sigmoid/normal_1'][10] == pytest.approx(
      study.grad_ratio(probes['sigmoid/normal_1']))

  run = results['per_arm']['relu/he'][0]
  assert len(run['probe_trained']['grad_norm']) == config.train_depth
  assert np.all(np.isfinite(run['curves']['train_loss']['value']))
  assert run['curves']['train_loss']['step'][-1] == config.num_steps
  assert 0.0 <= run['test_error'] <= 1.0

  for name, runs in results['clip_runs'].items():
    at_init = runs[0]['along'][0]
    assert at_init['step'] == 0
    value, norm, global_norm = at_init['value'], at_init['norm'], at_init['global_norm']
    # Global-norm clipping only rescales: the direction is kept exactly.
    assert global_norm[0] == pytest.approx(1.0, abs=1e-5)
    assert global_norm[2] < 1.0  # and the gradient was long enough to be clipped
    # Per-tensor norm clipping keeps each tensor's direction.
    assert norm[1] == pytest.approx(1.0, abs=1e-5)
    # Value clipping changes entries unequally: the direction turns.
    assert value[3] > 0.0 and value[0] < 0.99, name
  value_run = results['clip_runs']['value'][0]
  assert value_run['nonfinite_steps'] == 0
  assert math.isfinite(value_run['train_loss'])


def test_a_workdir_of_another_config_is_refused(smoke):
  config, workdir, _ = smoke
  other = config_lib.get_config('smoke')
  other.clip.value = 2.0
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob('*')}
  with pytest.raises(common.StudyConfigError, match=r'first difference: clip\.value'):
    study.run(other, str(workdir))
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob('*')} == before
