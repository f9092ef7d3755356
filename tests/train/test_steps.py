"""The train step's non-finite guard: a bad step leaves the state as it was."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim
from research.train import steps as steps_lib
from research.train.state import TrainState


class SqrtModel(nn.Module):
  """Dense logits plus sqrt(w): at w = 0 the loss is finite, d/dw is not."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = self.param('w', nn.initializers.ones, ())
    return nn.Dense(3)(x) + jnp.sqrt(w)


def _batch(n=8):
  rng = np.random.default_rng(0)
  return dict(x=rng.normal(size=(n, 4)).astype(np.float32),
              y=rng.integers(0, 3, size=n).astype(np.int32))


MODEL, TX = SqrtModel(), optim.adam(0.1)  # shared: static parts of the state


def _state(w0):
  variables = MODEL.init(jax.random.key(0), _batch()['x'])
  variables['params']['w'] = jnp.asarray(w0, jnp.float32)
  return TrainState.create(apply_fn=MODEL.apply, variables=variables, tx=TX,
                           rng=jax.random.key(1))


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_nonfinite_probe_is_zero_iff_every_entry_is_finite():
  # Small leaves of one size and dtype are added elementwise (a with a2, and
  # b with b2 although their shapes differ), large ones (c, c2) and lone
  # sizes (d) are reduced alone; e holds more leaves of one size than one
  # elementwise sum takes.
  big = steps_lib.PROBE_GROUP_MAX_SIZE + 1
  many = steps_lib.PROBE_GROUP_MAX_COUNT + 3
  tree = dict(a=jnp.full((3,), 3e38, jnp.float32), a2=jnp.full((3,), -3e38, jnp.float32),
              b=jnp.ones((2, 2), jnp.bfloat16), b2=jnp.full((4,), -2.0, jnp.bfloat16),
              c=jnp.ones((big,), jnp.float32), c2=jnp.ones((big,), jnp.float32),
              d=jnp.full((2, 3), -3e38, jnp.float32),
              e=[jnp.full((5,), 3e38, jnp.float32) for _ in range(many)])
  # Finite but huge: a squared norm would overflow, the probe does not.
  assert float(steps_lib.nonfinite_probe(tree)) == 0.0
  assert not np.isfinite(float(steps_lib._grad_sq(tree)))
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    for leaf in [k for k in tree if k != 'e'] + [('e', 0), ('e', many - 1)]:
      broken = {k: list(v) if k == 'e' else v for k, v in tree.items()}
      if isinstance(leaf, tuple):
        broken['e'][leaf[1]] = broken['e'][leaf[1]].at[1].set(bad)
      else:
        broken[leaf] = tree[leaf].at[1].set(bad)
      assert np.isnan(float(steps_lib.nonfinite_probe(broken))), (bad, leaf)
  # One reduction per group: {a, a2}, {b, b2}, c, c2, d, and e in two parts;
  # nothing is copied into a stack.
  jaxpr = str(jax.make_jaxpr(steps_lib.nonfinite_probe)(tree))
  assert jaxpr.count('reduce_sum') == 7, jaxpr
  assert 'concatenate' not in jaxpr, jaxpr


@pytest.mark.parametrize('check', ['grads', 'loss'])
def test_a_step_with_a_nonfinite_gradient_and_a_finite_loss_is_skipped(check):
  state = _state(w0=0.0)
  # A logged step: under 'loss' the gradients are checked on logged steps.
  step = jax.jit(steps_lib.make_train_step(nonfinite_check=check))
  new, metrics = step(state, _batch(), True)
  assert np.isfinite(float(metrics['loss']))
  assert not np.isfinite(float(steps_lib._grad_sq(jax.grad(
      lambda p: jnp.sum(state.apply_fn({'params': p}, _batch()['x'])))(state.params))))
  assert float(metrics['nonfinite']) == 1.0
  assert int(new.step) == 1
  _assert_same(new.params, state.params)
  _assert_same(new.opt_state, state.opt_state)


def test_loss_check_lets_gradients_through_on_steps_not_logged():
  state = _state(w0=0.0)
  step = jax.jit(steps_lib.make_train_step(nonfinite_check='loss'))
  new, metrics = step(state, _batch(), False)
  assert float(metrics['nonfinite']) == 0.0
  assert not np.isfinite(float(new.params['w']))  # the documented cost of 'loss'


def test_a_finite_step_is_applied():
  state = _state(w0=1.0)
  step = jax.jit(steps_lib.make_train_step())
  new, metrics = step(state, _batch())
  assert float(metrics['nonfinite']) == 0.0 and float(metrics['grad_norm']) > 0
  assert int(new.opt_state[0].count) == 1
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    assert not np.array_equal(a, b)


def test_under_vmap_only_the_bad_replica_is_skipped():
  good, bad = _state(w0=1.0), _state(w0=0.0)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), good, bad)
  step = jax.jit(jax.vmap(steps_lib.make_train_step(), in_axes=(0, None)))
  new, metrics = step(stacked, _batch())
  np.testing.assert_array_equal(metrics['nonfinite'], [0.0, 1.0])
  _assert_same(jax.tree.map(lambda x: x[1], new.params), bad.params)
  assert not np.array_equal(new.params['w'][0], good.params['w'])
  np.testing.assert_array_equal(new.step, [1, 1])


class NoTrainArg(nn.Module):
  """A model whose ``__call__`` takes no ``train=``."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x)


def test_a_model_without_a_train_argument_trains():
  model = NoTrainArg()
  variables = model.init(jax.random.key(0), _batch()['x'])
  state = TrainState.create(apply_fn=model.apply, variables=variables, tx=TX,
                            rng=jax.random.key(1))
  new, metrics = jax.jit(steps_lib.make_train_step())(state, _batch())
  assert np.isfinite(float(metrics['loss'])) and float(metrics['nonfinite']) == 0.0
  assert not np.array_equal(new.params['Dense_0']['kernel'],
                            state.params['Dense_0']['kernel'])


def test_a_custom_loss_fn_gives_the_gradient_of_that_loss():
  model = NoTrainArg()
  variables = model.init(jax.random.key(0), _batch()['x'])
  sgd = optim.sgd(1.0)

  def loss_fn(params, batch_stats, batch, rng):
    del batch_stats, rng
    out = model.apply({'params': params}, batch['x'])
    loss = jnp.mean(jnp.square(out))
    return loss, dict(mean_output=jnp.mean(out))

  state = TrainState.create(apply_fn=model.apply, variables=variables, tx=sgd,
                            rng=jax.random.key(1))
  new, metrics = jax.jit(steps_lib.make_train_step(loss_fn))(state, _batch())
  grads = jax.grad(lambda p: loss_fn(p, None, _batch(), None)[0])(state.params)
  expected = jax.tree.map(lambda p, g: p - g, state.params, grads)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert 'mean_output' in metrics and 'accuracy' not in metrics
  np.testing.assert_allclose(metrics['loss'], loss_fn(state.params, None, _batch(), None)[0],
                             rtol=1e-6)


def test_bad_step_specs_fail_naming_the_field():
  with pytest.raises(ValueError, match='loss=.hinge.'):
    steps_lib.StepSpec(loss='hinge')
  with pytest.raises(ValueError, match='nonfinite_check'):
    steps_lib.StepSpec(nonfinite_check='never')
  with pytest.raises(ValueError, match='l2=-1'):
    steps_lib.StepSpec(l2=-1.0)
  with pytest.raises(ValueError, match='built-in'):
    steps_lib.StepSpec(loss=lambda *a: (0.0, {}), l2=0.1)
