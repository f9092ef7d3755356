"""MNIST-1D: generator defaults, shapes, balance, the shuffled variant, the cache."""

import json
import os
import random
import shutil

import mnist1d.data
import numpy as np
import pytest

from research.data import mnist1d_data


def test_args_are_the_packages_defaults():
  package = mnist1d.data.get_dataset_args(as_dict=True)
  package.pop('url')
  assert mnist1d_data.MNIST1D_ARGS == package
  # The paper's setting: 4000 train, 1000 test, 40 features, seed 42.
  args = mnist1d_data.MNIST1D_ARGS
  assert args['num_samples'] * args['train_split'] == 4000
  assert (args['final_seq_length'], args['seed']) == (40, 42)


def test_shapes_dtypes_and_class_balance(mnist1d_cache):
  data = mnist1d_data.load_mnist1d(mnist1d_cache)
  assert data['x_train'].shape == (4000, 40) and data['x_train'].dtype == np.float32
  assert data['y_train'].shape == (4000,) and data['y_train'].dtype == np.int32
  assert data['x_test'].shape == (1000, 40) and data['y_test'].shape == (1000,)
  assert data['t'].shape == (40,)
  train_counts = np.bincount(data['y_train'], minlength=10)
  test_counts = np.bincount(data['y_test'], minlength=10)
  assert len(train_counts) == 10 and len(test_counts) == 10
  # 500 per class overall, split 80/20 after a random shuffle.
  np.testing.assert_array_equal(train_counts + test_counts, 500)
  assert train_counts.min() >= 350 and train_counts.max() <= 450
  # The generator standardizes the whole set (train and test together).
  x = np.concatenate([data['x_train'], data['x_test']])
  assert abs(x.mean()) < 1e-3 and abs(x.std() - 1.0) < 1e-3


def test_shuffled_variant_is_one_fixed_permutation_of_positions(mnist1d_cache):
  plain = mnist1d_data.load_mnist1d(mnist1d_cache)
  shuffled = mnist1d_data.load_mnist1d(mnist1d_cache, shuffle_seq=True)
  np.testing.assert_array_equal(plain['y_train'], shuffled['y_train'])
  x, xs = plain['x_train'], shuffled['x_train']
  # Column j of the shuffled set is column perm[j] of the plain one (up to the
  # rounding of the global standardization, summed in another order).
  perm = np.array([np.argmin(np.abs(x - xs[:, [j]]).max(axis=0)) for j in range(40)])
  assert sorted(perm) == list(range(40))
  assert not np.array_equal(perm, np.arange(40))
  np.testing.assert_allclose(xs, x[:, perm], atol=1e-5)
  np.testing.assert_allclose(shuffled['x_test'], plain['x_test'][:, perm], atol=1e-5)


def test_generation_restores_global_random_state(monkeypatch):
  def fake_make_dataset(args):
    np.random.seed(0)
    random.seed(0)
    return {
        'x': np.zeros((8, 40)),
        'y': np.zeros(8, int),
        'x_test': np.zeros((2, 40)),
        'y_test': np.zeros(2, int),
        't': np.zeros(40),
    }

  monkeypatch.setattr(mnist1d.data, 'make_dataset', fake_make_dataset)
  np.random.seed(123)
  random.seed(123)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  mnist1d_data.generate_mnist1d()
  assert np.random.rand() == expected_np and random.random() == expected_py


def _copy_cache(src_dir, dst_dir):
  os.makedirs(dst_dir, exist_ok=True)
  src = mnist1d_data.cache_path(src_dir)
  dst = mnist1d_data.cache_path(str(dst_dir))
  shutil.copy(src, dst)
  return dst


def _corrupt_truncate(path):
  with open(path, 'rb') as f:
    head = f.read(1000)
  with open(path, 'wb') as f:
    f.write(head)


def _corrupt_garbage(path):
  with open(path, 'wb') as f:
    f.write(b'not a zip file at all')


def _rewrite(path, **changes):
  with np.load(path) as f:
    stored = {k: f[k] for k in f.files}
  stored.update(changes)
  np.savez(path, **stored)


def _corrupt_args(path):
  with np.load(path) as f:
    args = json.loads(str(f['args']))
  args['seed'] = 7
  _rewrite(path, args=np.array(json.dumps(args)))


def _corrupt_shape(path):
  with np.load(path) as f:
    x = f['x_train']
  _rewrite(path, x_train=x[:100])


def _corrupt_values(path):
  with np.load(path) as f:
    x = f['x_train'].copy()
  x[17, 3] += 1.0  # same shape, dtype and args: only the checksum can tell
  _rewrite(path, x_train=x)


@pytest.mark.parametrize(
    'corrupt',
    [
        _corrupt_truncate,
        _corrupt_garbage,
        _corrupt_args,
        _corrupt_shape,
        _corrupt_values,
    ],
)
def test_bad_cache_is_regenerated(mnist1d_cache, tmp_path, monkeypatch, corrupt):
  good = mnist1d_data.load_mnist1d(mnist1d_cache)
  path = _copy_cache(mnist1d_cache, tmp_path)
  calls = []

  def counting_generate(shuffle_seq=False):
    calls.append(shuffle_seq)
    # The real arrays without the few seconds of generation.
    return {k: v.copy() for k, v in good.items()}

  monkeypatch.setattr(mnist1d_data, 'generate_mnist1d', counting_generate)
  # A sound copy is used as is.
  mnist1d_data.load_mnist1d(str(tmp_path))
  assert calls == []
  corrupt(path)
  data = mnist1d_data.load_mnist1d(str(tmp_path))
  assert calls == [False]
  for key in good:
    np.testing.assert_array_equal(data[key], good[key])
  # The rewritten file is sound again, and no temporary files are left.
  mnist1d_data.load_mnist1d(str(tmp_path))
  assert calls == [False]
  assert os.listdir(tmp_path) == ['mnist1d.npz']


def test_cache_dir_defaults_to_research_cache(monkeypatch, tmp_path):
  monkeypatch.setenv('RESEARCH_CACHE', str(tmp_path))
  assert mnist1d_data.cache_path() == os.path.join(
      str(tmp_path), 'mnist1d', 'mnist1d.npz'
  )
  assert mnist1d_data.cache_path(shuffle_seq=True).endswith('mnist1d_shuffled.npz')


def test_cache_file_holds_no_pickles(mnist1d_cache):
  # allow_pickle=False would raise on any object array.
  with np.load(mnist1d_data.cache_path(mnist1d_cache), allow_pickle=False) as f:
    assert all(f[k].dtype != object for k in f.files)
