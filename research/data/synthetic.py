"""Synthetic problems with known ground truth.

Each generator is a pure function of its arguments and returns
``{'x_train', 'y_train', 'x_test', 'y_test'}`` as float32 inputs and float32
(regression) or int32 (classification) targets.  The ground truth, the
training set and the test set come from three separate streams
``default_rng((seed, stream))``, so changing ``num_train`` keeps the teacher
and the test set fixed: sample-size studies compare like with like.
"""

from __future__ import annotations

import math

import numpy as np

_TRUTH, _TRAIN, _TEST = 0, 1, 2

# Dive into Deep Learning (0.17 edition, section 4.4, model selection,
# underfitting and overfitting): y = 5 + 1.2 x - 3.4 x^2/2! + 5.6 x^3/3! + noise.
POLYNOMIAL_COEFFS = (5.0, 1.2, -3.4, 5.6)


def _rng(seed: int, stream: int) -> np.random.Generator:
  return np.random.default_rng((seed, stream))


def _check_sizes(fn: str, **sizes: int) -> None:
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f'{fn}: {name}={value!r} must be an int >= 1.')


def _check_noise(fn: str, name: str, value: float) -> None:
  if not value >= 0:
    raise ValueError(f'{fn}: {name}={value!r} is out of range; allowed: [0, inf).')


def teacher_student(
    num_train: int = 1000,
    num_test: int = 1000,
    input_dim: int = 20,
    hidden_dim: int = 32,
    num_classes: int = 0,
    noise: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Inputs ``x ~ N(0, I)`` labelled by a random two-layer tanh network.

  The teacher is ``f(x) = tanh(x W1 / sqrt(d)) W2 / sqrt(h)`` with standard
  normal ``W1`` (d x h) and ``W2`` (h x k).  Regression (``num_classes=0``):
  ``y = f(x) + noise * eps``, ``k = 1``, y of shape (n,).  Classification
  (``num_classes = k >= 2``): ``y = argmax_j (f(x)_j + noise * eps_j)``.

  References: Gardner and Derrida, Three unfinished works on the optimal
  storage capacity of networks, 1989; Saad and Solla, On-line learning in soft
  committee machines, 1995.
  """
  fn = 'teacher_student'
  _check_sizes(
      fn,
      num_train=num_train,
      num_test=num_test,
      input_dim=input_dim,
      hidden_dim=hidden_dim,
  )
  _check_noise(fn, 'noise', noise)
  if num_classes == 1 or num_classes < 0:
    raise ValueError(f'{fn}: num_classes={num_classes} must be 0 (regression) or >= 2.')
  outputs = max(num_classes, 1)
  truth = _rng(seed, _TRUTH)
  w1 = truth.standard_normal((input_dim, hidden_dim))
  w2 = truth.standard_normal((hidden_dim, outputs))

  def sample(n, stream):
    rng = _rng(seed, stream)
    x = rng.standard_normal((n, input_dim))
    f = np.tanh(x @ w1 / math.sqrt(input_dim)) @ w2 / math.sqrt(hidden_dim)
    f = f + noise * rng.standard_normal(f.shape)
    y = (
        f[:, 0].astype(np.float32)
        if num_classes == 0
        else f.argmax(-1).astype(np.int32)
    )
    return x.astype(np.float32), y

  x_train, y_train = sample(num_train, _TRAIN)
  x_test, y_test = sample(num_test, _TEST)
  return {'x_train': x_train, 'y_train': y_train, 'x_test': x_test, 'y_test': y_test}


def polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
  """``[x^0/0!, x^1/1!, ..., x^degree/degree!]`` for scalar inputs ``x`` (n,).

  Dividing by ``i!`` keeps high powers of ``x ~ N(0, 1)`` from dominating the
  gradient, so degree 20 is trainable by plain gradient descent.
  """
  if (
      isinstance(degree, bool)
      or not isinstance(degree, (int, np.integer))
      or degree < 0
  ):
    raise ValueError(f'polynomial_features: degree={degree!r} must be an int >= 0.')
  x = np.asarray(x, np.float64).reshape(-1, 1)
  powers = np.arange(degree + 1)
  factorials = np.array([math.factorial(int(i)) for i in powers], np.float64)
  return (x**powers / factorials).astype(np.float32)


def polynomial_regression(
    num_train: int = 100,
    num_test: int = 100,
    noise: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Scalar ``x ~ N(0, 1)``, ``y = 5 + 1.2 x - 3.4 x^2/2! + 5.6 x^3/3! + noise*eps``.

  Returns raw inputs of shape (n,); fit with ``polynomial_features(x, degree)``:
  degree 1 underfits the cubic, 3 matches it, 20 overfits a small ``num_train``.

  References: Zhang, Lipton, Li and Smola, Dive into Deep Learning, 2021
  (0.17 edition, section 4.4: model selection, underfitting and overfitting).
  """
  fn = 'polynomial_regression'
  _check_sizes(fn, num_train=num_train, num_test=num_test)
  _check_noise(fn, 'noise', noise)
  coeffs = np.asarray(POLYNOMIAL_COEFFS)

  def sample(n, stream):
    rng = _rng(seed, stream)
    x = rng.standard_normal(n)
    y = polynomial_features(x, len(coeffs) - 1).astype(np.float64) @ coeffs
    y = y + noise * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32)

  x_train, y_train = sample(num_train, _TRAIN)
  x_test, y_test = sample(num_test, _TEST)
  return {'x_train': x_train, 'y_train': y_train, 'x_test': x_test, 'y_test': y_test}


