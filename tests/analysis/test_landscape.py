"""Filter-normalized directions, slices, interpolation and loss barriers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research.analysis import landscape


def _cnn_with_batchnorm():
  config = models.default_config('mnist1d_cnn')
  config.channels = 4
  config.batch_norm = True
  return models.build_model(config)


def _random_like(shapes, seed):
  # Values drawn in NumPy on the model's shapes: no initializer to compile.
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def _variables(model, seed):
  return _random_like(jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 40)), train=False)), seed)


def test_filter_normalization_gives_each_filter_the_models_filter_norm():
  params = _variables(_cnn_with_batchnorm(), 0)['params']
  d = landscape.random_direction(params, jax.random.key(1))
  for path, (w, x) in zip(jax.tree_util.tree_leaves_with_path(params),
                          zip(jax.tree.leaves(params), jax.tree.leaves(d))):
    if w.ndim >= 2:  # conv (width, in, out) and dense (in, out): a filter per output
      axes = tuple(range(w.ndim - 1))
      np.testing.assert_allclose(np.sqrt(np.sum(np.square(x), axis=axes)),
                                 np.sqrt(np.sum(np.square(w), axis=axes)), rtol=1e-5,
                                 err_msg=str(path))
      assert not np.allclose(x, w)  # a random direction, not the weights
    else:  # biases and BatchNorm scale/offset: no perturbation (ignore='biasbn')
      np.testing.assert_array_equal(x, np.zeros_like(w), err_msg=str(path))
  assert any('bn_' in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))


def test_layer_normalization_and_ignore_none():
  params = dict(k=jnp.arange(6.0).reshape(2, 3) + 1, b=jnp.asarray([1.0, -2.0]))
  d = landscape.random_direction(params, jax.random.key(0), norm='layer', ignore='none')
  np.testing.assert_allclose(jnp.linalg.norm(d['k']), jnp.linalg.norm(params['k']), rtol=1e-5)
  np.testing.assert_array_equal(d['b'], params['b'])  # the paper's code copies them


def test_unknown_direction_type_fails():
  with pytest.raises(ValueError, match="norm='spectral' is unknown"):
    landscape.random_direction(dict(k=jnp.ones((2, 2))), jax.random.key(0), norm='spectral')
  with pytest.raises(ValueError, match="ignore='bn'"):
    landscape.normalize_direction({}, {}, ignore='bn')


def test_interpolation_ends_are_the_endpoints_losses():
  model = _cnn_with_batchnorm()
  va, vb = _variables(model, 1), _variables(model, 2)
  for v in (va, vb):  # positive BatchNorm variances
    v['batch_stats'] = jax.tree.map(jnp.abs, v['batch_stats'])
  x = jax.random.normal(jax.random.key(2), (16, 40))
  y = jnp.arange(16) % 10

  def loss(variables):
    logits = model.apply(variables, x)
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  ts = jnp.linspace(0.0, 1.0, 5)
  curve = jax.jit(lambda a, b: landscape.interpolation_curve(loss, a, b, ts))(va, vb)
  assert float(curve[0]) == float(jax.jit(loss)(va))
  assert float(curve[-1]) == float(jax.jit(loss)(vb))
  assert not np.isclose(curve[0], curve[-1])


def test_slices_and_barrier():
  f = lambda p: jnp.sum(p['w'] ** 2)  # noqa: E731
  params = dict(w=jnp.asarray([[1.0, 2.0]]))
  d = dict(w=jnp.asarray([[1.0, 0.0]]))
  e = dict(w=jnp.asarray([[0.0, 1.0]]))
  alphas = jnp.asarray([-1.0, 0.0, 1.0])
  np.testing.assert_allclose(landscape.loss_curve(f, params, d, alphas), [4.0, 5.0, 8.0])
  surface = landscape.loss_surface(f, params, d, e, alphas, jnp.asarray([0.0, 1.0]))
  np.testing.assert_allclose(surface, [[4.0, 9.0], [5.0, 10.0], [8.0, 13.0]])
  # A convex path has no barrier; a bump of height 1 over the line has barrier 1.
  ts = np.linspace(0, 1, 5)
  assert landscape.loss_barrier(ts, 2 + ts) == pytest.approx(0.0)
  assert landscape.loss_barrier(ts, 2 + ts + np.sin(np.pi * ts)) == pytest.approx(1.0)
  with pytest.raises(ValueError, match='from 0 to 1'):
    landscape.loss_barrier([0.2, 1.0], [1.0, 2.0])
