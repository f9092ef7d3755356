"""get_dataset: names, metadata, splits from the config, whole-split arrays."""

import ml_collections
import numpy as np
import pytest

from research import data
from research.data import default_config, get_dataset, mnist1d_data

HOST = dict(process_index=0, process_count=1)


def _config(name, **fields):
  config = default_config()
  config.name = name
  for key, value in fields.items():
    if isinstance(value, dict):
      config[key].update(value)
    else:
      config[key] = value
  return config


def test_mnist1d_default(mnist1d_cache):
  ds = get_dataset(_config('mnist1d', cache_dir=mnist1d_cache, batch_size=100), **HOST)
  assert ds.info.input_shape == (40,) and ds.info.num_classes == 10
  assert ds.info.num_examples == {'train': 4000, 'validation': 0, 'test': 1000}
  assert ds.validation is None and ds.train.steps_per_epoch == 40
  x, y = ds.arrays('train')
  cached = mnist1d_data.load_mnist1d(mnist1d_cache)
  np.testing.assert_array_equal(x, cached['x_train'])
  np.testing.assert_array_equal(y, cached['y_train'])
  assert x.dtype == np.float32 and y.dtype == np.int32


def test_mnist1d_shuffled_by_name(mnist1d_cache):
  ds = get_dataset(_config('mnist1d_shuffled', cache_dir=mnist1d_cache), **HOST)
  plain = mnist1d_data.load_mnist1d(mnist1d_cache)
  x, y = ds.arrays('test')
  np.testing.assert_array_equal(y, plain['y_test'])
  assert not np.allclose(x, plain['x_test'])


def test_stratified_holdout_from_config(mnist1d_cache):
  ds = get_dataset(
      _config(
          'mnist1d',
          cache_dir=mnist1d_cache,
          validation_fraction=0.1,
          stratify=True,
          batch_size=200,
      ),
      **HOST,
  )
  assert (
      ds.info.num_examples['validation'] == 400
      and ds.info.num_examples['train'] == 3600
  )
  assert not np.intersect1d(ds.train.examples, ds.validation.examples).size
  _, y_val = ds.arrays('validation')
  y_train = mnist1d_data.load_mnist1d(mnist1d_cache)['y_train']
  np.testing.assert_allclose(np.bincount(y_val), 0.1 * np.bincount(y_train), atol=1.0)
  seen = np.concatenate([b['y'][b['mask']] for b in ds.validation])
  np.testing.assert_array_equal(np.sort(seen), np.sort(y_val))


def test_kfold_from_config_partitions_the_training_split():
  vals = []
  for fold in range(4):
    ds = get_dataset(
        _config(
            'synthetic:blobs', num_folds=4, fold=fold, batch_size=50, num_train=202
        ),
        **HOST,
    )
    vals.append(ds.validation.examples)
    assert len(ds.train.examples) + len(ds.validation.examples) == 202
  np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(202))


def test_num_train_subset_of_a_real_split(mnist1d_cache):
  ds = get_dataset(
      _config(
          'mnist1d',
          cache_dir=mnist1d_cache,
          num_train=500,
          stratify=True,
          validation_count=100,
          batch_size=50,
      ),
      **HOST,
  )
  assert ds.info.num_examples == {'train': 400, 'validation': 100, 'test': 1000}
  pool = np.concatenate([ds.train.examples, ds.validation.examples])
  assert len(np.unique(pool)) == 500
  y_all = mnist1d_data.load_mnist1d(mnist1d_cache)['y_train']
  # Stratified: each class in proportion to its share of the full split.
  want = 500 * np.bincount(y_all, minlength=10) / len(y_all)
  assert np.all(np.abs(np.bincount(y_all[pool], minlength=10) - want) < 1.0)


@pytest.mark.parametrize(
    'name,input_shape,num_classes,task',
    [
        ('synthetic:teacher_student', (20,), 0, 'regression'),
        ('synthetic:teacher_student_classification', (20,), 10, 'classification'),
        ('synthetic:polynomial', (4,), 0, 'regression'),
        ('synthetic:linear_highdim', (200,), 0, 'regression'),
        ('synthetic:blobs', (2,), 3, 'classification'),
    ],
)
def test_synthetic_by_name(name, input_shape, num_classes, task):
  ds = get_dataset(_config(name, batch_size=10), **HOST)
  assert ds.info.input_shape == input_shape and ds.info.num_classes == num_classes
  assert ds.info.task == task
  batch = next(ds.train.batches(0 * ds.train.steps_per_epoch + 0))
  assert batch['x'].shape == (10,) + input_shape


