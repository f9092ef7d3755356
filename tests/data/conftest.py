"""Shared fixtures: MNIST-1D generated once per test session in a temporary cache."""

import pytest

from research.data import mnist1d_data


@pytest.fixture(scope='session')
def mnist1d_cache(tmp_path_factory):
  """A cache folder holding both MNIST-1D variants (a few seconds, once)."""
  cache = str(tmp_path_factory.mktemp('mnist1d_cache'))
  mnist1d_data.load_mnist1d(cache, shuffle_seq=False)
  mnist1d_data.load_mnist1d(cache, shuffle_seq=True)
  return cache
