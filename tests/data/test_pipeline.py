"""The batch pipeline: order, sharding, evaluation coverage, resume, prefetch."""

import itertools
import time

import numpy as np
import pytest

from research.data import pipeline



def _at(loader, epoch, step):
  """The batch at step ``step`` of epoch ``epoch``."""
  return next(loader.batches(epoch * loader.steps_per_epoch + step))


def _epoch(loader, epoch):
  """The batches of one epoch."""
  return list(itertools.islice(loader.batches(epoch * loader.steps_per_epoch),
                               loader.steps_per_epoch))

def _identity_source(n, feature_dim=3):
  """Example i has features i (every column) and label i, so batches show
  exactly which examples they hold."""
  x = np.repeat(np.arange(n, dtype=np.float32)[:, None], feature_dim, axis=1)
  return pipeline.ArraySource(x, np.arange(n, dtype=np.int32))


def _loader(n=50, batch_size=8, **kwargs):
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  return pipeline.TrainLoader(_identity_source(n), batch_size, **kwargs)


def test_epoch_order_follows_default_rng_of_seed_and_epoch():
  # The documented contract, so other code (or a paper) can rebuild the order.
  order = pipeline.epoch_order(30, seed=7, epoch=4)
  np.testing.assert_array_equal(order, np.random.default_rng((7, 4)).permutation(30))
  np.testing.assert_array_equal(
      pipeline.epoch_order(5, 7, 4, shuffle=False), np.arange(5)
  )


def test_same_seed_same_batches_other_epoch_other_order():
  a, b = _loader(seed=3), _loader(seed=3)
  for step in range(a.steps_per_epoch):
    np.testing.assert_array_equal(_at(a, 0, step)['y'], _at(b, 0, step)['y'])
  epoch0 = np.concatenate([batch['y'] for batch in _epoch(a, 0)])
  epoch1 = np.concatenate([batch['y'] for batch in _epoch(a, 1)])
  other_seed = np.concatenate(
      [batch['y'] for batch in _epoch(_loader(seed=4), 0)]
  )
  assert not np.array_equal(epoch0, epoch1)
  assert not np.array_equal(epoch0, other_seed)


def test_training_drops_remainder_without_repeats():
  loader = _loader(n=50, batch_size=8)
  assert loader.steps_per_epoch == 6
  seen = np.concatenate([batch['y'] for batch in _epoch(loader, 2)])
  assert len(seen) == 48 and len(np.unique(seen)) == 48
  np.testing.assert_array_equal(seen, loader.epoch_indices(2)[:48])


def test_training_respects_indices_subset():
  subset = np.arange(0, 50, 2)  # even examples only
  loader = _loader(n=50, batch_size=5, indices=subset)
  seen = np.concatenate([batch['y'] for batch in _epoch(loader, 0)])
  np.testing.assert_array_equal(np.sort(seen), subset)


