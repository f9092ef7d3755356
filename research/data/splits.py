"""Holdout validation sets and K-fold cross-validation, as index arrays.

Both work on positions ``0..n-1`` of a training split and return sorted int64
index arrays; the loaders shuffle, so the order inside a part does not matter.
With ``labels`` the parts are stratified: each class is spread over them in
proportion to its size.

References: Hastie, Tibshirani and Friedman, The Elements of Statistical
Learning, 2009 (section 7.10, cross-validation).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# Salts that keep the split streams apart from the epoch-order streams, which
# are seeded with (seed, epoch).
_HOLDOUT_STREAM = 0x401D
_KFOLD_STREAM = 0xF01D


def _num_examples(num_examples: int, labels: Optional[np.ndarray], fn: str) -> int:
  if labels is not None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != num_examples:
      raise ValueError(
          f'{fn}: labels must have shape ({num_examples},), got {labels.shape}.'
      )
  if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)):
    raise TypeError(f'{fn}: num_examples must be an int, got {num_examples!r}.')
  return int(num_examples)


def _apportion(total: int, sizes: np.ndarray) -> np.ndarray:
  """Integer shares of ``total`` proportional to ``sizes`` that sum to ``total``
  (largest remainders; ties go to the earlier class)."""
  exact = total * sizes / sizes.sum()
  shares = np.floor(exact).astype(np.int64)
  leftover = total - shares.sum()
  order = np.argsort(-(exact - shares), kind='stable')
  shares[order[:leftover]] += 1
  return shares


def holdout_split(
    num_examples: int,
    *,
    fraction: Optional[float] = None,
    count: Optional[int] = None,
    labels: Optional[np.ndarray] = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Carves a validation set out of a training split.

  Args:
    num_examples: size ``n`` of the training split.
    fraction: validation share in (0, 1), rounded to ``round(fraction * n)``.
    count: validation size in [1, n - 1]; give exactly one of the two.
    labels: class of each example; when given the split is stratified.
    seed: non-negative int.

  Returns:
    ``(train_indices, validation_indices)``, disjoint, together ``0..n-1``.
  """
  fn = 'holdout_split'
  n = _num_examples(num_examples, labels, fn)
  if (fraction is None) == (count is None):
    raise ValueError(
        f'{fn}: give exactly one of fraction and count, got '
        f'fraction={fraction!r}, count={count!r}.'
    )
  if fraction is not None:
    if not 0.0 < fraction < 1.0:
      raise ValueError(f'{fn}: fraction={fraction!r} is out of range; allowed: (0, 1).')
    count = int(round(fraction * n))
  if not 1 <= count <= n - 1:
    raise ValueError(
        f'{fn}: the validation set would have {count} of {n} examples; '
        f'allowed: [1, {n - 1}] (both parts need an example).'
    )
  rng = np.random.default_rng((seed, _HOLDOUT_STREAM))
  if labels is None:
    validation = rng.permutation(n)[:count]
  else:
    labels = np.asarray(labels)
    classes, members = np.unique(labels, return_inverse=True)
    sizes = np.bincount(members, minlength=len(classes))
    shares = _apportion(count, sizes)
    validation = np.concatenate(
        [
            rng.permutation(np.flatnonzero(members == c))[: shares[c]]
            for c in range(len(classes))
        ]
    )
  is_validation = np.zeros(n, bool)
  is_validation[validation] = True
  return np.flatnonzero(~is_validation), np.flatnonzero(is_validation)


def kfold_split(
    num_examples: int,
    num_folds: int,
    *,
    labels: Optional[np.ndarray] = None,
    seed: int = 0,
    shuffle: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
  """K-fold cross-validation: K disjoint validation folds covering the split.

  Fold sizes differ by at most one (per class, when stratified).

  Args:
    num_examples: size ``n`` of the training split.
    num_folds: K in [2, n].
    labels: class of each example; when given the folds are stratified.
    seed: non-negative int.
    shuffle: False puts consecutive examples in the same fold (unstratified).

  Returns:
    K pairs ``(train_indices, validation_indices)``; every example is in
    exactly one validation fold and in the training part of the others.
  """
  fn = 'kfold_split'
  n = _num_examples(num_examples, labels, fn)
  if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)):
    raise TypeError(f'{fn}: num_folds must be an int, got {num_folds!r}.')
  if not 2 <= num_folds <= n:
    raise ValueError(
        f'{fn}: num_folds={num_folds} is out of range; allowed: [2, {n}] '
        f'(the split has {n} examples).'
    )
  rng = np.random.default_rng((seed, _KFOLD_STREAM))
  fold_of = np.empty(n, np.int64)
  if labels is None:
    order = rng.permutation(n) if shuffle else np.arange(n)
    for k, part in enumerate(np.array_split(order, num_folds)):
      fold_of[part] = k
  else:
    # Deal each class's shuffled examples round-robin, continuing where the
    # previous class stopped, so fold sizes stay within one of each other.
    start = 0
    for c in np.unique(labels):
      members = rng.permutation(np.flatnonzero(np.asarray(labels) == c))
      fold_of[members] = (start + np.arange(len(members))) % num_folds
      start = (start + len(members)) % num_folds
  return [
      (np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k))
      for k in range(num_folds)
  ]


__all__ = [
    'holdout_split',
    'kfold_split',
]
