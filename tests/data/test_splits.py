"""Holdout and K-fold splits."""

import numpy as np
import pytest

from research.data import splits


def _labels(n=103, num_classes=4, seed=0):
  # Unbalanced classes, so stratification has something to do.
  return np.random.default_rng(seed).choice(num_classes, n, p=[0.55, 0.25, 0.15, 0.05])


@pytest.mark.parametrize('kwargs,size', [({'fraction': 0.2}, 21), ({'count': 7}, 7)])
def test_holdout_partitions_and_has_the_asked_size(kwargs, size):
  train, val = splits.holdout_split(103, seed=1, **kwargs)
  assert len(val) == size
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(103))
  again = splits.holdout_split(103, seed=1, **kwargs)[1]
  other = splits.holdout_split(103, seed=2, **kwargs)[1]
  np.testing.assert_array_equal(val, again)
  assert not np.array_equal(val, other)


def test_stratified_holdout_keeps_class_proportions():
  labels = _labels()
  train, val = splits.holdout_split(len(labels), fraction=0.3, labels=labels, seed=0)
  assert len(val) == round(0.3 * len(labels))
  np.testing.assert_array_equal(
      np.sort(np.concatenate([train, val])), np.arange(len(labels))
  )
  want = 0.3 * np.bincount(labels, minlength=4)
  got = np.bincount(labels[val], minlength=4)
  assert np.all(np.abs(got - want) < 1.0)  # largest-remainder rounding


@pytest.mark.parametrize(
    'kwargs',
    [
        {},
        {'fraction': 0.2, 'count': 3},
        {'fraction': 0.0},
        {'fraction': 1.0},
        {'count': 0},
        {'count': 10},
    ],
)
def test_holdout_rejects_bad_sizes(kwargs):
  with pytest.raises(ValueError):
    splits.holdout_split(10, **kwargs)


@pytest.mark.parametrize('k', [2, 5, 10])
@pytest.mark.parametrize('stratified', [False, True])
def test_kfold_folds_partition_the_data(k, stratified):
  labels = _labels()
  n = len(labels)
  folds = splits.kfold_split(n, k, labels=labels if stratified else None, seed=3)
  assert len(folds) == k
  vals = [val for _, val in folds]
  np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(n))
  sizes = [len(v) for v in vals]
  assert max(sizes) - min(sizes) <= 1
  for train, val in folds:
    assert not np.intersect1d(train, val).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
  if stratified:  # each class spread within one example of evenly
    for c in range(4):
      per_fold = [np.sum(labels[v] == c) for v in vals]
      assert max(per_fold) - min(per_fold) <= 1


def test_kfold_with_k_equal_n_is_leave_one_out():
  folds = splits.kfold_split(6, 6, seed=0)
  assert sorted(int(val[0]) for _, val in folds) == list(range(6))
  assert all(len(val) == 1 and len(train) == 5 for train, val in folds)


@pytest.mark.parametrize('k', [1, 0, 11])
def test_kfold_rejects_k_out_of_range(k):
  with pytest.raises(ValueError, match='num_folds'):
    splits.kfold_split(10, k)


def test_labels_must_match_the_split():
  with pytest.raises(ValueError, match='labels'):
    splits.kfold_split(10, 2, labels=np.zeros(9))
