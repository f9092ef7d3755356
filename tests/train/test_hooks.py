"""Early stopping and performance scheduling inside the Trainer."""

import jax
import numpy as np
import pytest

from research import optim
from research.data import pipeline
from research.train import hooks
from research.train import state as state_lib
from research.train import trainer as trainer_lib
from tests.train.models import TinyMLP


def _data(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int32)  # noisy labels
  return dict(x=x, y=y)


def _state(tx):
  model = TinyMLP(features=64, num_classes=2, batch_norm=False)
  variables = model.init(jax.random.key(0), np.zeros((2, 5), np.float32))
  return state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                     rng=jax.random.key(1))


def _config(**kw):
  c = trainer_lib.default_config()
  c.update(dict(num_steps=300, batch_size=16, eval_batch_size=64, eval_every=10,
                log_every=10, progress=False, tensorboard=False))
  c.update(kw)
  return c


def _fit(tx, hook_list, workdir=None, **kw):
  train, val = _data(32, 0), _data(256, 1)  # few examples: it overfits
  loader = pipeline.TrainLoader(pipeline.ArraySource(train['x'], train['y']), 16)
  trainer = trainer_lib.Trainer(_config(**kw), workdir, hooks=hook_list)
  return trainer, trainer.fit(_state(tx), loader, eval_sets=dict(validation=val))


def test_early_stopping_stops_and_restores_the_best_params(tmp_path):
  stop = hooks.EarlyStopping('validation/loss', patience=3)
  trainer, result = _fit(optim.adam(0.05), [stop], str(tmp_path))
  assert result.stopped_early
  last_eval = result.evals[-1]['step']
  assert last_eval < 300
  losses = [e['validation']['loss'] for e in result.evals]
  best = int(np.argmin(losses))
  assert len(losses) - 1 - best == 3  # stopped after `patience` worse evaluations
  assert stop.best_step == result.evals[best]['step']
  # The returned params are the best evaluation's, not the last step's.
  assert trainer.evaluate(result.state, _data(256, 1))['loss'] == pytest.approx(losses[best], rel=1e-5)
  assert (tmp_path / 'early_stopping_best').is_dir()


def test_performance_scheduling_lowers_the_learning_rate_on_a_plateau():
  sched = hooks.PerformanceScheduling('validation/loss', factor=0.5, patience=2)
  tx = optim.inject_hyperparams(optim.sgd)(learning_rate=0.5, momentum=0.9)
  _, result = _fit(tx, [sched], num_steps=200)
  lrs = [h['learning_rate'] for h in result.history]
  assert lrs[0] == pytest.approx(0.5)
  assert sched.scale < 1.0
  assert lrs[-1] == pytest.approx(0.5 * sched.scale)
  assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # only ever lowered


def test_performance_scheduling_needs_injected_hyperparameters():
  sched = hooks.PerformanceScheduling('validation/loss')
  with pytest.raises(ValueError, match='inject_hyperparams'):
    _fit(optim.sgd(0.1), [sched], num_steps=20)


def test_unknown_monitor_is_named():
  stop = hooks.EarlyStopping('validation/auc')
  with pytest.raises(ValueError, match="monitor='validation/auc' is not an evaluated metric"):
    _fit(optim.sgd(0.1), [stop], num_steps=20)


def test_bad_hook_arguments():
  with pytest.raises(ValueError, match="mode='best'"):
    hooks.EarlyStopping(mode='best')
  with pytest.raises(ValueError, match='patience=0'):
    hooks.EarlyStopping(patience=0)
