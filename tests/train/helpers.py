"""Helpers shared by the Trainer tests: MNIST-1D data, models and states, and
a counter of XLA compilations."""

import functools

import jax
import numpy as np

from research import models
from research.data import mnist1d_data
from research.train import state as state_lib


@functools.lru_cache(maxsize=None)
def mnist1d(n: int):
  """The first ``n`` MNIST-1D training examples: float32 ``x``, int32 ``y``."""
  d = mnist1d_data.load_mnist1d()
  return (np.asarray(d['x_train'][:n], np.float32),
          np.asarray(d['y_train'][:n], np.int32))


@functools.lru_cache(maxsize=None)
def mnist1d_model(name: str, **overrides):
  """``(model, variables)`` of the registry model ``name`` on MNIST-1D inputs,
  its default config updated with ``overrides``; initialized with key 0."""
  config = models.default_config(name)
  config.update(overrides)
  return models.init_model(config, jax.random.key(0), (40,))


def mnist1d_state(name: str, tx, **overrides) -> state_lib.TrainState:
  """A fresh TrainState of :func:`mnist1d_model` with optimizer ``tx`` (rng key 1)."""
  model, variables = mnist1d_model(name, **overrides)
  return state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                     rng=jax.random.key(1))


# One event per program that reached the compiler: compiled by XLA, or read
# from the persistent compilation cache (``./launch.sh test`` turns it on), so
# that a cache hit still counts as the recompilation it would be without it.
COMPILE_EVENTS = ('/jax/core/compile/backend_compile_duration',
                  '/jax/compilation_cache/compile_time_saved_sec')


def count_compiles() -> list:
  """A list that gets one entry per XLA compilation from now on."""
  events = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event in COMPILE_EVENTS:
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  return events
