"""Which kernels max-norm covers, and along which axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research import optim


def _mlp(**overrides):
  config = models.default_config('mlp')
  config.update(depth=3, width=8, max_norm=3.0, **overrides)
  _, variables = models.init_model(config, jax.random.key(0), (5,))
  return config, variables['params']


def _true_paths(mask):
  return sorted(
      '/'.join(k.key for k in path)
      for path, v in jax.tree_util.tree_leaves_with_path(mask) if v
  )


def test_hidden_covers_every_hidden_kernel_but_not_biases_or_head():
  config, params = _mlp()
  mask, axis = models.max_norm_mask(config, params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert _true_paths(mask) == [f'hidden_{i}/kernel' for i in range(3)]
  # axis holds the fan-in axes: one norm per unit.
  assert jnp.linalg.norm(params['hidden_1']['kernel'], axis=axis).shape == (8,)


def test_named_layers_and_all():
  config, params = _mlp(max_norm_layers='hidden_0, hidden_2')
  assert _true_paths(models.max_norm_mask(config, params)[0]) == [
      'hidden_0/kernel', 'hidden_2/kernel']
  config.max_norm_layers = 'all'
  assert 'head/kernel' in _true_paths(models.max_norm_mask(config, params)[0])


def test_off_when_max_norm_is_zero():
  config, params = _mlp()
  config.max_norm = 0.0
  mask, _ = models.max_norm_mask(config, params)
  assert not any(jax.tree.leaves(mask))


def test_unknown_layer_is_an_error():
  config, params = _mlp(max_norm_layers='hidden_7')
  with pytest.raises(ValueError, match="'hidden_7'.*hidden_0"):
    models.max_norm_mask(config, params)


def test_conv_and_dense_kernels_form_groups():
  config = models.default_config('cnn')
  config.update(features=(4,), hidden=8, max_norm=2.0, max_norm_layers='all')
  _, variables = models.init_model(config, jax.random.key(0), (8, 8, 1))
  params = variables['params']
  with pytest.raises(ValueError, match='max_norm_groups'):
    models.max_norm_mask(config, params)
  groups = models.max_norm_groups(config, params)
  assert [axis for _, axis in groups] == [(0,), (0, 1, 2)]
  assert _true_paths(groups[0][0]) == ['dense/kernel', 'head/kernel']
  assert _true_paths(groups[1][0]) == ['conv_0/kernel']
  kernel = params['conv_0']['kernel']
  assert np.shape(jnp.linalg.norm(kernel.reshape(-1, 4), axis=0)) == (4,)


def test_mask_drives_the_optimizer_constraint():
  config, params = _mlp(max_norm_layers='hidden')
  mask, axis = models.max_norm_mask(config, params)
  opt = optim.chain(optim.sgd(1.0), optim.max_norm(config.max_norm, axis, mask))
  grads = jax.tree.map(lambda p: -10.0 * jnp.ones_like(p), params)
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optim.apply_updates(params, updates)
  for i in range(3):
    norms = jnp.linalg.norm(new[f'hidden_{i}']['kernel'], axis=axis)
    np.testing.assert_allclose(norms, config.max_norm, rtol=1e-5)
  # The head is not covered: its units exceed the bound.
  assert jnp.all(jnp.linalg.norm(new['head']['kernel'], axis=0) > config.max_norm)
