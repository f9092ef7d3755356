"""Reuse and freezing: subset loading, runs' checkpoints, frozen layers, cached features."""

import time

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.data import pipeline
from research.train import state as state_lib
from research.train import steps as steps_lib
from research.train import trainer as trainer_lib
from research.train import transfer
from tests.train.models import TinyMLP


def _params(seed, **kw):
  return TinyMLP(**kw).init(jax.random.key(seed), jnp.zeros((2, 5)))['params']


def _data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
  return x, y


# --- loading a subset -------------------------------------------------------------


def test_load_params_subset_copies_exactly_the_matched_leaves():
  source, target = _params(0), _params(1)
  out = transfer.load_params_subset(source, target, r'Dense_0/.*|BatchNorm_0/scale')
  copied = {'Dense_0/kernel', 'Dense_0/bias', 'BatchNorm_0/scale'}
  for path, leaf in jax.tree_util.tree_leaves_with_path(out):
    name = steps_lib.path_name(path)
    want = source if name in copied else target
    for key in name.split('/'):
      want = want[key]
    np.testing.assert_array_equal(leaf, want, err_msg=name)
  assert jax.tree.structure(out) == jax.tree.structure(target)
  assert sorted(transfer.matching_paths(target, r'Dense_0/.*')) == ['Dense_0/bias', 'Dense_0/kernel']
  # The pattern must match the whole name: 'Dense' alone matches nothing.
  with pytest.raises(ValueError, match="pattern='Dense' matches no path"):
    transfer.load_params_subset(source, target, 'Dense')


def test_load_params_subset_checks_shapes_dtypes_and_paths():
  target = _params(1)
  with pytest.raises(ValueError, match=r"'Dense_0/kernel' is float32\[5, 8\] in the source"):
    transfer.load_params_subset(_params(0, features=8), target, r'Dense_0/kernel')
  half = jax.tree.map(lambda x: x.astype(jnp.float16), _params(0))
  with pytest.raises(ValueError, match=r"'Dense_1/bias' is float16"):
    transfer.load_params_subset(half, target, r'Dense_1/bias')
  no_bn = _params(0, batch_norm=False)
  with pytest.raises(ValueError, match="'BatchNorm_0/bias' is not in the target"):
    transfer.load_params_subset(target, no_bn, r'Dense_0/bias|BatchNorm_0/bias')
  with pytest.raises(ValueError, match='not a valid regular expression'):
    transfer.load_params_subset(target, target, r'Dense_0/(')


def test_restore_params_from_a_trainer_run(tmp_path):
  x, y = _data()
  model = TinyMLP()
  state = state_lib.TrainState.create(
      apply_fn=model.apply, variables=model.init(jax.random.key(0), x[:2]),
      tx=optim.sgd(0.1), rng=jax.random.key(1))
  config = trainer_lib.default_config()
  config.update(dict(num_steps=4, batch_size=16, checkpoint_every=2, progress=False,
                     tensorboard=False))
  run = tmp_path / 'pretrain'
  result = trainer_lib.Trainer(config, str(run)).fit(
      state, pipeline.TrainLoader(pipeline.ArraySource(x, y), 16))
  trained = result.state.params
  fresh = _params(5)
  out = transfer.restore_params_from_run(str(run), fresh, r'Dense_0/.*')
  np.testing.assert_array_equal(out['Dense_0']['kernel'], trained['Dense_0']['kernel'])
  np.testing.assert_array_equal(out['Dense_0']['bias'], trained['Dense_0']['bias'])
  np.testing.assert_array_equal(out['Dense_1']['kernel'], fresh['Dense_1']['kernel'])
  assert transfer.latest_checkpoint(str(run))[1] == 4
  # An earlier checkpoint differs from the final params (training moved them).
  early = transfer.restore_params_from_run(str(run), fresh, r'Dense_0/kernel', step=2)
  assert not np.array_equal(early['Dense_0']['kernel'], trained['Dense_0']['kernel'])
  with pytest.raises(ValueError, match='no checkpoint at step=3'):
    transfer.restore_params_from_run(str(run), fresh, r'.*', step=3)
  with pytest.raises(ValueError, match='no checkpoints/ directory'):
    transfer.restore_params_from_run(str(tmp_path / 'nothing'), fresh, r'.*')


# --- freezing -------------------------------------------------------------------


def test_freeze_labels():
  labels = transfer.freeze_labels(_params(0), r'Dense_0/.*')
  assert labels['Dense_0'] == {'kernel': 'frozen', 'bias': 'frozen'}
  assert labels['Dense_1'] == {'kernel': 'trainable', 'bias': 'trainable'}
  assert set(jax.tree.leaves(labels['BatchNorm_0'])) == {'trainable'}
  with pytest.raises(ValueError, match="pattern='Conv_0/.*' matches no path"):
    transfer.freeze_labels(_params(0), r'Conv_0/.*')


