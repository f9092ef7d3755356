"""Initializers by name: variances against their formulas, `auto`, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models

N = 512  # fan_in = fan_out = N for a 512x512 kernel.

# name, init_scale, the variance formula at fan_in = fan_out = N.
VARIANCES = [
    ('glorot_uniform', None, 2.0 / (N + N)),
    ('glorot_normal', None, 2.0 / (N + N)),
    ('he_uniform', None, 2.0 / N),
    ('he_normal', None, 2.0 / N),
    ('lecun_uniform', None, 1.0 / N),
    ('lecun_normal', None, 1.0 / N),
    ('orthogonal', None, 1.0 / N),
    ('normal', None, 0.01**2),
    ('normal', 1.0, 1.0),
    ('uniform', None, 0.01**2 / 3.0),
    ('uniform', 0.5, 0.5**2 / 3.0),
    ('he_normal', 3.0, 9.0 * 2.0 / N),  # scale is a gain: variance * g^2.
]


@pytest.mark.parametrize('name,scale,variance', VARIANCES)
def test_empirical_variance_matches_formula(name, scale, variance):
  init = models.get_initializer(name, scale)
  w = np.asarray(init(jax.random.key(0), (N, N), jnp.float32))
  assert abs(w.var() / variance - 1.0) < 0.05
  # Every one is centred (flax's own `uniform` is not).
  assert abs(w.mean()) < 0.05 * np.sqrt(variance)


def test_every_registered_initializer_is_covered():
  covered = {name for name, _, _ in VARIANCES} | {'zeros'}
  assert covered == set(models.INITIALIZERS)


def test_zeros_and_orthogonal():
  w = models.get_initializer('zeros')(jax.random.key(0), (8, 4))
  assert not np.any(np.asarray(w))
  q = np.asarray(models.get_initializer('orthogonal', 2.0)(
      jax.random.key(0), (64, 16)))
  np.testing.assert_allclose(q.T @ q, 4.0 * np.eye(16), atol=1e-4)


@pytest.mark.parametrize('activation,expected', [
    ('sigmoid', 'glorot_uniform'),
    ('tanh', 'glorot_uniform'),
    ('identity', 'glorot_uniform'),
    ('relu', 'he_normal'),
    ('leaky_relu', 'he_normal'),
    ('elu', 'he_normal'),
    ('gelu', 'he_normal'),
    ('silu', 'he_normal'),
    ('selu', 'lecun_normal'),
])
def test_auto_picks_by_activation(activation, expected):
  assert models.resolve_init_name('auto', activation) == expected


def test_auto_knows_every_activation():
  for name in models.activation_names():
    assert models.resolve_init_name('auto', name) in models.INITIALIZERS


def test_auto_in_a_model_uses_lecun_for_selu():
  config = models.default_config('mlp')
  config.update(activation='selu', init='auto', width=512, depth=1)
  _, variables = models.init_model(config, jax.random.key(0), (512,))
  w = np.asarray(variables['params']['hidden_0']['kernel'])
  assert abs(w.var() * 512 - 1.0) < 0.05


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="init='xavier'.*glorot_uniform.*he_normal"):
    models.get_initializer('xavier')
  with pytest.raises(ValueError, match='activation=.*relu'):
    models.get_initializer('auto', activation='rectifier')
