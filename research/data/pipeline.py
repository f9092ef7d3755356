"""The numpy batch pipeline: epoch order, host sharding, batching, prefetch.

Order.  Epoch ``e`` visits the examples of a split in the order
``numpy.random.default_rng((seed, e)).permutation(n)``: a pure function of
(seed, epoch), computed for the whole epoch up front.  The batch at data
at a global step can therefore be rebuilt after a restart without replaying
anything: :meth:`TrainLoader.batches` and :meth:`TrainLoader.indices` start
at any step; they are the one way to walk the data (the Trainer resumes
with them).

Hosts.  ``batch_size`` is the global batch.  Step ``s`` of an epoch takes the
global batch ``order[s*B:(s+1)*B]`` and host ``p`` of ``P`` keeps the slice
``[p*B/P, (p+1)*B/P)`` of it.  Hosts see disjoint examples, every host runs the
same number of steps (collectives never wait on a host that ran out), and the
union over hosts is exactly the single-host batch, so a run's data do not
depend on how many hosts it uses.

Training drops the last partial global batch.  Evaluation pads it: the padded
rows repeat a real example with its features zeroed and ``mask`` False, so a
masked mean counts every example of the split exactly once.

A batch is a dict of numpy arrays: ``x``, ``y`` and, for evaluation, ``mask``.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Optional,
    Protocol,
)

import numpy as np

Batch = dict[str, np.ndarray]
TrainTransform = Callable[[Batch, np.random.Generator], Batch]
EvalTransform = Callable[[Batch], Batch]

# Mixed into the augmentation seed so that its stream never equals the
# (seed, epoch) stream that orders the epoch.
_AUGMENT_STREAM = 0x5EED


class Source(Protocol):
  """Random access to a split: ``len(source)`` and ``source.read(indices)``."""

  def __len__(self) -> int:
    ...

  def read(self, indices: np.ndarray) -> Batch:
    """Returns ``{'x': ..., 'y': ...}`` for the examples at ``indices``."""


class ArraySource:
  """A split held in memory as two arrays with a leading example axis."""

  def __init__(self, x: np.ndarray, y: np.ndarray):
    if len(x) != len(y):
      raise ValueError(f'ArraySource: len(x)={len(x)} != len(y)={len(y)}.')
    self.x = x
    self.y = y

  def __len__(self) -> int:
    return len(self.x)

  def read(self, indices: np.ndarray) -> Batch:
    return {'x': self.x[indices], 'y': self.y[indices]}


def _check_int(
    name: str, value: Any, low: int, high: Optional[int] = None, fn: str = ''
) -> int:
  where = f'{fn}: ' if fn else ''
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f'{where}{name} must be an int, got {value!r}.')
  value = int(value)
  if value < low or (high is not None and value > high):
    top = 'inf' if high is None else high
    raise ValueError(f'{where}{name}={value} is out of range; allowed: [{low}, {top}].')
  return value


def process_info(
    process_index: Optional[int] = None, process_count: Optional[int] = None
) -> tuple[int, int]:
  """This host's (index, count); defaults from ``jax.process_index/count()``."""
  if process_count is None:
    import jax  # only when not injected, so tests can fake many hosts

    process_count = jax.process_count()
  if process_index is None:
    import jax

    process_index = jax.process_index()
  count = _check_int('process_count', process_count, 1, fn='process_info')
  index = _check_int('process_index', process_index, 0, count - 1, fn='process_info')
  return index, count


def host_slice(batch_size: int, process_index: int, process_count: int) -> slice:
  """The part of a global batch that belongs to ``process_index``."""
  if batch_size % process_count:
    raise ValueError(
        f'batch_size={batch_size} must be divisible by process_count={process_count}.'
    )
  per_host = batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


