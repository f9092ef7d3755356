"""TFDS image-classification sets through ``tfds.data_source``.

``tfds.data_source`` reads a prepared ``array_record`` data set by random
access and decodes examples with NumPy, so no TensorFlow is needed at run
time.  Any TFDS set with an ``image`` feature of fixed shape and a ``label``
ClassLabel works: mnist, fashion_mnist, cifar10, cifar100, svhn_cropped, ...

Preparing a set needs a network and, for most sets, TensorFlow:
``tfds build NAME --file_format=array_record --data_dir=DIR`` on a machine
that has both, then copy DIR and point ``--config.data.data_dir`` at it.

Reading: :class:`TfdsSource` reads records one by one through
``__getitem__``.  (``__getitems__`` would batch the reads, but the
``tfds.testing.mock_data`` stand-in of tfds 4.9.10 does not bind it, so the
tested path would differ from the real one.)  :func:`load_tfds_arrays` reads a
whole split into memory once, which is the fast path for the small sets above:
decoding happens once instead of every epoch.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds

from research.data.pipeline import ArraySource, Batch


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS set is not prepared in the data_dir and could not be downloaded."""


def _how_to_prepare(name: str) -> str:
  return (
      f'Prepare it on a machine with a network with `tfds build {name} '
      '--file_format=array_record --data_dir=DIR` and copy DIR here, or point '
      '--config.data.data_dir at a directory that holds the prepared data.'
  )


def _builder(name: str, data_dir: Optional[str]):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'Unknown TFDS data set {name!r} (tfds:{name}); see '
        '`tfds.list_builders()` for the names.'
    ) from e


def _check_features(name: str, info, image_key: str, label_key: str) -> None:
  features = info.features
  keys = list(features.keys())
  if image_key not in keys or label_key not in keys:
    raise ValueError(
        f'TFDS data set {name!r} has features {keys}; an image-classification '
        f'set needs {image_key!r} and {label_key!r}.'
    )
  if not isinstance(features[label_key], tfds.features.ClassLabel):
    raise ValueError(
        f'TFDS data set {name!r}: feature {label_key!r} is not a ClassLabel.'
    )
  shape = features[image_key].shape
  if any(s is None for s in shape):
    raise ValueError(
        f'TFDS data set {name!r}: images have variable shape {shape}; only '
        'fixed-shape images are supported (resize them when preparing the set).'
    )


def open_tfds(
    name: str,
    split: str,
    *,
    data_dir: Optional[str] = None,
    download: bool = True,
    image_key: str = 'image',
    label_key: str = 'label',
):
  """The data source of one split and the set's ``DatasetInfo``.

  Raises:
    ValueError: unknown name, or not an image-classification set.
    DatasetNotPreparedError: not prepared in ``data_dir`` (or the default TFDS
      data_dir) and ``download`` is False or the download failed; also when
      the set was prepared in a format without random access.
  """
  builder = _builder(name, data_dir)
  _check_features(name, builder.info, image_key, label_key)
  searched = f'data_dir={str(builder.data_dir_root)!r} (looked in {builder.data_dir})'
  if not builder.is_prepared():
    if not download:
      raise DatasetNotPreparedError(
          f'TFDS data set {name!r} is not prepared in {searched} and download '
          f'is off. {_how_to_prepare(name)}'
      )
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception as e:  # network, TensorFlow missing, disk: all mean "not here"
      raise DatasetNotPreparedError(
          f'TFDS data set {name!r} is not prepared in {searched} and could not '
          f'be downloaded ({type(e).__name__}: {e}). {_how_to_prepare(name)}'
      ) from e
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except NotImplementedError as e:  # prepared as tfrecord: no random access
    raise DatasetNotPreparedError(
        f'TFDS data set {name!r} in {searched} was prepared in a format without '
        f'random access ({e}). {_how_to_prepare(name)}'
    ) from e
  return source, builder.info


class TfdsSource:
  """A :class:`~research.data.pipeline.Source` over a TFDS data source.

  ``read`` returns uint8 images ``(B, H, W, C)`` as ``x`` and int32 labels as
  ``y``.
  """

  def __init__(
      self, data_source: Any, info, image_key: str = 'image', label_key: str = 'label'
  ):
    self._source = data_source
    self.image_key = image_key
    self.label_key = label_key
    self.image_shape = tuple(info.features[image_key].shape)
    self.image_dtype = np.dtype(info.features[image_key].np_dtype)
    self.num_classes = int(info.features[label_key].num_classes)

  def __len__(self) -> int:
    return len(self._source)

  def read(self, indices: np.ndarray) -> Batch:
    images = np.empty((len(indices),) + self.image_shape, self.image_dtype)
    labels = np.empty((len(indices),), np.int32)
    for row, index in enumerate(np.asarray(indices)):
      example = self._source[int(index)]
      images[row] = example[self.image_key]
      labels[row] = example[self.label_key]
    return {'x': images, 'y': labels}

  def labels(self) -> np.ndarray:
    """Every label of the split (reads, and decodes, every record once)."""
    return self.read(np.arange(len(self)))['y']


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir: Optional[str] = None,
    download: bool = True,
    in_memory: bool = True,
):
  """A split as a source: in memory (:class:`ArraySource`) or record by record.

  Returns:
    ``(source, info)``; with ``in_memory`` the source has ``x`` (uint8 images)
    and ``y`` (int32 labels) arrays.
  """
  data_source, info = open_tfds(name, split, data_dir=data_dir, download=download)
  source = TfdsSource(data_source, info)
  if in_memory:
    arrays = source.read(np.arange(len(source)))
    return ArraySource(arrays['x'], arrays['y']), info
  return source, info


def load_tfds_arrays(name: str, split: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
  """``(images, labels)`` of a whole split as numpy arrays."""
  source, _ = load_tfds(name, split, in_memory=True, **kwargs)
  return source.x, source.y


__all__ = [
    'DatasetNotPreparedError',
    'TfdsSource',
    'load_tfds',
    'load_tfds_arrays',
    'open_tfds',
]
