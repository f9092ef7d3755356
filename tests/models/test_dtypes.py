"""Model dtypes: ``dtype`` (compute) and ``param_dtype`` on every config.

Shapes and dtypes only (``jax.eval_shape``): nothing is compiled.
"""

import chex
import jax
import jax.numpy as jnp
import pytest

from research import models

SHAPES = {'mlp': (6,), 'mnist1d_mlp': (40,), 'mnist1d_cnn': (40,), 'cnn': (12, 12),
          'resnet': (8, 8, 3), 'wide_resnet': (8, 8, 3)}
SMALL = {'mlp': dict(depth=2, width=8, batch_norm=True), 'cnn': dict(features=(4,), hidden=8,
                                                                    batch_norm=True),
         'mnist1d_cnn': dict(batch_norm=True), 'wide_resnet': dict(depth=10, widen_factor=1)}


def _variables_and_outputs(name, **fields):
  config = models.default_config(name)
  config.update(SMALL.get(name, {}))
  config.update(fields)
  model = models.build_model(config)
  x = jnp.ones((2,) + SHAPES[name], jnp.float32)

  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
    out, new = model.apply(variables, x, train=True, mutable=['batch_stats', 'activations'],
                           rngs={'dropout': jax.random.key(1)})
    return variables, out, new
  return jax.eval_shape(run)


def test_every_model_config_has_the_dtype_fields():
  for name in models.model_names():
    config = models.default_config(name)
    assert (config.dtype, config.param_dtype) == ('auto', 'float32'), name


@pytest.mark.parametrize('name', sorted(SHAPES))
def test_bfloat16_compute_with_float32_params_and_statistics(name):
  variables, out, new = _variables_and_outputs(name, dtype='bfloat16')
  chex.assert_type(jax.tree.leaves(variables['params']), jnp.float32)
  chex.assert_type(out, jnp.bfloat16)
  chex.assert_type(jax.tree.leaves(new['activations']), jnp.bfloat16)
  stats = jax.tree.leaves(new.get('batch_stats', {}))
  assert stats or name == 'mnist1d_mlp'
  chex.assert_type(stats, jnp.float32)


def test_auto_follows_the_inputs_and_param_dtype_sets_the_params():
  variables, out, _ = _variables_and_outputs('mnist1d_cnn')
  chex.assert_type([out] + jax.tree.leaves(variables['params']), jnp.float32)
  variables, out, new = _variables_and_outputs('mnist1d_cnn', param_dtype='bfloat16')
  chex.assert_type(jax.tree.leaves(variables['params']), jnp.bfloat16)
  chex.assert_type(out, jnp.float32)  # Flax's dtype=None: float32 inputs promote
  chex.assert_type(jax.tree.leaves(new['batch_stats']), jnp.float32)


@pytest.mark.parametrize('field,value,allowed', [
    ('dtype', 'bf16', "'auto', 'float32', 'bfloat16', 'float16'"),
    ('param_dtype', 'auto', "'float32', 'bfloat16', 'float16'"),
    ('param_dtype', 'int8', "'float32', 'bfloat16', 'float16'"),
])
def test_unknown_dtype_names_fail_naming_the_field(field, value, allowed):
  config = models.default_config('resnet')
  config[field] = value
  with pytest.raises(ValueError, match=f"resnet: {field}='{value}' is not allowed; "
                                       f'allowed: {allowed}'):
    models.build_model(config)
