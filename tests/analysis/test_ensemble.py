"""Ensembles: stacked evaluation, MC dropout, calibration metrics, replicas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research import optim
from research.analysis import ensemble
from research.train import state as state_lib
from research.train import steps as steps_lib
from tests.train.models import TinyMLP


def _x(n=10, d=5, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _member(model, seed, x):
  """Variables with BatchNorm statistics moved away from their init."""
  def make(key):
    v = model.init(key, x[:2])
    _, new = model.apply(v, x + seed, train=True, mutable=['batch_stats'],
                         rngs={'dropout': key})
    return {'params': v['params'], 'batch_stats': new['batch_stats']}
  return jax.jit(make)(jax.random.key(seed))


def _softmax(model, variables, x):
  return jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)


# --- stacking -------------------------------------------------------------------


def test_stack_unstack_round_trip():
  trees = [{'a': jnp.full((2,), i, jnp.float32), 'b': {'c': jnp.array(i)}} for i in range(3)]
  stacked = ensemble.stack_trees(trees)
  chex.assert_shape(stacked['a'], (3, 2))
  chex.assert_shape(stacked['b']['c'], (3,))
  for got, want in zip(ensemble.unstack_tree(stacked), trees):
    chex.assert_trees_all_equal(got, want)
  with pytest.raises(ValueError, match='empty'):
    ensemble.stack_trees([])
  with pytest.raises(ValueError, match='structure'):
    ensemble.stack_trees([{'a': 1.0}, {'b': 1.0}])


# --- prediction -----------------------------------------------------------------


def test_ensemble_predict_equals_each_member_alone():
  model, x = TinyMLP(), _x()
  members = [_member(model, s, x) for s in range(3)]
  probs = ensemble.ensemble_predict(model.apply, ensemble.stack_trees(members), x)
  chex.assert_shape(probs, (3, 10, 3))
  for i, v in enumerate(members):
    np.testing.assert_allclose(probs[i], _softmax(model, v, x), rtol=1e-5, atol=1e-6)
  # Batches of 4 over 10 examples (the last one padded) give the same numbers.
  batched = ensemble.ensemble_predict(
      model.apply, ensemble.stack_trees(members), x, batch_size=4)
  np.testing.assert_allclose(batched, probs, rtol=1e-5, atol=1e-6)


def test_snapshots_without_batch_stats():
  model, x = TinyMLP(batch_norm=False), _x()
  snaps = [{'params': model.init(jax.random.key(s), x[:2])['params'], 'batch_stats': {}}
           for s in range(2)]  # what Trainer snapshots hold for such a model
  probs = ensemble.ensemble_predict(model.apply, ensemble.stack_trees(snaps), x)
  np.testing.assert_allclose(probs[1], _softmax(model, {'params': snaps[1]['params']}, x),
                             rtol=1e-5, atol=1e-6)


def test_identical_members_equal_one_member():
  model, x = TinyMLP(), _x(n=40)
  labels = np.arange(40) % 3
  v = _member(model, 0, x)
  probs = ensemble.ensemble_predict(model.apply, ensemble.stack_trees([v] * 4), x)
  single = _softmax(model, v, x)
  curve = ensemble.ensemble_curve(probs, labels)
  one = ensemble.classification_metrics(single, labels)
  for name, value in one.items():
    np.testing.assert_allclose(curve['ensemble'][name], np.full(4, value), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curve['members'][name], np.full(4, value), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(ensemble.pairwise_disagreement(probs), np.zeros((4, 4)))


def test_bad_arguments():
  model, x = TinyMLP(), _x()
  stacked = ensemble.stack_trees([_member(model, 0, x)])
  with pytest.raises(ValueError, match='batch_size=0'):
    ensemble.ensemble_predict(model.apply, stacked, x, batch_size=0)
  with pytest.raises(ValueError, match='num_samples=0'):
    ensemble.mc_dropout_predict(model.apply, _member(model, 0, x), x, jax.random.key(0), 0)
  with pytest.raises(ValueError, match='num_bins=0'):
    ensemble.expected_calibration_error(jnp.ones((1, 2)) / 2, jnp.zeros(1, jnp.int32), 0)


def _dropout_mlp(rate):
  return models.MLP(depth=2, width=16, num_classes=3, dropout_rates=(rate, rate),
                    batch_norm=True)


def test_mc_dropout_samples():
  x = _x(n=12)
  model = _dropout_mlp(0.5)
  v = _member(model, 0, x)  # BatchNorm must run on its running statistics
  key = jax.random.key(3)
  probs = ensemble.mc_dropout_predict(model.apply, v, x, key, 6)
  chex.assert_shape(probs, (6, 12, 3))
  np.testing.assert_allclose(jnp.sum(probs, -1), 1.0, rtol=1e-5)
  deterministic = _softmax(model, v, x)
  for s in range(6):  # dropout is active: every sample differs from the mean network
    assert not np.allclose(probs[s], deterministic, atol=1e-4)
  assert not np.allclose(probs[0], probs[1], atol=1e-4)  # different masks per sample
  np.testing.assert_array_equal(  # the same key gives the same samples
      ensemble.mc_dropout_predict(model.apply, v, x, key, 6), probs)
  batched = ensemble.mc_dropout_predict(model.apply, v, x, key, 6, batch_size=5)
  chex.assert_shape(batched, (6, 12, 3))
  # Rate 0: every sample is the deterministic (inference-mode) network.
  model0 = _dropout_mlp(0.0)
  v0 = _member(model0, 0, x)
  probs0 = ensemble.mc_dropout_predict(model0.apply, v0, x, key, 3, batch_size=5)
  for s in range(3):
    np.testing.assert_allclose(probs0[s], _softmax(model0, v0, x), rtol=1e-5, atol=1e-6)


# --- metrics ----------------------------------------------------------------------

# Four examples, two classes, confidences placed away from bin edges (K = 15,
# bin b covers (b/15, (b+1)/15]): 0.95 -> bin 14; 0.62 and 0.64 -> bin 9
# (0.6 < c <= 0.6667); 0.71 -> bin 10.
PROBS = np.array([[0.95, 0.05], [0.38, 0.62], [0.64, 0.36], [0.29, 0.71]], np.float32)
LABELS = np.array([0, 1, 1, 0])  # correct, correct, wrong, wrong


def test_ece_by_hand():
  # bin 14: |1 - 0.95|; bin 9: |(1 + 0) - (0.62 + 0.64)|; bin 10: |0 - 0.71|.
  want = (0.05 + abs(1.0 - 1.26) + 0.71) / 4
  np.testing.assert_allclose(ensemble.expected_calibration_error(PROBS, LABELS), want, rtol=1e-5)
  # One bin: |accuracy - mean confidence|.
  want1 = abs(0.5 - (0.95 + 0.62 + 0.64 + 0.71) / 4)
  np.testing.assert_allclose(
      ensemble.expected_calibration_error(PROBS, LABELS, num_bins=1), want1, rtol=1e-5)


def test_ece_matches_a_loop_over_bins():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 4)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labels = rng.integers(0, 4, size=500)
  conf, pred = probs.max(-1), probs.argmax(-1)
  want = 0.0
  for b in range(15):
    inside = (conf > b / 15) & (conf <= (b + 1) / 15)
    if inside.any():
      want += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
  got = ensemble.expected_calibration_error(probs.astype(np.float32), labels)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_nll_brier_error_by_hand():
  want_nll = -(np.log(0.95) + np.log(0.62) + np.log(0.36) + np.log(0.29)) / 4
  np.testing.assert_allclose(ensemble.negative_log_likelihood(PROBS, LABELS), want_nll, rtol=1e-5)
  want_brier = (2 * 0.05**2 + 2 * 0.38**2 + 2 * 0.64**2 + 2 * 0.71**2) / 4
  np.testing.assert_allclose(ensemble.brier_score(PROBS, LABELS), want_brier, rtol=1e-5)
  np.testing.assert_allclose(ensemble.error_rate(PROBS, LABELS), 0.5)
  # A probability of exactly 0 for the label is clipped to eps, not -log 0.
  hard = np.array([[1.0, 0.0]], np.float32)
  np.testing.assert_allclose(
      ensemble.negative_log_likelihood(hard, np.array([1]), eps=1e-8), -np.log(1e-8), rtol=1e-5)


def test_ensemble_curve_averages_the_last_members():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 30, 4)) * 3
  probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
  labels = rng.integers(0, 4, size=30)
  curve = ensemble.ensemble_curve(probs, labels)
  for m in (1, 2, 3):
    want = ensemble.classification_metrics(probs[3 - m:].mean(0), labels)
    for name, value in want.items():
      np.testing.assert_allclose(curve['ensemble'][name][m - 1], value, rtol=1e-5, atol=1e-7)
  for i in range(3):
    np.testing.assert_allclose(curve['members']['nll'][i],
                               ensemble.negative_log_likelihood(probs[i], labels), rtol=1e-6)
  # An ensemble of diverse members beats its average member in NLL.
  assert curve['ensemble']['nll'][-1] < np.mean(curve['members']['nll'])


def test_pairwise_disagreement():
  # Predictions: member 0 -> [0, 0, 1, 1], 1 -> [0, 1, 1, 1], 2 -> [1, 1, 0, 0].
  preds = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]])
  probs = np.eye(2, dtype=np.float32)[preds] * 0.8 + 0.1
  d = np.asarray(ensemble.pairwise_disagreement(probs))
  want = np.array([[0, 1, 4], [1, 0, 3], [4, 3, 0]]) / 4
  np.testing.assert_allclose(d, want)
  np.testing.assert_array_equal(d, d.T)
  np.testing.assert_array_equal(np.diag(d), 0.0)


# --- replicas ---------------------------------------------------------------------


def _init_fn(model, x, tx):
  def init(key):
    variables = model.init(key, x[:2])
    return state_lib.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=tx,
        rng=jax.random.fold_in(key, 1))
  return init


def test_vmapped_replicas_equal_separate_runs():
  # SGD, not Adam: the bias before BatchNorm has a zero gradient up to
  # rounding, which Adam would blow up to steps of size lr in random directions.
  model, tx = TinyMLP(), optim.sgd(0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(48, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
  init = _init_fn(model, x, tx)
  keys = jax.random.split(jax.random.key(7), 3)
  states = jax.jit(jax.vmap(init))(keys)
  chex.assert_shape(states.step, (3,))
  separate = [jax.jit(init)(k) for k in keys]
  for got, want in zip(ensemble.unstack_tree(states), separate):
    chex.assert_trees_all_close(got.params, want.params, rtol=1e-6, atol=1e-7)
  # Replicas start apart (independent seeds).
  assert not np.allclose(separate[0].params['Dense_0']['kernel'],
                         separate[1].params['Dense_0']['kernel'])

  train_step = steps_lib.make_train_step()
  replicas = steps_lib.StepSpec(replicas=True)
  many = jax.jit(lambda s, b: steps_lib.train_step(s, b, True, replicas))
  one = jax.jit(train_step)
  for i in range(4):
    batch = dict(x=x[12 * i:12 * (i + 1)], y=y[12 * i:12 * (i + 1)])
    states, metrics = many(states, batch)
    chex.assert_shape(metrics['loss'], (3,))
    outs = [one(s, batch) for s in separate]
    separate = [s for s, _ in outs]
    np.testing.assert_allclose(metrics['loss'], [float(m['loss']) for _, m in outs],
                               rtol=1e-5, atol=1e-6)
  # Float tolerance: the vmapped matmuls are batched dot_generals, which XLA
  # may sum in another order than the separate ones.
  for got, want in zip(ensemble.unstack_tree(states), separate):
    assert int(got.step) == 4
    chex.assert_trees_all_close(got.params, want.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(got.batch_stats, want.batch_stats, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(got.opt_state, want.opt_state, rtol=1e-5, atol=1e-6)
