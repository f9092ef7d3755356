"""Data: TFDS image sets, MNIST-1D, synthetic problems, splits and the batch pipeline.

Start with :func:`get_dataset` (names in :func:`registered_names`); the
pieces below it are public for studies that need them directly.  Importing
this package does not import TensorFlow Datasets; ``tfds:`` names load it
when used.
"""

from research.data.augment import (
    ImagePreprocess,
    channel_stats,
    normalize,
    random_crop_flip,
    random_crop_flip_jax,
)
from research.data.datasets import (
    TFDS_IMAGE_SETS,
    Dataset,
    DatasetInfo,
    default_config,
    get_dataset,
    registered_names,
)
from research.data.mnist1d_data import (
    MNIST1D_ARGS,
    generate_mnist1d,
    load_mnist1d,
    mnist1d_args,
)
from research.data.pipeline import (
    ArraySource,
    EvalLoader,
    Prefetcher,
    Source,
    TrainLoader,
    epoch_order,
    host_slice,
    process_info,
)
from research.data.splits import holdout_split, kfold_split
from research.data.synthetic import (
    gaussian_blobs,
    linear_highdim,
    polynomial_features,
    polynomial_regression,
    teacher_student,
)

__all__ = [
    'ArraySource',
    'Dataset',
    'DatasetInfo',
    'EvalLoader',
    'ImagePreprocess',
    'MNIST1D_ARGS',
    'Prefetcher',
    'Source',
    'TFDS_IMAGE_SETS',
    'TrainLoader',
    'channel_stats',
    'default_config',
    'epoch_order',
    'gaussian_blobs',
    'generate_mnist1d',
    'get_dataset',
    'holdout_split',
    'host_slice',
    'kfold_split',
    'linear_highdim',
    'load_mnist1d',
    'mnist1d_args',
    'normalize',
    'polynomial_features',
    'polynomial_regression',
    'process_info',
    'random_crop_flip',
    'random_crop_flip_jax',
    'registered_names',
    'teacher_student',
]
