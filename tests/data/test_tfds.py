"""The TFDS path, offline, under ``tfds.testing.mock_data``.

``mock_data`` patches ``DatasetBuilder.as_data_source``, so ``tfds.data_source``
returns a real ``ArrayRecordDataSource`` whose records are deterministic
random examples (example i from ``default_rng(i)``) with the data set's true
features; it ignores ``data_dir`` and turns ``download_and_prepare`` into a
no-op.  No TensorFlow is needed.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from research.data import augment, default_config, get_dataset, tfds_source

NUM_EXAMPLES = 36


def _config(tmp_path, name='tfds:cifar10', **fields):
  config = default_config()
  config.name = name
  config.batch_size = 8
  config.data_dir = str(tmp_path / 'tfds')
  for key, value in fields.items():
    setattr(config, key, value)
  return config


def _get(config, **hosts):
  hosts.setdefault('process_index', 0)
  hosts.setdefault('process_count', 1)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    return get_dataset(config, **hosts)


def _raw_split():
  """The mocked records, read one by one straight from tfds.data_source."""
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    source = tfds.data_source('cifar10', split='test')
    examples = [source[i] for i in range(len(source))]
  return (
      np.stack([e['image'] for e in examples]),
      np.array([e['label'] for e in examples]),
  )


@pytest.mark.parametrize(
    'name,shape',
    [
        ('tfds:cifar10', (32, 32, 3)),
        ('tfds:mnist', (28, 28, 1)),
        ('tfds:svhn_cropped', (32, 32, 3)),
    ],
)
def test_metadata_and_batches(tmp_path, name, shape):
  ds = _get(_config(tmp_path, name))
  assert ds.info.input_shape == shape and ds.info.num_classes == 10
  assert ds.info.task == 'classification'
  assert ds.info.num_examples == {
      'train': NUM_EXAMPLES,
      'validation': 0,
      'test': NUM_EXAMPLES,
  }
  batch = next(ds.train.batches(0 * ds.train.steps_per_epoch + 0))
  assert batch['x'].shape == (8,) + shape and batch['x'].dtype == np.float32
  assert batch['y'].dtype == np.int32 and np.all((batch['y'] >= 0) & (batch['y'] < 10))


def test_evaluation_sees_every_record_once_normalized(tmp_path):
  images, labels = _raw_split()
  ds = _get(_config(tmp_path, eval_batch_size=10))  # 36 = 3 * 10 + 6: last batch padded
  xs, ys = [], []
  for batch in ds.test:
    xs.append(batch['x'][batch['mask']])
    ys.append(batch['y'][batch['mask']])
  mean, std = ds.info.extra['mean'], ds.info.extra['std']
  np.testing.assert_allclose(
      np.concatenate(xs), augment.normalize(images, mean, std), rtol=1e-6
  )
  np.testing.assert_array_equal(np.concatenate(ys), labels)
  x, y = ds.arrays('test')
  np.testing.assert_array_equal(x, np.concatenate(xs))
  np.testing.assert_array_equal(y, labels)


def test_normalization_uses_training_examples_only(tmp_path):
  ds = _get(_config(tmp_path, validation_count=12))
  images, _ = _raw_split()  # train and test records are the same under the mock
  train_images = images[np.sort(ds.train.examples)]
  mean, _ = augment.channel_stats(train_images)
  np.testing.assert_allclose(ds.info.extra['mean'], mean, rtol=1e-6)
  assert not np.allclose(augment.channel_stats(images)[0], mean, rtol=1e-6)


def test_streaming_reads_the_same_batches_as_in_memory(tmp_path):
  in_memory = _get(_config(tmp_path, validation_fraction=0.25, stratify=True))
  streamed = _get(
      _config(tmp_path, validation_fraction=0.25, stratify=True, in_memory=False)
  )
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):  # records are read lazily
    for step in range(in_memory.train.steps_per_epoch):
      np.testing.assert_array_equal(
          next(streamed.train.batches(1 * streamed.train.steps_per_epoch + step))['x'], next(in_memory.train.batches(1 * in_memory.train.steps_per_epoch + step))['x']
      )
    for a, b in zip(streamed.validation, in_memory.validation, strict=True):
      np.testing.assert_array_equal(a['x'], b['x'])


def test_augmentation_changes_training_pixels_only(tmp_path):
  plain = _get(_config(tmp_path))
  augmented = _get(_config(tmp_path, augment=True))
  a, b = next(augmented.train.batches(0 * augmented.train.steps_per_epoch + 1)), next(plain.train.batches(0 * plain.train.steps_per_epoch + 1))
  assert a['x'].shape == b['x'].shape
  np.testing.assert_array_equal(a['y'], b['y'])
  assert not np.allclose(a['x'], b['x'])
  np.testing.assert_array_equal(augmented.arrays('test')[0], plain.arrays('test')[0])


def test_hosts_get_disjoint_training_examples(tmp_path):
  hosts = [_get(_config(tmp_path), process_index=p, process_count=2) for p in range(2)]
  single = _get(_config(tmp_path))
  for step in range(single.train.steps_per_epoch):
    parts = [h.train.batch_indices(h.train.epoch_indices(0), step) for h in hosts]
    assert not np.intersect1d(*parts).size
    np.testing.assert_array_equal(
        np.concatenate(parts),
        single.train.batch_indices(single.train.epoch_indices(0), step),
    )


def test_not_prepared_and_no_download_says_where_and_how(tmp_path):
  data_dir = tmp_path / 'empty'
  config = _config(tmp_path, 'tfds:mnist', data_dir=str(data_dir), download=False)
  with pytest.raises(FileNotFoundError) as err:  # no mock: the real lookup
    get_dataset(config, process_index=0, process_count=1)
  message = str(err.value)
  assert isinstance(err.value, tfds_source.DatasetNotPreparedError)
  assert str(data_dir) in message
  assert 'tfds build mnist' in message and '--config.data.data_dir' in message


def test_failed_download_says_where_and_how(tmp_path, monkeypatch):
  def offline(self, *args, **kwargs):
    raise ConnectionError('no network')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)
  config = _config(tmp_path, 'tfds:cifar10', download=True)
  with pytest.raises(
      tfds_source.DatasetNotPreparedError, match='could not be downloaded'
  ) as err:
    get_dataset(config, process_index=0, process_count=1)
  assert 'no network' in str(err.value) and str(tmp_path / 'tfds') in str(err.value)


def test_unknown_or_unsuitable_tfds_sets(tmp_path):
  with pytest.raises(ValueError, match='Unknown TFDS data set'):
    get_dataset(
        _config(tmp_path, 'tfds:no_such_set_xyz'), process_index=0, process_count=1
    )
  with pytest.raises(ValueError, match="needs 'image' and 'label'"):
    get_dataset(
        _config(tmp_path, 'tfds:imdb_reviews'), process_index=0, process_count=1
    )
