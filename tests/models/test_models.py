"""Every model: forward and one SGD step under jit; config errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research import optim

# 'rbg' keys compile to one RNG op; threefry's unrolled rounds made each
# init and dropout mask cost seconds of XLA compile time on CPU.
def key(seed):
  return jax.random.key(seed, impl='rbg')


# name, config overrides, input shape (tiny; ResNets at batch 2 on 8x8).
CASES = [
    ('mlp', dict(depth=2, width=8, dropout_rate=0.5, batch_norm=True,
                 residual=True), (6,)),
    ('mlp', dict(depth=2, width=8, activation='selu', alpha_dropout=True,
                 dropout_rates=(0.1, 0.2), input_dropout_rate=0.2), (6,)),
    ('mnist1d_mlp', {}, (40,)),
    ('mnist1d_cnn', dict(dropout_rate=0.1), (40,)),
    ('mnist1d_cnn', dict(batch_norm=True), (40,)),
    ('cnn', dict(features=(4, 8), hidden=16, batch_norm=True,
                 dropout_rate=0.5), (12, 12)),
    ('resnet', dict(depth=20), (8, 8, 3)),
    ('wide_resnet', dict(depth=16, widen_factor=4, dropout_rate=0.3),
     (8, 8, 3)),
]


def _train_step(model, opt):
  def loss_fn(params, state, x, y, key):
    logits, new_state = model.apply(
        {'params': params, **state}, x, train=True,
        rngs={'dropout': key}, mutable=['batch_stats'],
    )
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(y.shape[0]), y]), (logits, new_state)

  @jax.jit
  def step(params, state, opt_state, x, y, key):
    grads, (logits, state) = jax.grad(loss_fn, has_aux=True)(
        params, state, x, y, key)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optim.apply_updates(params, updates)
    # Evaluation needs no PRNG.
    evaluated = model.apply({'params': params, **state}, x, train=False)
    return params, state, logits, evaluated
  return step


@pytest.mark.parametrize('name,overrides,shape', CASES)
def test_forward_and_one_sgd_step_under_jit(name, overrides, shape):
  config = models.default_config(name)
  config.update(overrides)
  model, variables = models.init_model(config, key(0), shape)
  params = variables['params']
  state = {k: v for k, v in variables.items() if k != 'params'}
  x = jax.random.normal(key(1), (2,) + shape)
  y = jnp.array([0, 1])
  opt = optim.sgd(0.1)
  new_params, new_state, logits, evaluated = _train_step(model, opt)(
      params, state, opt.init(params), x, y, key(2))
  chex.assert_shape([logits, evaluated], (2, config.num_classes))
  chex.assert_tree_all_finite((new_params, new_state, evaluated))
  chex.assert_trees_all_equal_shapes(new_params, params)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_params, params)
  assert any(jax.tree.leaves(moved))
  if state:  # Training updated the running statistics.
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_state, state)
    assert all(jax.tree.leaves(changed))


def test_preactivation_resnet_with_projections_traces():
  # Shapes only (no compile): the variant's step compiles like ResNet-20's.
  config = models.default_config('resnet')
  config.update(preact=True, shortcut='B')
  model = models.build_model(config)
  x = jnp.zeros((2, 8, 8, 3))
  variables = jax.eval_shape(lambda: model.init(key(0), x))
  params = variables['params']
  state = {'batch_stats': variables['batch_stats']}
  opt = optim.sgd(0.1)
  out = jax.eval_shape(
      lambda p, s: _train_step(model, opt)(
          p, s, opt.init(p), x, jnp.array([0, 1]), key(2)),
      params, state)
  chex.assert_trees_all_equal_shapes(out[0], params)
  assert 'proj' in params['stage2_block0']
  assert 'bn_final' in params and 'bn_init' not in params


@pytest.mark.parametrize('name,field,value,match', [
    ('mlp', 'init', 'xavier', "init='xavier'.*known: auto, glorot_uniform"),
    ('mlp', 'activation', 'rectifier', "activation='rectifier'.*known:"),
    ('mlp', 'dropout_rate', 1.0, 'dropout_rate=1.0.*\\[0, 1\\)'),
    ('mlp', 'dropout_rate', -0.1, 'dropout_rate=-0.1'),
    ('mlp', 'dropout_rates', (0.1, 1.5, 0.1), 'dropout_rates\\[1\\]=1.5'),
    ('mlp', 'dropout_rates', (0.1,), 'dropout_rates=.*one per layer'),
    ('mlp', 'input_dropout_rate', 1.0, 'input_dropout_rate=1.0'),
    ('mlp', 'width', 0, 'width=0'),
    ('mlp', 'depth', 0, 'depth=0'),
    ('mlp', 'depth', -3, 'depth=-3'),
    ('mlp', 'init_scale', -1.0, 'init_scale=-1.0'),
    ('cnn', 'features', (8, 0), 'features\\[1\\]=0'),
    ('cnn', 'hidden', 0, 'hidden=0'),
    ('mnist1d_cnn', 'channels', 0, 'channels=0'),
    ('resnet', 'depth', 21, 'depth=21.*20, 32, 44, 56, 110'),
    ('resnet', 'shortcut', 'C', "shortcut='C'"),
    ('resnet', 'bn_momentum', 1.0, 'bn_momentum=1.0'),
    ('wide_resnet', 'depth', 17, 'depth=17.*6n \\+ 4'),
    ('wide_resnet', 'widen_factor', 0, 'widen_factor=0'),
    ('wide_resnet', 'dropout_rate', 1.0, 'dropout_rate=1.0'),
])
def test_bad_config_names_the_field(name, field, value, match):
  config = models.default_config(name)
  config[field] = value
  with pytest.raises(ValueError, match=match):
    models.build_model(config)


def test_unknown_model_name():
  config = models.default_config('mlp')
  config.name = 'transformer'
  with pytest.raises(ValueError, match="name='transformer'.*'mlp'"):
    models.build_model(config)


def test_every_registered_model_has_a_case():
  assert {name for name, _, _ in CASES} == set(models.model_names())


def test_mnist1d_mlp_matches_the_reference_forward():
  # MLPBase: h1 = relu(W1 x), h2 = h1 + relu(W2 h1), out = W3 h2.
  config = models.default_config('mnist1d_mlp')
  model, variables = models.init_model(config, jax.random.key(0))
  p = jax.tree.map(np.asarray, variables['params'])
  x = np.asarray(jax.random.normal(jax.random.key(1), (3, 40)))
  relu = lambda z: np.maximum(z, 0.0)
  dense = lambda name, h: h @ p[name]['kernel'] + p[name]['bias']
  h1 = relu(dense('hidden_0', x))
  h2 = h1 + relu(dense('hidden_1', h1))
  np.testing.assert_allclose(
      model.apply(variables, x), dense('head', h2), rtol=1e-5, atol=1e-5)