@pytest.mark.parametrize('process_count', [2, 4])
def test_host_shards_are_disjoint_and_union_is_the_global_batch(process_count):
  n, batch_size = 45, 8
  single = _loader(n, batch_size, seed=1)
  hosts = [
      _loader(n, batch_size, seed=1, process_index=p, process_count=process_count)
      for p in range(process_count)
  ]
  assert all(h.steps_per_epoch == single.steps_per_epoch for h in hosts)
  assert all(h.host_batch_size == batch_size // process_count for h in hosts)
  for step in range(single.steps_per_epoch):
    parts = [_at(h, 1, step)['y'] for h in hosts]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == batch_size  # disjoint
    np.testing.assert_array_equal(joined, _at(single, 1, step)['y'])


@pytest.mark.parametrize(
    'n,batch_size,process_count',
    [(23, 8, 1), (23, 8, 2), (24, 8, 4), (3, 4, 4), (1, 1, 1)],
)
def test_evaluation_covers_every_example_exactly_once(n, batch_size, process_count):
  source = _identity_source(n)
  seen = []
  num_batches = None
  for p in range(process_count):
    loader = pipeline.EvalLoader(
        source, batch_size, process_index=p, process_count=process_count
    )
    batches = list(loader)
    num_batches = num_batches or len(batches)
    assert len(batches) == num_batches == len(loader)  # hosts run equal step counts
    for batch in batches:
      assert batch['x'].shape == (batch_size // process_count, 3)
      assert batch['mask'].dtype == bool
      seen.append(batch['y'][batch['mask']])
      # Padding rows are zeroed, so they are harmless even without the mask.
      assert not batch['x'][~batch['mask']].any()
  seen = np.concatenate(seen)
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_evaluation_keeps_order_and_applies_transform():
  source = _identity_source(10)
  loader = pipeline.EvalLoader(
      source,
      4,
      indices=[9, 2, 5, 7, 1],
      transform=lambda b: {**b, 'x': b['x'] + 100.0},
      process_index=0,
      process_count=1,
  )
  batches = list(loader)
  np.testing.assert_array_equal(batches[0]['y'], [9, 2, 5, 7])
  np.testing.assert_array_equal(batches[1]['mask'], [True, False, False, False])
  assert batches[1]['x'][0, 0] == 101.0 and batches[1]['x'][1, 0] == 0.0


def test_batch_size_larger_than_split_is_an_error():
  with pytest.raises(ValueError, match='batch_size=11 is larger than the split'):
    _loader(n=10, batch_size=11)
  with pytest.raises(ValueError, match='larger than the split'):
    pipeline.EvalLoader(_identity_source(10), 11, process_index=0, process_count=1)
  with pytest.raises(ValueError, match='divisible by process_count'):
    _loader(n=10, batch_size=3, process_index=0, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    _loader(n=10, batch_size=2, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='seed'):
    _loader(seed=-1)


def test_default_process_info_comes_from_jax():
  import jax

  assert pipeline.process_info() == (jax.process_index(), jax.process_count())


def test_transform_rng_is_a_function_of_the_position():
  def noisy(batch, rng):
    return {**batch, 'x': batch['x'] + rng.standard_normal(batch['x'].shape)}

  a = _loader(transform=noisy)
  b = _loader(transform=noisy)
  np.testing.assert_array_equal(_at(a, 1, 2)['x'], _at(b, 1, 2)['x'])
  assert not np.array_equal(_at(a, 1, 2)['x'], _at(a, 1, 3)['x'])


def test_batches_from_any_step_continue_the_same_stream():
  loader = _loader(n=30, batch_size=4, seed=5)  # 7 steps per epoch
  reference = list(itertools.islice(loader.batches(), 20))
  for start in (0, 6, 7, 9, 19):
    got = list(itertools.islice(loader.batches(start), 20 - start))
    for want, have in zip(reference[start:], got, strict=True):
      np.testing.assert_array_equal(want['y'], have['y'])
  idx = list(itertools.islice(loader.indices(9), 3))
  for i, rows in enumerate(idx):
    np.testing.assert_array_equal(loader.source.read(rows)['y'], reference[9 + i]['y'])
  with pytest.raises(ValueError, match='start_step'):
    next(loader.batches(-1))


def test_prefetcher_yields_everything_in_order():
  with pipeline.Prefetcher(range(25), size=3) as p:
    assert list(p) == list(range(25))


def test_prefetcher_reraises_worker_errors_in_the_consumer():
  def produce():
    yield 1
    yield 2
    raise KeyError('broken record')

  p = pipeline.Prefetcher(produce(), size=1)
  assert next(p) == 1 and next(p) == 2
  with pytest.raises(KeyError, match='broken record'):
    next(p)
  with pytest.raises(StopIteration):
    next(p)
  assert not p.alive


def test_prefetcher_is_bounded_and_shuts_down_cleanly():
  produced = []

  def produce():
    for i in range(1000):
      produced.append(i)
      yield i

  p = pipeline.Prefetcher(produce(), size=2)
  assert next(p) == 0
  time.sleep(0.2)
  # One handed out, two queued, at most one more waiting to be put.
  assert len(produced) <= 4
  p.close()
  assert not p.alive
  with pytest.raises(StopIteration):
    next(p)