def test_synthetic_fields_reach_the_generator():
  ds = get_dataset(
      _config(
          'synthetic:polynomial',
          num_train=15,
          batch_size=5,
          synthetic={'degree': 20, 'noise': 0.0},
      ),
      **HOST,
  )
  assert ds.info.input_shape == (21,) and ds.info.num_examples['train'] == 15
  x, y = ds.arrays('train')
  np.testing.assert_allclose(
      x[:, :4].astype(np.float64) @ data.synthetic.POLYNOMIAL_COEFFS, y, rtol=1e-5
  )
  with pytest.raises(
      ValueError, match='synthetic.degree=5 is not used by synthetic:blobs'
  ):
    get_dataset(_config('synthetic:blobs', synthetic={'degree': 5}), **HOST)
  with pytest.raises(ValueError, match='regression problem'):
    get_dataset(
        _config('synthetic:teacher_student', synthetic={'num_classes': 3}), **HOST
    )
  name = 'synthetic:teacher_student_classification'
  with pytest.raises(ValueError, match='num_classes=0 is out of range'):
    get_dataset(_config(name, synthetic={'num_classes': 0}), **HOST)


def test_unknown_name_lists_the_registered_names():
  with pytest.raises(ValueError) as err:
    get_dataset(_config('cifar11'), **HOST)
  for name in ('mnist1d', 'mnist1d_shuffled', 'synthetic:polynomial', 'tfds:cifar10'):
    assert name in str(err.value)
  assert set(data.registered_names()) >= {
      'mnist1d',
      'synthetic:blobs',
      'tfds:svhn_cropped',
  }


@pytest.mark.parametrize(
    'fields,match',
    [
        ({'batch_size': 5000}, r'^config\.data\.batch_size=5000 is larger than the split'),
        ({'seed': -1}, r'^config\.data\.seed=-1 is out of range'),
        ({'eval_batch_size': 1001}, 'larger than the split'),
        ({'num_folds': 1, 'fold': 0}, 'num_folds'),
        ({'num_folds': 3}, 'fold'),
        ({'num_folds': 3, 'fold': 0, 'validation_fraction': 0.1}, 'exclusive'),
        ({'validation_fraction': 0.1, 'validation_count': 5}, 'exclusive'),
        ({'augment': True}, 'not an image data set'),
    ],
)
def test_bad_configs(mnist1d_cache, fields, match):
  with pytest.raises(ValueError, match=match):
    get_dataset(_config('mnist1d', cache_dir=mnist1d_cache, **fields), **HOST)


def test_unknown_field_and_stratified_regression():
  config = ml_collections.ConfigDict({'name': 'synthetic:blobs', 'batch_sise': 3})
  with pytest.raises(ValueError, match="Unknown data config field 'batch_sise'"):
    get_dataset(config, **HOST)
  with pytest.raises(ValueError, match='regression'):
    get_dataset(
        _config(
            'synthetic:linear_highdim', batch_size=4, stratify=True, validation_count=4
        ),
        **HOST,
    )


def test_partial_and_experiment_configs_are_accepted():
  partial = ml_collections.ConfigDict(
      {'name': 'synthetic:blobs', 'batch_size': 7, 'seed': 3}
  )
  experiment = ml_collections.ConfigDict(
      {'data': partial, 'optimizer': {'name': 'sgd'}}
  )
  a, b = get_dataset(partial, **HOST), get_dataset(experiment, **HOST)
  np.testing.assert_array_equal(next(a.train.batches(0 * a.train.steps_per_epoch + 0))['x'], next(b.train.batches(0 * b.train.steps_per_epoch + 0))['x'])
  assert a.train.seed == 3 and a.train.batch_size == 7


def test_whole_split_arrays_follow_the_loader_order():
  ds = get_dataset(
      _config('synthetic:blobs', batch_size=16, validation_count=30), **HOST
  )
  x, y = ds.arrays('train')
  assert len(x) == ds.info.num_examples['train'] == 970
  for epoch in (0, 3):
    order = ds.train.epoch_positions(epoch)
    for step in (0, 5):
      batch = next(ds.train.batches(epoch * ds.train.steps_per_epoch + step))
      rows = order[step * 16 : (step + 1) * 16]
      np.testing.assert_array_equal(x[rows], batch['x'])
      np.testing.assert_array_equal(y[rows], batch['y'])


def test_default_eval_batch_is_capped_and_batches_resume():
  ds = get_dataset(
      _config(
          'synthetic:linear_highdim', batch_size=32, num_train=40, validation_count=8
      ),
      **HOST,
  )
  assert ds.validation.batch_size == 8 and ds.test.batch_size == 32
  it = ds.train.batches()
  next(it)
  want = next(it)
  np.testing.assert_array_equal(next(ds.train.batches(1))['x'], want['x'])
  assert ds.train.prefetch == 2  # config.data.prefetch reaches the loader
