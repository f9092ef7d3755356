"""Activations by name against their textbook formulas."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from research import models

X = np.linspace(-4.0, 4.0, 17).astype(np.float32)
SELU_ALPHA, SELU_LAMBDA = 1.6732632423543772, 1.0507009873554805


def _phi(x):
  return np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])


# name, alpha, numpy formula.
FORMULAS = [
    ('sigmoid', None, lambda x: 1.0 / (1.0 + np.exp(-x))),
    ('tanh', None, np.tanh),
    ('relu', None, lambda x: np.maximum(x, 0.0)),
    ('leaky_relu', None, lambda x: np.where(x > 0, x, 0.01 * x)),
    ('leaky_relu', 0.2, lambda x: np.where(x > 0, x, 0.2 * x)),
    ('elu', None, lambda x: np.where(x > 0, x, np.expm1(x))),
    ('elu', 0.5, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ('selu', None, lambda x: SELU_LAMBDA * np.where(
        x > 0, x, SELU_ALPHA * np.expm1(x))),
    ('gelu', None, lambda x: x * _phi(x)),
    ('silu', None, lambda x: x / (1.0 + np.exp(-x))),
    ('swish', None, lambda x: x / (1.0 + np.exp(-x))),
    ('softplus', None, lambda x: np.log1p(np.exp(x))),
    ('identity', None, lambda x: x),
]


@pytest.mark.parametrize('name,alpha,formula', FORMULAS)
def test_activation_matches_formula(name, alpha, formula):
  got = np.asarray(models.get_activation(name, alpha)(jnp.asarray(X)))
  np.testing.assert_allclose(got, formula(X.astype(np.float64)),
                             rtol=1e-5, atol=1e-6)


def test_unknown_activation_lists_the_known_ones():
  with pytest.raises(ValueError, match="activation='swishy'.*leaky_relu.*selu"):
    models.get_activation('swishy')


def test_unknown_activation_in_a_config():
  config = models.default_config('mlp')
  config.activation = 'rectifier'
  with pytest.raises(ValueError, match='activation=.*known:.*relu'):
    models.build_model(config)