def epoch_order(
    num_examples: int, seed: int, epoch: int, shuffle: bool = True
) -> np.ndarray:
  """Positions ``0..n-1`` in the order epoch ``epoch`` visits them."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def _as_indices(
    indices: Optional[Iterable[int]], source: Source, fn: str
) -> np.ndarray:
  if indices is None:
    return np.arange(len(source))
  indices = np.asarray(indices, dtype=np.int64)
  if indices.ndim != 1:
    raise ValueError(f'{fn}: indices must be 1-D, got shape {indices.shape}.')
  if len(indices) and (indices.min() < 0 or indices.max() >= len(source)):
    raise ValueError(f'{fn}: indices must lie in [0, {len(source)}).')
  return indices


class TrainLoader:
  """Shuffled training batches of one split; the last partial batch is dropped.

  Args:
    source: the split (:class:`Source`).
    batch_size: global batch size; each host gets ``batch_size / process_count``.
    indices: the examples of ``source`` to use (a training subset); all if None;
      kept as ``examples``.
    seed: non-negative int; epoch ``e`` is ordered by ``default_rng((seed, e))``.
    shuffle: False keeps the order of ``indices`` every epoch.
    transform: ``transform(batch, rng) -> batch`` (normalization, augmentation);
      ``rng`` is ``default_rng((seed, epoch, step, process_index, salt))``, so
      augmentation too is a function of the data position.
    process_index, process_count: this host; default ``jax.process_index()`` and
      ``jax.process_count()``.
    prefetch: batches a trainer prepares ahead on a thread (0: none).
  """

  def __init__(
      self,
      source: Source,
      batch_size: int,
      *,
      indices: Optional[Iterable[int]] = None,
      seed: int = 0,
      shuffle: bool = True,
      transform: Optional[TrainTransform] = None,
      process_index: Optional[int] = None,
      process_count: Optional[int] = None,
      prefetch: int = 2,
  ):
    fn = 'TrainLoader'
    self.prefetch = _check_int('prefetch', prefetch, 0, fn=fn)
    self.source = source
    self.examples = _as_indices(indices, source, fn)
    self.num_examples = len(self.examples)
    self.batch_size = _check_int('batch_size', batch_size, 1, fn=fn)
    if self.batch_size > self.num_examples:
      raise ValueError(
          f'{fn}: batch_size={batch_size} is larger than the split '
          f'({self.num_examples} examples); allowed: [1, {self.num_examples}].'
      )
    self.seed = _check_int('seed', seed, 0, fn=fn)
    self.shuffle = bool(shuffle)
    self.transform = transform
    self.process_index, self.process_count = process_info(process_index, process_count)
    self._slice = host_slice(self.batch_size, self.process_index, self.process_count)
    self.steps_per_epoch = self.num_examples // self.batch_size

  @property
  def host_batch_size(self) -> int:
    return self.batch_size // self.process_count

  def epoch_positions(self, epoch: int) -> np.ndarray:
    """Positions into ``indices`` in the order epoch ``epoch`` visits them.

    A trainer holding the split on the device (rows in ``indices`` order) can
    gather ``x[epoch_positions(e)]`` to follow the same order as the loader.
    """
    return epoch_order(self.num_examples, self.seed, epoch, self.shuffle)

  def epoch_indices(self, epoch: int) -> np.ndarray:
    """Source indices of the whole epoch, in visiting order (all hosts)."""
    return self.examples[self.epoch_positions(epoch)]

  def batch_indices(self, epoch_indices: np.ndarray, step: int) -> np.ndarray:
    """This host's source indices for ``step`` of an epoch."""
    start = step * self.batch_size
    return epoch_indices[start : start + self.batch_size][self._slice]

  def _batch(self, epoch_indices: np.ndarray, epoch: int, step: int) -> Batch:
    batch = self.source.read(self.batch_indices(epoch_indices, step))
    if self.transform is not None:
      rng = np.random.default_rng(
          (self.seed, epoch, step, self.process_index, _AUGMENT_STREAM)
      )
      batch = self.transform(batch, rng)
    return batch

  def _walk(self, start_step: int):
    """``(epoch order, epoch, step in epoch)`` from global step ``start_step`` on."""
    start_step = _check_int('start_step', start_step, 0, fn='TrainLoader')
    epoch, step = divmod(start_step, self.steps_per_epoch)
    while True:
      order = self.epoch_indices(epoch)
      for s in range(step, self.steps_per_epoch):
        yield order, epoch, s
      epoch, step = epoch + 1, 0

  def batches(self, start_step: int = 0) -> Iterator[Batch]:
    """This host's batches from global step ``start_step`` (0-based) on,
    across epochs, without end: batch ``t`` is the same every time."""
    for order, epoch, step in self._walk(start_step):
      yield self._batch(order, epoch, step)

  def indices(self, start_step: int = 0) -> Iterator[np.ndarray]:
    """The source indices of :meth:`batches` (for a split kept on the device)."""
    for order, _, step in self._walk(start_step):
      yield self.batch_indices(order, step)


