"""The three strategies give the same loss curve for the same global batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.data import pipeline
from research.train import parallel
from research.train.state import TrainState
from tests.train.models import TinyMLP


def _data(n=64, d=5, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
  return dict(x=x, y=y)


def _run(mode, steps=12, batch_size=16, stack=1):
  axis = parallel.AXIS if mode == 'pmap' else None
  model = TinyMLP(axis_name=axis)
  data = _data()
  variables = model.init(jax.random.key(0), data['x'][:2], train=False)
  state = TrainState.create(apply_fn=model.apply, variables=variables,
                            tx=optim.sgd(0.1, momentum=0.9), rng=jax.random.key(1))
  strategy = parallel.make_strategy(mode)
  state = strategy.place_state(state)
  batches = pipeline.TrainLoader(pipeline.ArraySource(data['x'], data['y']), batch_size, seed=3)
  losses = []
  it = batches.batches()
  for _ in range(steps // stack):
    if stack == 1:
      state, metrics = strategy.train(state, strategy.place_batch(next(it)))
      losses.append(float(strategy.host(metrics)['loss']))
    else:
      group = [next(it) for _ in range(stack)]
      stacked = jax.tree.map(lambda *xs: np.stack(xs), *group)
      state, metrics = strategy.train_many(state, strategy.place_batch(stacked, stacked=True),
                                           np.ones(stack, bool))
      losses.extend(np.asarray(strategy.host(metrics)['loss']).tolist())
  final = strategy.host(state)
  return np.array(losses), final


def test_four_devices_are_simulated():
  assert jax.device_count() == 4


@pytest.mark.parametrize('mode', ['sharded', 'pmap'])
def test_same_loss_curve_as_single_device(mode):
  ref_losses, ref_state = _run('none')
  losses, state = _run(mode)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # BatchNorm statistics are over the global batch in every mode.
  for a, b in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(ref_state.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert ref_losses[-1] < ref_losses[0]


@pytest.mark.parametrize('mode', ['none', 'sharded', 'pmap'])
def test_steps_per_dispatch_equals_one_at_a_time(mode):
  one, _ = _run(mode, steps=12)
  many, _ = _run(mode, steps=12, stack=4)
  np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)


def test_batch_not_divisible_by_devices_is_rejected():
  with pytest.raises(ValueError, match='batch_size=10 is not divisible by the 4 devices'):
    parallel.check_batch_size('sharded', 10)
  with pytest.raises(ValueError, match="parallel='spmd' is unknown"):
    parallel.check_batch_size('spmd', 8)
  parallel.check_batch_size('none', 10)
