"""Clipping transforms against Optax's, plus the hand checks of clip_by_norm
(not in Optax) and of what each clipping does to the gradient's direction.

A clipping transform is not an optimizer by itself: both sides are wrapped the
same way, ``chain(clip, sgd(0.1, momentum=0.9))``. The thresholds are chosen so
that clipping is active on the reference problem (gradients are O(1)).
"""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from tests.optim import harness


def _namespace(mod):
  def wrap(t):
    return mod.chain(t, mod.sgd(0.1, momentum=0.9))

  return types.SimpleNamespace(
      clip=lambda max_delta: wrap(mod.clip(max_delta)),
      clip_by_global_norm=lambda max_norm: wrap(mod.clip_by_global_norm(max_norm)),
      clip_by_block_rms=lambda threshold: wrap(mod.clip_by_block_rms(threshold)),
      adaptive_grad_clip=lambda clipping, **kw: wrap(
          mod.adaptive_grad_clip(clipping, **kw)),
  )


ROWS = [
    ('clip', dict(max_delta=0.3)),
    ('clip_by_global_norm', dict(max_norm=1.0)),
    ('clip_by_block_rms', dict(threshold=0.3)),
    ('adaptive_grad_clip', dict(clipping=0.05)),
]
COMPLEX = {'clip_by_global_norm', 'clip_by_block_rms', 'adaptive_grad_clip'}

globals().update(harness.alias_suite(
    ROWS, ours_module=_namespace(optim), reference_module=_namespace(optax),
    complex_names=COMPLEX,
))


def _grads():
  problem = harness.make_problem(steps=1)
  return problem.grad(problem.params), problem.params


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _cosine(a, b):
  a, b = _flat(a), _flat(b)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _apply(t, grads, params=None):
  return t.update(grads, t.init(grads), params)[0]


def test_clip_by_global_norm_keeps_the_direction_and_clip_changes_it():
  grads, _ = _grads()
  norm = float(np.linalg.norm(_flat(grads)))
  assert norm > 1.0  # so that clipping to 1 is active

  by_norm = _apply(optim.clip_by_global_norm(1.0), grads)
  np.testing.assert_allclose(np.linalg.norm(_flat(by_norm)), 1.0, rtol=1e-6)
  assert _cosine(grads, by_norm) == pytest.approx(1.0, abs=1e-6)

  by_value = _apply(optim.clip(0.3), grads)
  assert np.max(np.abs(_flat(by_value))) <= 0.3
  assert _cosine(grads, by_value) < 0.99


def test_clip_by_norm_clips_each_leaf_to_its_own_norm():
  grads, _ = _grads()
  c = 1.0
  clipped = _apply(optim.clip_by_norm(c), grads)
  n_clipped = 0
  for key in grads:
    g, out = np.asarray(grads[key]), np.asarray(clipped[key])
    norm = np.linalg.norm(g)
    assert np.linalg.norm(out) <= c * (1 + 1e-6)
    if norm < c:
      np.testing.assert_array_equal(out, g)  # inside the ball: untouched
    else:
      n_clipped += 1
      np.testing.assert_allclose(out, g * (c / norm), rtol=1e-6, atol=1e-7)
  # The problem has leaves on both sides of c, so both branches ran.
  assert 0 < n_clipped < len(grads)
  # Per-leaf directions are kept, the full direction is not.
  for key in grads:
    assert _cosine(grads[key], clipped[key]) == pytest.approx(1.0, abs=1e-6)
  assert _cosine(grads, clipped) < 0.999


def test_clip_by_norm_complex_and_jit():
  g = {'a': jnp.array([3.0 + 4.0j, 0.0]), 'b': jnp.array([0.1j])}
  t = optim.clip_by_norm(1.0)
  out = jax.jit(lambda g: t.update(g, t.init(g))[0])(g)
  np.testing.assert_allclose(out['a'], [0.6 + 0.8j, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(out['b'], g['b'])


def test_clip_by_block_rms_bounds_each_leaf():
  grads, _ = _grads()
  out = _apply(optim.clip_by_block_rms(0.3), grads)
  for key in grads:
    rms = np.sqrt(np.mean(np.asarray(out[key]) ** 2))
    assert rms <= 0.3 * (1 + 1e-6)


def test_adaptive_grad_clip_bounds_the_unit_norms():
  grads, params = _grads()
  out = _apply(optim.adaptive_grad_clip(0.05), grads, params)
  g = np.asarray(out['matrix'])
  p = np.asarray(params['matrix'])
  ratio = np.linalg.norm(g, axis=0) / np.maximum(np.linalg.norm(p, axis=0), 1e-3)
  assert np.all(ratio <= 0.05 * (1 + 1e-5))


def test_adaptive_grad_clip_needs_params():
  grads, _ = _grads()
  t = optim.adaptive_grad_clip(0.1)
  with pytest.raises(ValueError, match='adaptive_grad_clip'):
    t.update(grads, t.init(grads))


def test_adaptive_grad_clip_axis_matches_optax():
  grads, params = _grads()
  for axis in (None, 0, (0, 1)):
    if axis is None:
      g, p = grads, params
    else:
      g = {k: v for k, v in grads.items() if v.ndim >= 2}
      p = {k: v for k, v in params.items() if v.ndim >= 2}
    ours = _apply(optim.adaptive_grad_clip(0.05, axis=axis), g, p)
    ref = _apply(optax.adaptive_grad_clip(0.05, axis=axis), g, p)
    chex.assert_trees_all_close(ours, ref, rtol=1e-6)


@pytest.mark.parametrize('make', [
    lambda: optim.clip(0.3), lambda: optim.clip_by_norm(1.0),
    lambda: optim.clip_by_block_rms(0.3), lambda: optim.clip_by_global_norm(1.0),
])
def test_clips_ignore_params_of_another_structure(make):
  # As in Optax: e.g. before lookahead the params are LookaheadParams.
  grads, params = _grads()
  t = make()
  out, _ = t.update(grads, t.init(grads), optim.LookaheadParams.init_synced(params))
  chex.assert_trees_all_equal_structs(out, grads)


@pytest.mark.parametrize('make,match', [
    (lambda: optim.clip(-0.5), 'max_delta=-0.5'),
    (lambda: optim.clip_by_global_norm(0.0), 'max_norm=0.0'),
    (lambda: optim.clip_by_global_norm(-1.0), 'max_norm=-1.0'),
    (lambda: optim.clip_by_norm(-2.0), 'max_norm=-2.0'),
    (lambda: optim.clip_by_block_rms(0.0), 'threshold=0.0'),
    (lambda: optim.adaptive_grad_clip(-0.1), 'clipping=-0.1'),
    (lambda: optim.adaptive_grad_clip(0.1, eps=-1.0), 'eps=-1.0'),
])
def test_rejects_bad_hyperparameters(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_traced_thresholds_are_not_checked():
  grads, _ = _grads()

  @jax.jit
  def run(c):
    out = _apply(optim.clip_by_global_norm(c), grads)
    return out, _apply(optim.clip_by_norm(c), grads)

  by_global, by_leaf = run(1.0)
  np.testing.assert_allclose(np.linalg.norm(_flat(by_global)), 1.0, rtol=1e-6)
  chex.assert_tree_all_finite(by_leaf)
