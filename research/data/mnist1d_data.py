"""MNIST-1D, generated locally and cached as ``.npz``.

The data come from the ``mnist1d`` package's own generator
(``mnist1d.data.make_dataset``) with the paper's default arguments: 5000
sequences of 40 features, 10 balanced classes, 80/20 train/test split
(4000/1000), seed 42.  Nothing is downloaded and nothing is pickled.

The shuffled-sequence variant is the same generator with ``shuffle_seq=True``:
one fixed permutation of the 40 positions, applied to every example, which
destroys the spatial structure that convolutions rely on while leaving a
fully connected network's task unchanged.

Cache: ``<cache_dir>/mnist1d.npz`` and ``mnist1d_shuffled.npz``, where
``cache_dir`` defaults to ``$RESEARCH_CACHE/mnist1d`` or
``~/.cache/research/mnist1d``.  Each file records the generation arguments and
a SHA-256 of its arrays; a file that cannot be read, has other arguments,
wrong shapes or dtypes, or a wrong checksum is regenerated, never used.
Files are written to a temporary name and moved into place with
``os.replace``, so a crash or a concurrent writer never leaves a torn file.

References: Greydanus and Kobak, Scaling down deep learning with MNIST-1D,
2024 (ICML).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from typing import Optional

from absl import logging
import numpy as np

# The paper's defaults (mnist1d.data.get_dataset_args without its download URL).
MNIST1D_ARGS = dict(
    num_samples=5000,
    train_split=0.8,
    template_len=12,
    padding=[36, 60],
    scale_coeff=0.4,
    max_translation=48,
    corr_noise_scale=0.25,
    iid_noise_scale=2e-2,
    shear_scale=0.75,
    shuffle_seq=False,
    final_seq_length=40,
    seed=42,
)
NUM_CLASSES = 10
_FORMAT_VERSION = 1
_ARRAYS = ('x_train', 'y_train', 'x_test', 'y_test', 't')


def mnist1d_args(shuffle_seq: bool = False) -> dict:
  """The generation arguments of MNIST-1D or its shuffled-sequence variant."""
  return {**MNIST1D_ARGS, 'shuffle_seq': bool(shuffle_seq)}


def default_cache_dir() -> str:
  root = os.environ.get('RESEARCH_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'research'
  )
  return os.path.join(root, 'mnist1d')


def cache_path(cache_dir: Optional[str] = None, shuffle_seq: bool = False) -> str:
  name = 'mnist1d_shuffled.npz' if shuffle_seq else 'mnist1d.npz'
  return os.path.join(cache_dir or default_cache_dir(), name)


def _expected_shapes(args: dict) -> dict[str, tuple[int, ...]]:
  n_train = int(args['num_samples'] * args['train_split'])
  n_test = args['num_samples'] - n_train
  length = args['final_seq_length']
  return {
      'x_train': (n_train, length),
      'y_train': (n_train,),
      'x_test': (n_test, length),
      'y_test': (n_test,),
      't': (length,),
  }


_DTYPES = {
    'x_train': np.float32,
    'y_train': np.int32,
    'x_test': np.float32,
    'y_test': np.int32,
    't': np.float32,
}


def _checksum(arrays: dict[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  for key in _ARRAYS:
    a = np.ascontiguousarray(arrays[key])
    digest.update(f'{key}{a.dtype.str}{a.shape}'.encode())
    digest.update(a.tobytes())
  return digest.hexdigest()


def generate_mnist1d(shuffle_seq: bool = False) -> dict[str, np.ndarray]:
  """Runs the mnist1d generator (a few seconds on a CPU).

  The generator seeds NumPy's and Python's global random state; both are
  restored afterwards so callers' global randomness is untouched.

  Returns:
    ``x_train`` (4000, 40) float32, ``y_train`` (4000,) int32, ``x_test``
    (1000, 40), ``y_test`` (1000,), and ``t`` (40,), the sequence coordinate.
  """
  from mnist1d import data as mnist1d_lib  # pylint: disable=import-outside-toplevel
  from mnist1d import utils as mnist1d_utils  # pylint: disable=import-outside-toplevel

  args = mnist1d_args(shuffle_seq)
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    raw = mnist1d_lib.make_dataset(mnist1d_utils.ObjectView(dict(args)))
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return {
      'x_train': raw['x'].astype(np.float32),
      'y_train': raw['y'].astype(np.int32),
      'x_test': raw['x_test'].astype(np.float32),
      'y_test': raw['y_test'].astype(np.int32),
      't': np.asarray(raw['t'], np.float32),
  }


def _read_cache(path: str, args: dict) -> tuple[Optional[dict[str, np.ndarray]], str]:
  """The cached arrays, or None and the reason they cannot be used."""
  if not os.path.exists(path):
    return None, 'no cache file'
  try:
    with np.load(path, allow_pickle=False) as f:
      stored = {key: f[key] for key in f.files}
  except Exception as e:  # pylint: disable=broad-except
    # Any failure to parse (bad zip, truncated member, bad header, zlib) means
    # the file is unusable; it is regenerated rather than trusted.
    return None, f'unreadable ({type(e).__name__}: {e})'
  try:
    version = int(stored['format_version'])
    recorded = json.loads(str(stored['args']))
    checksum = str(stored['checksum'])
  except (KeyError, ValueError, TypeError) as e:
    return None, f'missing or bad metadata ({type(e).__name__}: {e})'
  if version != _FORMAT_VERSION:
    return None, f'format version {version}, expected {_FORMAT_VERSION}'
  if recorded != json.loads(json.dumps(args)):
    return None, f'generated with other arguments {recorded}'
  for key, shape in _expected_shapes(args).items():
    a = stored.get(key)
    if a is None or a.shape != shape or a.dtype != _DTYPES[key]:
      got = None if a is None else (a.shape, a.dtype)
      return None, f'{key} is {got}, expected ({shape}, {np.dtype(_DTYPES[key])})'
  arrays = {key: stored[key] for key in _ARRAYS}
  if _checksum(arrays) != checksum:
    return None, 'checksum mismatch'
  return arrays, ''


def _write_cache(path: str, arrays: dict[str, np.ndarray], args: dict) -> None:
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.mnist1d-', suffix='.npz.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(
          f,
          **arrays,
          args=np.array(json.dumps(args)),
          checksum=np.array(_checksum(arrays)),
          format_version=np.array(_FORMAT_VERSION),
      )
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is ordinary data
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_mnist1d(
    cache_dir: Optional[str] = None,
    *,
    shuffle_seq: bool = False,
    regenerate: bool = False,
) -> dict[str, np.ndarray]:
  """MNIST-1D from the cache, generating (and caching) it when needed.

  Args:
    cache_dir: folder of the ``.npz`` files; see the module docstring.
    shuffle_seq: the shuffled-sequence variant.
    regenerate: ignore any cached file.

  Returns:
    The arrays of :func:`generate_mnist1d`.
  """
  args = mnist1d_args(shuffle_seq)
  path = cache_path(cache_dir, shuffle_seq)
  if not regenerate:
    arrays, reason = _read_cache(path, args)
    if arrays is not None:
      return arrays
    if reason != 'no cache file':
      logging.warning(
          'MNIST-1D cache %s is not usable (%s); regenerating.', path, reason
      )
  arrays = generate_mnist1d(shuffle_seq)
  _write_cache(path, arrays, args)
  return arrays


__all__ = [
    'MNIST1D_ARGS',
    'NUM_CLASSES',
    'cache_path',
    'default_cache_dir',
    'generate_mnist1d',
    'load_mnist1d',
    'mnist1d_args',
]
