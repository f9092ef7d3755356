"""Training batches as the trainer consumes them.

The trainer needs, for an epoch and a starting batch, an iterator of this
host's part of each global batch. The global batch is a function of
``(seed, epoch, batch index)`` only, never of the number of hosts or devices,
so a run on one process and on many sees the same examples in the same order,
and a resumed run continues exactly where the interrupted one stopped.

Any object with ``num_examples``, ``steps_per_epoch`` and
``batches(epoch, start)`` works; :class:`ArrayBatches` serves in-memory arrays.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol

import jax
import numpy as np


class TrainBatches(Protocol):
  num_examples: int
  steps_per_epoch: int
  global_batch_size: int

  def batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
    """This host's part of global batches ``start, start + 1, ...`` of ``epoch``."""


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def host_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise ValueError(
        f'batch_size={global_batch_size} is not divisible by the number of '
        f'processes {process_count}.')
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


class ArrayBatches:
  """Shuffled, host-sharded training batches from in-memory arrays.

  Each epoch is a permutation drawn from ``default_rng((seed, epoch))``; the
  remainder that does not fill a global batch is dropped.
  """

  def __init__(self, arrays: dict, batch_size: int, seed: int = 0,
               process_index: Optional[int] = None,
               process_count: Optional[int] = None):
    self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
    sizes = {len(v) for v in self.arrays.values()}
    if len(sizes) != 1:
      raise ValueError(f'arrays have different lengths: {sizes}.')
    self.num_examples = sizes.pop()
    for k, v in self.arrays.items():
      if v.dtype.kind == 'f' and not np.all(np.isfinite(v)):
        bad = int(np.sum(~np.isfinite(v)))
        raise ValueError(f'input data: field {k!r} holds {bad} NaN or Inf values.')
    if not 0 < batch_size <= self.num_examples:
      raise ValueError(
          f'batch_size={batch_size} must be in [1, {self.num_examples}] (the '
          'number of training examples).')
    self.global_batch_size = batch_size
    self.seed = seed
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self._slice = host_slice(batch_size, self.process_index, self.process_count)
    self.steps_per_epoch = self.num_examples // batch_size

  def indices(self, epoch: int, batch: int) -> np.ndarray:
    """This host's example indices for global batch ``batch`` of ``epoch``."""
    perm = epoch_permutation(self.num_examples, self.seed, epoch)
    b = self.global_batch_size
    return perm[batch * b:(batch + 1) * b][self._slice]

  def batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
    perm = epoch_permutation(self.num_examples, self.seed, epoch)
    b = self.global_batch_size
    for i in range(start, self.steps_per_epoch):
      idx = perm[i * b:(i + 1) * b][self._slice]
      yield {k: v[idx] for k, v in self.arrays.items()}


def eval_batches(arrays: dict, batch_size: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[dict]:
  """Every example exactly once: the last batch is padded, with ``mask`` 0 on pads.

  With several hosts each global batch is split between them like training
  batches, so that summed metrics count each example once.
  """
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  n = len(next(iter(arrays.values())))
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  sl = host_slice(batch_size, pi, pc)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)
    batch = {k: v[idx] for k, v in arrays.items()}
    batch['mask'] = mask
    yield {k: v[sl] for k, v in batch.items()}
