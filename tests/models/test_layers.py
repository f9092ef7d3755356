"""Train/eval behaviour: dropout, alpha dropout, MC dropout, BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models


def key(seed):
  # 'rbg' keys: one cheap RNG op instead of threefry's compiled rounds.
  return jax.random.key(seed, impl='rbg')


@pytest.mark.parametrize('cls', [models.Dropout, models.AlphaDropout])
def test_dropout_is_the_identity_at_evaluation(cls):
  x = jax.random.normal(key(0), (64, 32))
  y = cls(0.5).apply({}, x, train=False)  # No PRNG needed.
  np.testing.assert_array_equal(y, x)


def test_dropout_scales_kept_units_by_one_over_keep():
  p = 0.3
  x = jax.random.uniform(key(0), (200, 100), minval=1.0, maxval=2.0)
  y = np.asarray(models.Dropout(p).apply(
      {}, x, train=True, rngs={'dropout': key(1)}))
  kept = y != 0.0
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / (1 - p), rtol=1e-6)
  assert abs((1.0 - kept.mean()) - p) < 0.01  # 20,000 draws: sd 0.003.


def test_alpha_dropout_keeps_zero_mean_unit_variance():
  x = jax.random.normal(key(0), (400, 500))
  y = np.asarray(models.AlphaDropout(0.2).apply(
      {}, x, train=True, rngs={'dropout': key(1)}))
  assert abs(y.mean()) < 0.01 and abs(y.var() - 1.0) < 0.02
  # Dropped units all sit at one value, a * alpha' + b.
  _, counts = np.unique(y, return_counts=True)
  assert counts.max() > 0.15 * y.size


@pytest.mark.parametrize('rate', [-0.1, 1.0])
def test_dropout_rejects_bad_rate(rate):
  with pytest.raises(ValueError, match=f'rate={rate}'):
    models.Dropout(rate).apply({}, jnp.ones(3), train=True,
                               rngs={'dropout': key(0)})


def _dropout_mlp():
  config = models.default_config('mlp')
  config.update(depth=2, width=32, dropout_rate=0.5)
  return models.init_model(config, key(0), (8,))


def test_mc_dropout_samples_at_evaluation_from_its_own_stream():
  model, variables = _dropout_mlp()
  x = jax.random.normal(key(1), (4, 8))
  mc = lambda key, train_key: model.apply(
      variables, x, train=False, mc_dropout=True,
      rngs={'mc_dropout': key, 'dropout': train_key})
  a = mc(key(2), key(5))
  b = mc(key(3), key(5))
  assert not np.allclose(a, b)
  # The training stream plays no part in MC sampling.
  np.testing.assert_array_equal(a, mc(key(2), key(6)))
  # Plain evaluation is deterministic and differs from an MC sample.
  plain = model.apply(variables, x, train=False)
  assert not np.allclose(plain, a)
  with pytest.raises(Exception, match='mc_dropout'):
    model.apply(variables, x, train=False, mc_dropout=True,
                rngs={'dropout': key(2)})


def test_training_dropout_uses_the_dropout_stream():
  model, variables = _dropout_mlp()
  x = jax.random.normal(key(1), (4, 8))
  train = lambda key: model.apply(variables, x, train=True,
                                  rngs={'dropout': key})
  assert not np.allclose(train(key(2)), train(key(3)))


@pytest.mark.parametrize('momentum', [0.9, 0.5])
def test_batch_statistics_change_only_in_training(momentum):
  config = models.default_config('mlp')
  config.update(depth=1, width=4, batch_norm=True, bn_momentum=momentum)
  model, variables = models.init_model(config, key(0), (3,))
  x = 2.0 + jax.random.normal(key(1), (16, 3))
  _, evaluated = model.apply(variables, x, train=False, mutable=['batch_stats'])
  np.testing.assert_array_equal(
      evaluated['batch_stats']['bn_0']['mean'],
      variables['batch_stats']['bn_0']['mean'])
  _, trained = model.apply(variables, x, train=True, mutable=['batch_stats'])
  # Running mean starts at 0: after one step it is (1 - m) * batch mean.
  z = np.asarray(x) @ np.asarray(variables['params']['hidden_0']['kernel'])
  np.testing.assert_allclose(
      trained['batch_stats']['bn_0']['mean'], (1 - momentum) * z.mean(0),
      rtol=1e-5, atol=1e-6)


def test_batch_norm_in_training_normalises_with_batch_statistics():
  config = models.default_config('mlp')
  config.update(depth=1, width=4, batch_norm=True, activation='identity')
  model, variables = models.init_model(config, key(0), (3,))
  x = 5.0 + 3.0 * jax.random.normal(key(1), (64, 3))
  _, state = model.apply(variables, x, train=True,
                         mutable=['batch_stats', 'activations'])
  h = np.asarray(state['activations']['hidden_0_act'][0])
  np.testing.assert_allclose(h.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(h.var(0), 1.0, rtol=1e-3)
