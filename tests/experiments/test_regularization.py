"""The regularization study: arms, config checks, the smoke scale end to end,
a workdir of another config, an interrupted study resumed."""

import json
import math
import os

import jax
import pytest

from configs import regularization as config_lib
from experiments import common
from experiments import main as main_lib
from experiments import regularization as study
from research import models
from research.train import checkpoints as ckpt_lib


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('regularization_smoke')
  config = config_lib.get_config('smoke')
  return config, workdir, study.run(config, str(workdir))


def test_arm_settings_and_per_arm_train_configs():
  config = config_lib.get_config('smoke')
  assert study.arm_settings(config, 'dropout_0.2').dropout == 0.2
  assert study.arm_settings(config, 'max_norm').max_norm == config.max_norm
  # The penalty is the arm's, in a train config of its own; the user's is untouched.
  before = config.to_dict()
  l2 = study.train_config(config, study.arm_settings(config, 'l2'))
  assert (l2.l2, l2.l1) == (config.l2, 0.0)
  assert config.to_dict() == before and 'l2' not in config.train
  # Arms that differ only in hooks or data share the compiled step of `none`:
  # the same train config (loss) and an equal optimizer.
  none, es = study.arm_settings(config, 'none'), study.arm_settings(config, 'early_stopping')
  assert study.train_config(config, es).to_dict() == study.train_config(config, none).to_dict()
  _, variables = models.init_model(study.model_config(config, none), jax.random.key(0),
                                   input_shape=(40,))
  assert study.arm_tx(config, es, variables['params']) == study.arm_tx(config, none,
                                                                      variables['params'])
  # Seeds are one grid per arm; early stopping is one run per seed.
  config.num_seeds = 2
  runs = {r.name: r for r in study.runs_of(config)}
  assert runs['none'].grid and runs['none'].seeds == (0, 1)
  assert not runs['early_stopping-seed1'].grid and runs['early_stopping-seed1'].seeds == (1,)


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
    ('log_every', 0),
    ('train.eval_every', 0),
    ('train.eval_every', 61),        # > num_steps: no curve
    ('data.batch_size', 200),        # more than the 180 training examples
    ('data.num_train', 1),
])
def test_bad_config_names_the_field(field, value):
  config = config_lib.get_config('smoke')
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=r'config\.' + field.replace('.', r'\.')):
    study.validate(config)


def test_a_train_penalty_is_refused_not_ignored():
  # The penalties are arm settings: config.train has no l1/l2 to set.
  with pytest.raises(main_lib.UsageError, match=r'unknown config field config\.train\.l2'):
    main_lib.preflight(['main', '--config=configs/regularization.py:smoke',
                        '--config.train.l2=0.01'])
  config = config_lib.get_config('smoke')
  config.train.l2 = 0.01  # added in code: refused the same way
  with pytest.raises(ValueError, match=r'config\.train\.l2'):
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


def test_smoke_runs_end_to_end(smoke):
  config, workdir, results = smoke
  for name in ('config.json', 'results.json', 'results.md', 'curves.png', 'errors.png',
               'mc_dropout.png'):
    assert os.path.getsize(workdir / name) > 0, name
  assert json.loads((workdir / 'results.json').read_text())['verdict'] == results['verdict']
  md = (workdir / 'results.md').read_text()
  assert 'MC dropout against the deterministic network' in md
  assert 'one seed: no claim' in md  # one seed never supports a claim
  # One folder per run, complete, with its checkpoints and metrics.
  for run in study.runs_of(config):
    folder = workdir / 'runs' / run.name
    assert json.loads((folder / 'status.json').read_text())['status'] == 'complete'
    assert (folder / 'metrics.jsonl').stat().st_size > 0
    assert any(d.isdigit() for d in os.listdir(folder / 'checkpoints'))

  per_arm = results['per_arm']
  assert list(per_arm) == study.arms_of(config)
  for arm, runs in per_arm.items():
    r = runs[0]
    assert r['seed'] == config.seed
    assert 0.0 <= r['train_error'] <= 1.0 and 0.0 <= r['test_error'] <= 1.0, arm
    assert math.isfinite(r['deterministic']['nll']), arm
    assert r['curves']['test']['step'][-1] == r['steps'], arm
  # The l2 arm trained with its penalty: it is not the `none` run.
  assert per_arm['l2'][0]['deterministic'] != per_arm['none'][0]['deterministic']
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


def test_a_workdir_of_another_config_is_refused(smoke, tmp_path):
  config, workdir, _ = smoke
  other = config_lib.get_config('smoke')
  other.l2 = 0.5
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob('*')}
  with pytest.raises(common.StudyConfigError, match=r'first difference: l2'):
    study.run(other, str(workdir))
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob('*')} == before


def without_timings(results) -> str:
  """The results as JSON text without the timings (a NaN, the loss of a run
  that diverged, compares equal as text)."""
  def strip(t):
    if isinstance(t, dict):
      return {k: strip(v) for k, v in t.items() if k != 'seconds'}
    if isinstance(t, (list, tuple)):
      return [strip(v) for v in t]
    return t
  return json.dumps(strip(results), sort_keys=True)


class Killed(Exception):
  """The interruption :func:`interrupt_after_checkpoint` raises."""


def interrupt_after_checkpoint(monkeypatch, run: str, step: int) -> None:
  """Until ``monkeypatch.undo()``, the run folder ``run`` raises
  :class:`Killed` right after saving its checkpoint of ``step``: the study
  stops there with that run 'running', as a kill would leave it."""
  save = ckpt_lib.Checkpoints.save

  def save_then_die(self, at, *args, **kwargs):
    save(self, at, *args, **kwargs)
    if f'{os.sep}runs{os.sep}{run}{os.sep}' in self.directory + os.sep and at == step:
      raise Killed()

  monkeypatch.setattr(ckpt_lib.Checkpoints, 'save', save_then_die)


def test_an_interrupted_study_resumes_and_ends_with_the_same_results(tmp_path, monkeypatch,
                                                                     caplog):
  config = config_lib.get_config('smoke')
  config.arms = 'none,early_stopping'
  config.patience = 2  # the hook's counters must survive the interruption
  want = study.run(config, str(tmp_path / 'ref'))
  # Interrupted in the early-stopping run, right after its first checkpoint.
  workdir = tmp_path / 'killed'
  interrupt_after_checkpoint(monkeypatch, 'early_stopping-seed0', 20)
  with pytest.raises(Killed):
    study.run(config, str(workdir))
  monkeypatch.undo()
  runs = workdir / 'runs'
  assert json.loads((runs / 'none' / 'status.json').read_text())['status'] == 'complete'
  assert (json.loads((runs / 'early_stopping-seed0' / 'status.json').read_text())['status']
          == 'running')
  done = (runs / 'none' / 'metrics.jsonl').stat().st_mtime_ns
  with caplog.at_level('INFO'):
    got = study.run(config, str(workdir))
  assert 'resumed from step 20' in caplog.text
  assert (runs / 'none' / 'metrics.jsonl').stat().st_mtime_ns == done  # skipped
  assert without_timings(got) == without_timings(want)
  assert (without_timings(json.loads((workdir / 'results.json').read_text()))
          == without_timings(json.loads((tmp_path / 'ref' / 'results.json').read_text())))
