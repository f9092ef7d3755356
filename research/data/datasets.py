"""``get_dataset(config)``: every data set by name, with its loaders and metadata.

Names: ``mnist1d`` (the default: generated locally, no network),
``mnist1d_shuffled``, ``synthetic:teacher_student`` (regression),
``synthetic:teacher_student_classification``, ``synthetic:polynomial``,
``synthetic:linear_highdim``, ``synthetic:blobs``, and ``tfds:NAME`` for any
TFDS image-classification set (``tfds:mnist``, ``tfds:fashion_mnist``,
``tfds:cifar10``, ``tfds:cifar100``, ``tfds:svhn_cropped``, ...).

The steps are the same for every set:

1. the training split: all of it, or a random subset of ``num_train`` examples
   (synthetic sets generate ``num_train`` examples instead);
2. the validation set, carved from that training split by
   ``validation_fraction`` / ``validation_count`` (holdout) or by
   ``num_folds`` / ``fold`` (K-fold), optionally stratified by class;
3. image preprocessing: per-channel mean and std of the remaining training
   examples only (validation data never leak into it), augmentation for
   training batches when ``augment``;
4. a :class:`~research.data.pipeline.TrainLoader` for training and
   :class:`~research.data.pipeline.EvalLoader` for validation and test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional

import ml_collections
from ml_collections import config_dict
import numpy as np

from research.data import augment as augment_lib
from research.data import mnist1d_data
from research.data import splits
from research.data import synthetic
from research.data.pipeline import (
    ArraySource,
    EvalLoader,
    Source,
    TrainLoader,
    process_info,
)

TFDS_IMAGE_SETS = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn_cropped')
_SUBSET_STREAM = 0x5AB5
_STATS_STREAM = 0x57A7
_STATS_SAMPLE = 4096  # examples for normalization statistics of a streamed set


def default_config() -> ml_collections.ConfigDict:
  """The data fields of an experiment config (``config.data``), with defaults."""
  placeholder = config_dict.placeholder
  return ml_collections.ConfigDict(
      dict(
          name='mnist1d',
          batch_size=128,
          eval_batch_size=placeholder(int),  # default: batch_size, capped at the split
          seed=0,
          shuffle=True,
          num_train=placeholder(int),  # training split size before validation
          validation_fraction=0.0,  # holdout share; 0 for none
          validation_count=placeholder(int),  # or an exact holdout size
          num_folds=placeholder(int),  # K-fold instead of a holdout ...
          fold=placeholder(int),  # ... using this fold for validation
          stratify=False,  # class-stratified subset, holdout, folds
          augment=False,  # 4-pixel pad, random crop, flip (images)
          normalize=True,  # per-channel standardization (images)
          data_dir=placeholder(str),  # TFDS data_dir; default: TFDS's own
          cache_dir=placeholder(
              str
          ),  # MNIST-1D cache; default: $RESEARCH_CACHE/mnist1d
          download=True,  # TFDS: try to download and prepare
          in_memory=True,  # TFDS: decode the split once into RAM
          train_split='train',
          test_split='test',
          prefetch=2,  # batches prepared ahead on a thread
          synthetic=ml_collections.ConfigDict(
              dict(
                  input_dim=placeholder(int),
                  hidden_dim=placeholder(int),
                  num_classes=placeholder(int),
                  noise=placeholder(float),
                  degree=placeholder(int),  # synthetic:polynomial feature degree (3)
                  num_test=placeholder(int),
                  cluster_std=placeholder(float),
              )
          ),
      )
  )


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a trainer need to know about a data set.

  Attributes:
    name: the registered name.
    task: ``'classification'`` or ``'regression'``.
    input_shape: shape of one input, without the batch axis.
    num_classes: number of classes; 0 for regression.
    num_examples: global sizes of ``train``, ``validation`` and ``test``.
    extra: set-specific facts (normalization ``mean``/``std``, MNIST-1D ``t``,
      polynomial ``degree`` and true ``coeffs``, ...).
  """

  name: str
  task: str
  input_shape: tuple[int, ...]
  num_classes: int
  num_examples: dict[str, int]
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Dataset:
  """Loaders and metadata from :func:`get_dataset`.

  ``train.batches(start_step)`` walks the training split from any global
  step (with ``train.prefetch`` batches prepared ahead by the Trainer);
  ``validation`` (None without a holdout) and ``test``
  iterate every example once with a ``mask``; ``arrays(split)`` returns a
  whole split at once for small sets kept on the device.
  """

  info: DatasetInfo
  train: TrainLoader
  validation: Optional[EvalLoader]
  test: EvalLoader

  def arrays(self, split: str = 'train') -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of a whole split (all hosts' examples), preprocessed like
    evaluation batches (normalized, not augmented), float32 inputs and
    float32/int32 targets; ``jax.device_put`` puts them on a device.

    Rows follow the loader's ``indices`` (sorted), so for the training split
    ``x[self.train.epoch_positions(e)]`` is epoch ``e`` in the loader's order.
    """
    loaders = {'train': self.train, 'validation': self.validation, 'test': self.test}
    if split not in loaders or loaders[split] is None:
      have = [k for k, v in loaders.items() if v is not None]
      raise ValueError(f'Dataset.arrays: split={split!r}; allowed: {have}.')
    loader = loaders[split]
    batch = loader.source.read(loader.examples)
    transform = self.test.transform
    if transform is not None:
      batch = transform(batch)
    return np.asarray(batch['x']), np.asarray(batch['y'])


class _Raw(NamedTuple):
  """What a builder hands to the shared steps."""

  train: Source
  test: Source
  task: str
  input_shape: tuple[int, ...]
  num_classes: int
  train_labels: Optional[Callable[[], np.ndarray]]  # lazily, for stratification
  images: bool = False
  extra: dict = {}
  generates_num_train: bool = False  # num_train was used to generate the split


def _arrays_raw(
    arrays: dict,
    task: str,
    num_classes: int,
    extra=None,
    generates_num_train: bool = False,
) -> _Raw:
  train = ArraySource(arrays['x_train'], arrays['y_train'])
  test = ArraySource(arrays['x_test'], arrays['y_test'])
  labels = (lambda: train.y) if task == 'classification' else None
  return _Raw(
      train,
      test,
      task,
      tuple(train.x.shape[1:]),
      num_classes,
      labels,
      extra=extra or {},
      generates_num_train=generates_num_train,
  )


def _build_mnist1d(config, shuffle_seq: bool) -> _Raw:
  arrays = mnist1d_data.load_mnist1d(config.cache_dir, shuffle_seq=shuffle_seq)
  return _arrays_raw(
      arrays,
      'classification',
      mnist1d_data.NUM_CLASSES,
      extra={'t': arrays['t'], 'args': mnist1d_data.mnist1d_args(shuffle_seq)},
  )


def _synthetic_kwargs(
    config,
    name: str,
    generator: Callable,
    used: tuple[str, ...] = (),
    defaults: Optional[dict] = None,
) -> dict:
  """Generator arguments from ``config.synthetic``; a set field the problem
  does not use is an error rather than silently ignored."""
  accepted = set(inspect.signature(generator).parameters)
  kwargs = dict(defaults or {})
  for key, value in config.synthetic.items():
    if value is None:
      continue
    if key not in accepted and key not in used:
      allowed = sorted((accepted | set(used)) & set(config.synthetic.keys()))
      raise ValueError(
          f'data.synthetic.{key}={value!r} is not used by {name}; '
          f'its fields: {allowed}.'
      )
    if key in accepted:
      kwargs[key] = value
  if config.num_train is not None:
    kwargs['num_train'] = config.num_train
  kwargs['seed'] = config.seed
  return kwargs


def _build_synthetic(
    config, name: str, generator: Callable, task: str, defaults: Optional[dict] = None
) -> _Raw:
  kwargs = _synthetic_kwargs(config, name, generator, defaults=defaults)
  num_classes = 0
  if task == 'classification':
    default = inspect.signature(generator).parameters['num_classes'].default
    num_classes = int(kwargs.get('num_classes', default))
    if num_classes < 2:
      raise ValueError(
          f'data.synthetic.num_classes={num_classes} is out of range for {name}; '
          'allowed: [2, inf).'
      )
  elif kwargs.get('num_classes', 0):
    raise ValueError(
        f'data.synthetic.num_classes={kwargs["num_classes"]} with {name}, a '
        'regression problem; use synthetic:teacher_student_classification.'
    )
  arrays = generator(**kwargs)
  return _arrays_raw(arrays, task, num_classes, generates_num_train=True)


def _build_polynomial(config, name: str) -> _Raw:
  kwargs = _synthetic_kwargs(
      config, name, synthetic.polynomial_regression, used=('degree',)
  )
  degree = 3 if config.synthetic.degree is None else config.synthetic.degree
  arrays = synthetic.polynomial_regression(**kwargs)
  featured = dict(arrays)
  for split in ('train', 'test'):
    featured[f'x_{split}'] = synthetic.polynomial_features(arrays[f'x_{split}'], degree)
  # The raw inputs stay available as feature column 1 (x^1 / 1!).
  extra = {'degree': degree, 'coeffs': synthetic.POLYNOMIAL_COEFFS}
  return _arrays_raw(featured, 'regression', 0, extra=extra, generates_num_train=True)


def _build_tfds(config, tfds_name: str) -> _Raw:
  from research.data import tfds_source  # pylint: disable=import-outside-toplevel

  def load(split):
    return tfds_source.load_tfds(
        tfds_name,
        split,
        data_dir=config.data_dir,
        download=config.download,
        in_memory=config.in_memory,
    )

  train, info = load(config.train_split)
  test, _ = load(config.test_split)
  labels = (lambda: train.y) if config.in_memory else train.labels
  return _Raw(
      train,
      test,
      'classification',
      tuple(info.features['image'].shape),
      int(info.features['label'].num_classes),
      labels,
      images=True,
      extra={'tfds_name': tfds_name},
  )


_REGISTRY: dict[str, Callable[[Any], _Raw]] = {
    'mnist1d': functools.partial(_build_mnist1d, shuffle_seq=False),
    'mnist1d_shuffled': functools.partial(_build_mnist1d, shuffle_seq=True),
    'synthetic:teacher_student': functools.partial(
        _build_synthetic,
        name='synthetic:teacher_student',
        generator=synthetic.teacher_student,
        task='regression',
        defaults={'num_classes': 0},
    ),
    'synthetic:teacher_student_classification': functools.partial(
        _build_synthetic,
        name='synthetic:teacher_student_classification',
        generator=synthetic.teacher_student,
        task='classification',
        defaults={'num_classes': 10},
    ),
    'synthetic:polynomial': functools.partial(
        _build_polynomial, name='synthetic:polynomial'
    ),
    'synthetic:linear_highdim': functools.partial(
        _build_synthetic,
        name='synthetic:linear_highdim',
        generator=synthetic.linear_highdim,
        task='regression',
    ),
    'synthetic:blobs': functools.partial(
        _build_synthetic,
        name='synthetic:blobs',
        generator=synthetic.gaussian_blobs,
        task='classification',
    ),
}


def registered_names() -> list[str]:
  """Every name :func:`get_dataset` knows (any other ``tfds:NAME`` works too)."""
  return sorted(_REGISTRY) + [f'tfds:{n}' for n in TFDS_IMAGE_SETS]


def _lookup(name: str) -> Callable[[Any], _Raw]:
  if name in _REGISTRY:
    return _REGISTRY[name]
  if isinstance(name, str) and name.startswith('tfds:') and len(name) > 5:
    return functools.partial(_build_tfds, tfds_name=name[5:])
  raise ValueError(
      f'Unknown data set name {name!r}; registered: {", ".join(registered_names())} '
      '(and tfds:NAME for any TFDS image-classification set).'
  )


def _check_fields(config) -> None:
  defaults = default_config()
  for key in config.keys():
    if key not in defaults:
      raise ValueError(
          f'Unknown data config field {key!r}; allowed: {sorted(defaults.keys())}.'
      )
  for key in config.get('synthetic', {}).keys():
    if key not in defaults.synthetic:
      raise ValueError(
          f'Unknown data config field synthetic.{key!r}; allowed: '
          f'{sorted(defaults.synthetic.keys())}.'
      )


def _with_defaults(config) -> ml_collections.ConfigDict:
  _check_fields(config)
  merged = default_config()
  merged.update(config.to_dict() if hasattr(config, 'to_dict') else dict(config))
  return merged


def _split_train(config, raw: _Raw) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """Training and validation indices into ``raw.train``."""
  n = len(raw.train)
  if config.stratify and raw.train_labels is None:
    raise ValueError(
        f'data.stratify=True needs class labels; {config.name} is a regression set.'
    )
  labels = raw.train_labels() if config.stratify else None
  pool = np.arange(n)
  if config.num_train is not None and not raw.generates_num_train:
    if not 1 <= config.num_train <= n:
      raise ValueError(
          f'data.num_train={config.num_train} is out of range; allowed: [1, {n}].'
      )
    if config.num_train < n:
      _, pool = splits.holdout_split(
          n, count=config.num_train, labels=labels, seed=config.seed + _SUBSET_STREAM
      )
      labels = None if labels is None else labels[pool]

  use_folds = config.num_folds is not None
  use_holdout = config.validation_fraction > 0 or config.validation_count is not None
  if use_folds and use_holdout:
    raise ValueError(
        'data.num_folds and data.validation_fraction/validation_count '
        'are exclusive; set one.'
    )
  if config.validation_fraction > 0 and config.validation_count is not None:
    raise ValueError(
        'data.validation_fraction and data.validation_count are exclusive; set one.'
    )
  if use_folds:
    if config.fold is None or not 0 <= config.fold < config.num_folds:
      raise ValueError(
          f'data.fold={config.fold!r} is out of range; allowed: '
          f'[0, {config.num_folds - 1}] for num_folds={config.num_folds}.'
      )
    train, val = splits.kfold_split(
        len(pool), config.num_folds, labels=labels, seed=config.seed
    )[config.fold]
  elif use_holdout:
    fraction = config.validation_fraction if config.validation_fraction > 0 else None
    train, val = splits.holdout_split(
        len(pool),
        fraction=fraction,
        count=config.validation_count,
        labels=labels,
        seed=config.seed,
    )
  else:
    return pool, None
  return pool[train], pool[val]


def _image_preprocess(
    config, raw: _Raw, train_idx: np.ndarray
) -> augment_lib.ImagePreprocess:
  if isinstance(raw.train, ArraySource):
    images = raw.train.x[train_idx]
  else:
    rng = np.random.default_rng((config.seed, _STATS_STREAM))
    sample = rng.permutation(train_idx)[:_STATS_SAMPLE]
    images = raw.train.read(np.sort(sample))['x']
  if config.normalize:
    mean, std = augment_lib.channel_stats(images)
  else:  # only rescale to [0, 1]
    channels = raw.input_shape[-1]
    mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
  return augment_lib.ImagePreprocess(mean, std, augment=config.augment)


def _eval_batch_size(config, n: int, process_count: int) -> int:
  if config.eval_batch_size is not None:
    return config.eval_batch_size
  return min(config.batch_size, -(-n // process_count) * process_count)


@contextlib.contextmanager
def _config_paths(fn: str):
  """A loader's argument errors named by their config path: the loaders take
  the data config's fields under the same names (``TrainLoader: seed=-1``
  -> ``config.data.seed=-1``)."""
  try:
    yield
  except (TypeError, ValueError) as e:
    message = str(e)
    if message.startswith(f'{fn}: '):
      raise type(e)('config.data.' + message[len(fn) + 2:]) from e
    raise


def get_dataset(
    config: ml_collections.ConfigDict,
    *,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
) -> Dataset:
  """Builds a data set, its splits and loaders from the data config.

  Args:
    config: the fields of :func:`default_config` (missing ones take their
      defaults); an experiment config with a ``data`` field is accepted too.
    process_index, process_count: this host; default from JAX.

  Returns:
    A :class:`Dataset`.

  Raises:
    ValueError: unknown name or field, batch size larger than a split, bad
      validation or fold settings, augmentation asked of non-image data.
    DatasetNotPreparedError: a TFDS set that is not prepared and could not be
      downloaded (a ``FileNotFoundError``).
  """
  if 'name' not in config and 'data' in config:
    config = config.data
  config = _with_defaults(config)
  build = _lookup(config.name)
  index, count = process_info(process_index, process_count)
  raw = build(config)
  if config.augment and not raw.images:
    raise ValueError(f'data.augment=True: {config.name} is not an image data set.')
  train_idx, val_idx = _split_train(config, raw)

  train_transform = eval_transform = None
  extra = dict(raw.extra)
  if raw.images:
    preprocess = _image_preprocess(config, raw, train_idx)
    train_transform, eval_transform = preprocess.train, preprocess.eval
    extra.update(mean=preprocess.mean, std=preprocess.std)

  hosts = dict(process_index=index, process_count=count)
  with _config_paths('TrainLoader'):
    train = TrainLoader(
        raw.train,
        config.batch_size,
        indices=train_idx,
        seed=config.seed,
        shuffle=config.shuffle,
        transform=train_transform,
        prefetch=config.prefetch,
        **hosts,
    )

  def eval_loader(source, indices):
    n = len(source) if indices is None else len(indices)
    return EvalLoader(
        source,
        _eval_batch_size(config, n, count),
        indices=indices,
        transform=eval_transform,
        **hosts,
    )

  validation = None if val_idx is None else eval_loader(raw.train, val_idx)
  test = eval_loader(raw.test, None)
  info = DatasetInfo(
      name=config.name,
      task=raw.task,
      input_shape=raw.input_shape,
      num_classes=raw.num_classes,
      num_examples={
          'train': len(train_idx),
          'validation': 0 if val_idx is None else len(val_idx),
          'test': len(raw.test),
      },
      extra=extra,
  )
  return Dataset(info, train, validation, test)


__all__ = [
    'Dataset',
    'DatasetInfo',
    'TFDS_IMAGE_SETS',
    'default_config',
    'get_dataset',
    'registered_names',
]
