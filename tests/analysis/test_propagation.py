"""The propagation probe: statistics against direct computation, and the
classic results it must reproduce (SELU self-normalizes, sigmoid with N(0, 1)
weights saturates)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research.analysis import cross_entropy_loss, probe_config, propagation_probe


def key(seed):
  # 'rbg' keys: one cheap RNG op instead of threefry's compiled rounds.
  return jax.random.key(seed, impl='rbg')


def _mlp_config(**overrides):
  config = models.default_config('mlp')
  config.update(**overrides)
  return config


def _batch(n, d, seed=1):
  x = jax.random.normal(jax.random.key(seed), (n, d))
  return x, jnp.arange(n) % 10


def test_selu_with_lecun_normal_keeps_unit_variance_through_64_layers():
  config = _mlp_config(depth=64, width=512, activation='selu',
                       init='lecun_normal')
  x, y = _batch(128, 512)
  out = probe_config(config, x, y, key(0))
  assert len(out['act_var']) == 64
  assert np.all((out['act_var'] >= 0.9) & (out['act_var'] <= 1.1))
  assert np.all(np.abs(out['act_mean']) < 0.1)
  assert np.all(np.isfinite(out['grad_norm'])) and np.all(out['grad_norm'] > 0)


def test_sigmoid_with_unit_normal_weights_saturates():
  x, y = _batch(64, 512)
  naive = probe_config(
      _mlp_config(depth=6, width=512, activation='sigmoid', init='normal',
                  init_scale=1.0), x, y, key(0))
  assert np.all(naive['saturated'] > 0.5)
  # Glorot's scale keeps the same network out of saturation.
  glorot = probe_config(
      _mlp_config(depth=6, width=512, activation='sigmoid',
                  init='glorot_uniform'), x, y, key(0))
  assert np.all(glorot['saturated'] < 0.05)


def test_saturation_thresholds():
  # Units placed by their bias: sigmoid(+-6) and tanh(+-3) are within 1% of
  # the output range of an asymptote; sigmoid(+-1) and tanh(+-1) are not.
  for activation, far, near in [('sigmoid', 6.0, 1.0), ('tanh', 3.0, 1.0)]:
    config = _mlp_config(depth=1, width=4, activation=activation)
    model, variables = models.init_model(config, key(0), (3,))
    params = jax.tree.map(jnp.zeros_like, variables['params'])
    params['hidden_0']['bias'] = jnp.array([far, -far, near, -near])
    out = propagation_probe(model, {'params': params}, jnp.ones((2, 3)),
                            jnp.array([0, 1]))
    assert out['saturated'][0] == pytest.approx(0.5)
  relu = propagation_probe(model, {'params': params}, jnp.ones((2, 3)),
                           jnp.array([0, 1]), activation='relu')
  assert np.isnan(relu['saturated'][0])


def test_dead_relu_units():
  config = _mlp_config(depth=2, width=4, activation='relu')
  model, variables = models.init_model(config, key(0), (3,))
  params = jax.tree.map(jnp.array, variables['params'])
  # Two units of the first layer can never fire on these inputs.
  params['hidden_0']['kernel'] = params['hidden_0']['kernel'].at[:, :2].set(0.0)
  params['hidden_0']['bias'] = jnp.array([-1.0, -1.0, 5.0, 5.0])
  x, y = _batch(16, 3)
  out = propagation_probe(model, {'params': params}, x, y)
  assert out['dead'][0] == 0.5
  # A dead unit passes no gradient to its incoming weights.
  grads = jax.grad(lambda p: cross_entropy_loss(
      model.apply({'params': p}, x), y))(params)
  assert not np.any(grads['hidden_0']['kernel'][:, :2])


def test_statistics_and_gradient_norms_match_direct_computation():
  # Depth 12: layer order must be hidden_0 ... hidden_11 (not hidden_10
  # before hidden_2, as sorted keys would give).
  depth = 12
  config = _mlp_config(depth=depth, width=16, activation='tanh')
  model, variables = models.init_model(config, key(0), (5,))
  x, y = _batch(32, 5)
  out = propagation_probe(model, variables, x, y)
  names = [f'hidden_{i}' for i in range(depth)]
  assert list(out['layers']) == names
  assert list(out['kernels']) == names + ['head']

  _, state = model.apply(variables, x, mutable=['activations'])
  acts = [np.asarray(state['activations'][f'{n}_act'][0]) for n in names]
  np.testing.assert_allclose(out['act_mean'], [a.mean() for a in acts],
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out['act_var'], [a.var() for a in acts],
                             rtol=1e-4)
  grads = jax.grad(lambda p: cross_entropy_loss(
      model.apply({'params': p}, x), y))(variables['params'])
  direct = [np.linalg.norm(grads[n]['kernel']) for n in names + ['head']]
  np.testing.assert_allclose(out['kernel_grad_norm'], direct, rtol=1e-4)
  np.testing.assert_allclose(out['grad_norm'], direct[:-1], rtol=1e-4)
  assert out['loss'] == pytest.approx(
      float(cross_entropy_loss(model.apply(variables, x), y)), rel=1e-5)


def test_residual_blocks_in_training_mode():
  config = models.default_config('wide_resnet')
  config.update(depth=10, widen_factor=1, dropout_rate=0.3)
  model, variables = models.init_model(config, key(0), (8, 8, 3))
  x = jax.random.normal(key(1), (2, 8, 8, 3))
  y = jnp.array([0, 1])
  out = propagation_probe(model, variables, x, y, train=True,
                          rngs={'dropout': key(2)})
  assert list(out['layers']) == ['stage1_block0', 'stage2_block0',
                                 'stage3_block0']
  assert out['kernels'][0] == 'conv_init' and out['kernels'][-1] == 'head'
  # A block's gradient norm is the global norm over its kernels.
  kernels = dict(zip(out['kernels'], out['kernel_grad_norm']))
  parts = [kernels[f'stage2_block0/{k}'] for k in ('conv_0', 'conv_1', 'proj')]
  assert out['grad_norm'][1] == pytest.approx(np.linalg.norm(parts), rel=1e-5)
  assert np.all(np.isfinite(out['act_var'])) and np.all(out['grad_norm'] > 0)


def test_bad_saturation_tol():
  config = _mlp_config(depth=1, width=2)
  model, variables = models.init_model(config, key(0), (3,))
  with pytest.raises(ValueError, match='saturation_tol=0.7'):
    propagation_probe(model, variables, jnp.ones((2, 3)), jnp.array([0, 1]),
                      saturation_tol=0.7)
