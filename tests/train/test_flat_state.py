"""flat_params: the Trainer on flat params and state equals the per-leaf run.

MNIST-1D models (the MLP; the CNN with BatchNorm) train to the same loss
curve with and without the flag under every parallel strategy, and a run
resumes across the flag (checkpoints stay per leaf on disk).
"""

import jax
import numpy as np
import pytest

from research import optim
from research.data import pipeline
from research.train import flat_state
from research.train import trainer as trainer_lib
from tests.train import helpers

TX = optim.adam(3e-3)  # one object: a static part of every state below


def _state(name='mnist1d_mlp', tx=TX, **overrides):
  return helpers.mnist1d_state(name, tx, **overrides)


def _fit(flat, parallel='none', name='mnist1d_mlp', workdir=None, num_steps=6,
         model_kw=(), tx=TX, **kw):
  x, y = helpers.mnist1d(256)
  c = trainer_lib.default_config()
  c.update(dict(num_steps=num_steps, log_every=1, progress=False, tensorboard=False,
                eval_batch_size=64, parallel=parallel, flat_params=flat,
                checkpoints=workdir is not None), **kw)
  loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), 32)
  return trainer_lib.Trainer(c, workdir).fit(_state(name, tx, **dict(model_kw)), loader)


def _losses(result):
  return np.array([h['loss'] for h in result.history])


@pytest.mark.parametrize('parallel', ['none', 'sharded', 'pmap'])
def test_flat_params_train_the_same_loss_curve(parallel):
  per_leaf, flat = _fit(False, parallel), _fit(True, parallel)
  np.testing.assert_allclose(_losses(flat), _losses(per_leaf), rtol=1e-5)
  assert _losses(flat)[-1] < _losses(flat)[0]
  # The result is per leaf again: same structure, equal values.
  assert jax.tree.structure(flat.state.params) == jax.tree.structure(per_leaf.state.params)
  for a, b in zip(jax.tree.leaves(flat.state), jax.tree.leaves(per_leaf.state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cnn_with_batch_norm():
  kw = dict(name='mnist1d_cnn', model_kw=(('batch_norm', True),))
  per_leaf, flat = _fit(False, **kw), _fit(True, **kw)
  np.testing.assert_allclose(_losses(flat), _losses(per_leaf), rtol=1e-5)


def test_optimizer_that_needs_the_tree_runs_on_views():
  tx = optim.lamb(3e-3)  # per-layer trust ratios: segment views, per-leaf state
  per_leaf, flat = _fit(False, tx=tx, num_steps=4), _fit(True, tx=tx, num_steps=4)
  np.testing.assert_allclose(_losses(flat), _losses(per_leaf), rtol=1e-5)


@pytest.mark.parametrize('first', [True, False])
def test_resumes_across_the_flag(tmp_path, first):
  reference = _fit(False, num_steps=8)
  _fit(first, workdir=str(tmp_path), num_steps=4)
  resumed = _fit(not first, workdir=str(tmp_path), num_steps=8)
  assert [h['step'] for h in resumed.history] == list(range(1, 9))
  np.testing.assert_allclose(_losses(resumed), _losses(reference), rtol=1e-5)


def test_device_state_is_flat_and_converts_back():
  state = _state()
  flat = flat_state.to_flat(state)
  assert isinstance(flat.params, optim.FlatTree)
  assert len(flat.params.buffers) == 1  # one dtype
  adam_state = flat.opt_state[0]
  assert isinstance(adam_state.mu, optim.FlatTree)
  back = flat_state.to_tree(flat)
  assert back.tx is TX and back.apply_fn == state.apply_fn
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('host', [False, True])
def test_compiled_conversion_equals_the_leaf_by_leaf_one(monkeypatch, host):
  # to_flat converts a state on one device (or on the host) in one compiled
  # call; sharded states or states spread over devices go leaf by leaf.
  state = _state()
  if host:
    state = jax.device_get(state)
  assert flat_state._one_device(state.params, state.opt_state)
  compiled = flat_state.to_flat(state)
  monkeypatch.setattr(flat_state, '_one_device', lambda *trees: False)
  eager = flat_state.to_flat(state)
  assert jax.tree.structure(compiled) == jax.tree.structure(eager)
  for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, b)


def test_states_on_several_devices_are_not_compiled():  # 4 CPU devices: conftest.py
  a, b = (jax.device_put(np.ones(3, np.float32), d) for d in jax.devices()[:2])
  assert flat_state._one_device({'a': a}, {'b': a})
  assert not flat_state._one_device({'a': a}, {'b': b})
  assert not flat_state._one_device({'a': a, 'f': lambda: 0}, {})


@pytest.mark.parametrize('field,value,match', [
    ('l2', 0.1, 'l2=0.1 with flat_params=True'),
    ('log_grad_norms', True, 'log_grad_norms=True with flat_params=True'),
])
def test_bad_config(field, value, match):
  c = trainer_lib.default_config()
  c.flat_params = True
  c[field] = value
  with pytest.raises(ValueError, match=match):
    trainer_lib.validate_config(c)


def test_flag_must_be_a_bool():
  with pytest.raises(ValueError, match="flat_params='yes' is invalid; allowed: True, False"):
    flat_state.check_config(dict(flat_params='yes'))