def test_frozen_params_stay_while_the_rest_moves():
  x, y = _data()
  model = TinyMLP()
  variables = model.init(jax.random.key(0), x[:2])
  tx = transfer.freeze_optimizer(optim.adam(0.05), variables['params'], r'Dense_0/.*')
  state = state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                      rng=jax.random.key(1))
  step = jax.jit(steps_lib.make_train_step())
  start = state.params
  for i in range(4):
    state, metrics = step(state, dict(x=x[16 * i:16 * (i + 1)], y=y[16 * i:16 * (i + 1)]))
  assert float(metrics['grad_norm']) > 0
  chex.assert_trees_all_equal(state.params['Dense_0'], start['Dense_0'])
  for name in ('Dense_1', 'BatchNorm_0'):
    for leaf, leaf0 in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(start[name])):
      assert not np.allclose(leaf, leaf0), name
  # Adam keeps moments only for the trainable leaves.
  inner = state.opt_state.inner_states
  moments = [x for x in jax.tree.leaves(inner['trainable']) if jnp.ndim(x) >= 1]
  assert sum(x.size for x in moments) == 2 * sum(
      x.size for k, v in start.items() if k != 'Dense_0' for x in jax.tree.leaves(v))


# --- cached features --------------------------------------------------------------


class Bottom(nn.Module):
  width: int = 384

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(self.width)(x))
    return jnp.tanh(nn.Dense(self.width)(x))


class Top(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, h, train: bool = False):
    del train
    return nn.Dense(self.num_classes)(nn.relu(nn.Dense(16)(h)))


class Net(nn.Module):
  """A frozen-able bottom and a trainable top, as two submodules."""

  def setup(self):
    self.bottom = Bottom()
    self.top = Top()

  def __call__(self, x, train: bool = False):
    return self.top(self.bottom(x), train=train)

  def features(self, x):
    return self.bottom(x)


def _epoch_time(step, state, inputs, y, order, batch_size):
  t0 = time.perf_counter()
  for i in range(0, len(order), batch_size):
    idx = order[i:i + batch_size]
    state, _ = step(state, dict(x=inputs[idx], y=y[idx]))
  jax.block_until_ready(state.params)
  return state, time.perf_counter() - t0


def test_top_on_cached_features_equals_full_model_with_frozen_bottom(record_property):
  rng = np.random.default_rng(0)
  n, d, batch_size = 256, 128, 32
  x = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
  y = jnp.asarray((rng.normal(size=n) > 0).astype(np.int32))
  net = Net()
  variables = net.init(jax.random.key(0), x[:2])
  params = variables['params']
  full = state_lib.TrainState.create(
      apply_fn=net.apply, variables=variables,
      tx=transfer.freeze_optimizer(optim.adam(1e-2), params, r'bottom/.*'),
      rng=jax.random.key(1))
  top = state_lib.TrainState.create(
      apply_fn=Top().apply, variables={'params': params['top']}, tx=optim.adam(1e-2),
      rng=jax.random.key(1))
  feats = transfer.compute_features(
      lambda xb: net.apply(variables, xb, method=Net.features), x, batch_size=100)
  chex.assert_shape(feats, (n, 384))
  np.testing.assert_allclose(feats, net.apply(variables, x, method=Net.features),
                             rtol=1e-5, atol=1e-6)

  train_step = steps_lib.make_train_step()
  full_step, top_step = jax.jit(train_step), jax.jit(train_step)
  full_times, top_times = [], []
  for epoch in range(3):
    order = np.random.default_rng((0, epoch)).permutation(n)
    full, t_full = _epoch_time(full_step, full, x, y, order, batch_size)
    top, t_top = _epoch_time(top_step, top, feats, y, order, batch_size)
    if epoch:  # epoch 0 includes compilation
      full_times.append(t_full)
      top_times.append(t_top)

  chex.assert_trees_all_equal(full.params['bottom'], params['bottom'])
  # Float tolerance: the two programs fuse the top's ops differently.
  chex.assert_trees_all_close(full.params['top'], top.params, rtol=1e-4, atol=1e-5)
  assert not np.allclose(top.params['Dense_0']['kernel'], params['top']['Dense_0']['kernel'])

  # The cached step does a fraction of the work. Asserted on the compiled FLOP
  # counts, which are deterministic; the measured epoch-time ratio is only
  # recorded: on shared CPUs even a min over epochs swings past 1 under load.
  batch = dict(x=x[:batch_size], y=y[:batch_size])
  flops_full = full_step.lower(full, batch).compile().cost_analysis()['flops']
  flops_top = top_step.lower(top, dict(x=feats[:batch_size], y=batch['y'])).compile(
      ).cost_analysis()['flops']
  assert flops_top < 0.1 * flops_full
  ratio = min(top_times) / min(full_times)
  record_property('cached_over_full_epoch_time', ratio)