def linear_highdim(
    num_train: int = 20,
    num_test: int = 100,
    input_dim: int = 200,
    noise: float = 0.01,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """``x ~ N(0, I_d)``, ``y = 0.05 + sum_i 0.01 x_i + noise * eps``; with d = 200
  and n = 20 a linear model interpolates the training set, so weight decay
  decides how well it generalizes.

  References: Zhang, Lipton, Li and Smola, Dive into Deep Learning, 2023
  (section 3.7, weight decay).
  """
  fn = 'linear_highdim'
  _check_sizes(fn, num_train=num_train, num_test=num_test, input_dim=input_dim)
  _check_noise(fn, 'noise', noise)

  def sample(n, stream):
    rng = _rng(seed, stream)
    x = rng.standard_normal((n, input_dim))
    y = 0.05 + 0.01 * x.sum(axis=1) + noise * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32)

  x_train, y_train = sample(num_train, _TRAIN)
  x_test, y_test = sample(num_test, _TEST)
  return {'x_train': x_train, 'y_train': y_train, 'x_test': x_test, 'y_test': y_test}


def gaussian_blobs(
    num_train: int = 1000,
    num_test: int = 1000,
    input_dim: int = 2,
    num_classes: int = 3,
    cluster_std: float = 1.0,
    center_box: float = 10.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Isotropic Gaussian clusters, one per class.

  Centers are uniform in ``[-center_box, center_box]^d``; class ``c`` examples
  are ``center_c + cluster_std * eps``.  Classes are balanced (sizes differ by
  at most one) and the examples shuffled.
  """
  fn = 'gaussian_blobs'
  _check_sizes(fn, num_train=num_train, num_test=num_test, input_dim=input_dim)
  if num_classes < 2:
    raise ValueError(f'{fn}: num_classes={num_classes} must be >= 2.')
  _check_noise(fn, 'cluster_std', cluster_std)
  centers = _rng(seed, _TRUTH).uniform(
      -center_box, center_box, (num_classes, input_dim)
  )

  def sample(n, stream):
    rng = _rng(seed, stream)
    y = rng.permutation(np.arange(n) % num_classes)
    x = centers[y] + cluster_std * rng.standard_normal((n, input_dim))
    return x.astype(np.float32), y.astype(np.int32)

  x_train, y_train = sample(num_train, _TRAIN)
  x_test, y_test = sample(num_test, _TEST)
  return {'x_train': x_train, 'y_train': y_train, 'x_test': x_test, 'y_test': y_test}


__all__ = [
    'POLYNOMIAL_COEFFS',
    'gaussian_blobs',
    'linear_highdim',
    'polynomial_features',
    'polynomial_regression',
    'teacher_student',
]
