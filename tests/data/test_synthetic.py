"""Synthetic problems: shapes, ground truth, and what each is meant to show."""

import math

import numpy as np
import pytest

from research.data import synthetic


def _lstsq(x, y):
  return np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]


def test_teacher_student_regression_and_classification():
  reg = synthetic.teacher_student(
      num_train=64, num_test=32, input_dim=5, noise=0.0, seed=1
  )
  assert reg['x_train'].shape == (64, 5) and reg['y_train'].shape == (64,)
  assert reg['x_train'].dtype == np.float32 and reg['y_train'].dtype == np.float32
  noisy = synthetic.teacher_student(
      num_train=64, num_test=32, input_dim=5, noise=0.5, seed=1
  )
  np.testing.assert_array_equal(noisy['x_train'], reg['x_train'])
  assert np.std(noisy['y_train'] - reg['y_train']) == pytest.approx(0.5, rel=0.3)
  cls = synthetic.teacher_student(
      num_train=500, num_test=10, input_dim=5, num_classes=4, seed=1
  )
  assert cls['y_train'].dtype == np.int32 and set(np.unique(cls['y_train'])) <= set(
      range(4)
  )
  assert len(np.unique(cls['y_train'])) >= 2
  with pytest.raises(ValueError, match='num_classes'):
    synthetic.teacher_student(num_classes=1)


def test_changing_num_train_keeps_teacher_and_test_set():
  small = synthetic.teacher_student(num_train=10, num_test=20, noise=0.0, seed=3)
  large = synthetic.teacher_student(num_train=200, num_test=20, noise=0.0, seed=3)
  np.testing.assert_array_equal(small['x_test'], large['x_test'])
  np.testing.assert_array_equal(small['y_test'], large['y_test'])
  np.testing.assert_array_equal(small['x_train'], large['x_train'][:10])


def test_polynomial_features():
  x = np.array([-1.5, 0.0, 2.0], np.float32)
  f = synthetic.polynomial_features(x, 20)
  assert f.shape == (3, 21) and f.dtype == np.float32
  for i in (0, 1, 3, 20):
    np.testing.assert_allclose(
        f[:, i], x.astype(np.float64) ** i / math.factorial(i), rtol=1e-6
    )
  with pytest.raises(ValueError, match='degree'):
    synthetic.polynomial_features(x, -1)


def test_polynomial_regression_under_and_overfitting():
  data = synthetic.polynomial_regression(
      num_train=100, num_test=1000, noise=0.1, seed=0
  )
  features = {d: synthetic.polynomial_features(data['x_train'], d) for d in (1, 3)}
  # Degree 3 recovers the cubic; degree 1 cannot fit it.
  np.testing.assert_allclose(
      _lstsq(features[3], data['y_train']), synthetic.POLYNOMIAL_COEFFS, atol=0.15
  )

  def test_mse(degree, n_train):
    few = synthetic.polynomial_regression(num_train=n_train, num_test=1000, seed=0)
    w = _lstsq(synthetic.polynomial_features(few['x_train'], degree), few['y_train'])
    pred = synthetic.polynomial_features(few['x_test'], degree).astype(np.float64) @ w
    return np.mean((pred - few['y_test']) ** 2)

  assert test_mse(1, 100) > 10 * test_mse(3, 100)  # underfitting
  assert test_mse(3, 100) < 0.02  # noise 0.1 -> mse 0.01
  assert test_mse(20, 15) > 10 * test_mse(3, 15)  # few samples: overfitting


def test_linear_highdim_matches_the_textbook_setting():
  data = synthetic.linear_highdim(seed=0)
  assert data['x_train'].shape == (20, 200) and data['x_test'].shape == (100, 200)
  # With many samples least squares recovers b = 0.05 and w_i = 0.01; the
  # estimation error is about noise / sqrt(n) = 5e-4.
  big = synthetic.linear_highdim(num_train=1000, input_dim=200, seed=0)
  x = np.concatenate([np.ones((1000, 1)), big['x_train']], axis=1)
  w = np.linalg.solve(x.T @ x, x.T @ big['y_train'].astype(np.float64))
  assert w[0] == pytest.approx(0.05, abs=3e-3)
  np.testing.assert_allclose(w[1:], 0.01, atol=3e-3)
  assert np.std(data['y_train'] - 0.05 - 0.01 * data['x_train'].sum(1)) < 0.02


def test_gaussian_blobs_are_balanced_and_separable():
  data = synthetic.gaussian_blobs(
      num_train=301, num_test=30, input_dim=3, num_classes=3, cluster_std=0.1, seed=2
  )
  counts = np.bincount(data['y_train'])
  assert counts.max() - counts.min() <= 1 and data['y_train'].dtype == np.int32
  centers = np.stack([data['x_train'][data['y_train'] == c].mean(0) for c in range(3)])
  nearest = np.argmin(((data['x_test'][:, None] - centers) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, data['y_test'])


@pytest.mark.parametrize(
    'fn,kwargs',
    [
        (synthetic.teacher_student, {'num_train': 0}),
        (synthetic.linear_highdim, {'noise': -1.0}),
        (synthetic.gaussian_blobs, {'num_classes': 1}),
        (synthetic.polynomial_regression, {'num_test': 2.5}),
    ],
)
def test_bad_arguments(fn, kwargs):
  with pytest.raises(ValueError):
    fn(**kwargs)