class EvalLoader:
  """Every example of a split exactly once, in order, with a padding mask.

  Args:
    source: the split (:class:`Source`).
    batch_size: global batch size, at most the number of examples (rounded
      up to a multiple of ``process_count``).
    indices: the examples of ``source`` to use; all if None.
    transform: ``transform(batch) -> batch`` (normalization only).
    process_index, process_count: as for :class:`TrainLoader`.
  """

  def __init__(
      self,
      source: Source,
      batch_size: int,
      *,
      indices: Optional[Iterable[int]] = None,
      transform: Optional[EvalTransform] = None,
      process_index: Optional[int] = None,
      process_count: Optional[int] = None,
  ):
    fn = 'EvalLoader'
    self.source = source
    self.examples = _as_indices(indices, source, fn)
    self.num_examples = len(self.examples)
    if self.num_examples == 0:
      raise ValueError(f'{fn}: the split has no examples.')
    self.batch_size = _check_int('batch_size', batch_size, 1, fn=fn)
    self.transform = transform
    self.process_index, self.process_count = process_info(process_index, process_count)
    # At most the split, rounded up to a multiple of the host count (so a
    # split smaller than the host count still gets one padded batch).
    largest = -(-self.num_examples // self.process_count) * self.process_count
    if self.batch_size > largest:
      raise ValueError(
          f'{fn}: batch_size={batch_size} is larger than the split '
          f'({self.num_examples} examples); allowed: [1, {largest}].'
      )
    self._slice = host_slice(self.batch_size, self.process_index, self.process_count)
    self.num_batches = math.ceil(self.num_examples / self.batch_size)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[Batch]:
    n = self.num_examples
    for b in range(self.num_batches):
      slots = np.arange(b * self.batch_size, (b + 1) * self.batch_size)[self._slice]
      mask = slots < n
      # Padding rows read a real example (shapes and dtypes come for free) and
      # are then zeroed, so they cannot put NaNs or extreme values in a sum.
      batch = self.source.read(self.examples[np.minimum(slots, n - 1)])
      if self.transform is not None:
        batch = self.transform(batch)
      if not mask.all():
        batch = {k: _zero_rows(v, ~mask) for k, v in batch.items()}
      batch['mask'] = mask
      yield batch


def _zero_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
  a = np.array(a, copy=True)
  a[rows] = 0
  return a


_ITEM, _END, _ERROR = 'item', 'end', 'error'


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
  while not stop.is_set():
    try:
      q.put(item, timeout=0.05)
      return True
    except queue.Full:
      continue
  return False


def _prefetch_worker(
    iterator: Iterator[Any], q: queue.Queue, stop: threading.Event
) -> None:
  try:
    for item in iterator:
      if not _put(q, stop, (_ITEM, item)):
        return
    _put(q, stop, (_END, None))
  except BaseException as e:  # pylint: disable=broad-except
    _put(q, stop, (_ERROR, e))


class Prefetcher:
  """Runs an iterator on a background thread, ``size`` items ahead.

  The queue is bounded, so the producer never runs more than ``size`` items
  ahead of the consumer.  An exception raised by the producer is re-raised in
  the consumer at the point where the failed item would have arrived.
  ``close()`` (or leaving a ``with`` block) stops the thread.
  """

  def __init__(self, iterable: Iterable[Any], size: int = 2):
    self._size = _check_int('size', size, 1, fn='Prefetcher')
    self._queue: queue.Queue = queue.Queue(maxsize=self._size)
    self._stop = threading.Event()
    self._done = False
    # The worker holds the queue and the event, not ``self``, so a dropped
    # Prefetcher is collected and its __del__ stops the thread.
    self._thread = threading.Thread(
        target=_prefetch_worker,
        args=(iter(iterable), self._queue, self._stop),
        name='Prefetcher',
        daemon=True,
    )
    self._thread.start()

  def __iter__(self) -> 'Prefetcher':
    return self

  def __next__(self) -> Any:
    if self._done:
      raise StopIteration
    kind, value = self._queue.get()
    if kind == _ITEM:
      return value
    self._done = True
    self._thread.join()
    if kind == _ERROR:
      raise value
    raise StopIteration

  def close(self) -> None:
    self._done = True
    self._stop.set()
    while True:  # unblock a producer waiting on a full queue
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout=10.0)

  @property
  def alive(self) -> bool:
    return self._thread.is_alive()

  def __enter__(self) -> 'Prefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self._stop.set()
    except AttributeError:  # __init__ failed before the event existed
      pass


__all__ = [
    'ArraySource',
    'Batch',
    'EvalLoader',
    'EvalTransform',
    'Prefetcher',
    'Source',
    'TrainLoader',
    'TrainTransform',
    'epoch_order',
    'host_slice',
    'process_info',
]
