"""Transformations that record measurements of the updates in the state.

They pass the updates through unchanged; the measurements are read back with
``research.optim.tree.get(state, name)``. Names and state types follow Optax
0.2.8 (``optax.snapshot``, ``optax.monitor``, ``optax.measure_with_ema``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

from research.optim import base
from research.optim import transform

__all__ = [
    'MonitorState',
    'SnapshotState',
    'measure_with_ema',
    'monitor',
    'snapshot',
]

Measure = Callable[[base.Updates], Any]


class SnapshotState(NamedTuple):
  measurement: dict[str, Any]


def snapshot(measure_name: str, measure: Measure) -> base.GradientTransformation:
  r"""Stores ``measure(updates)`` under ``measure_name``; updates pass unchanged.

  .. math::
    s_t = \mathrm{measure}(u_t), \qquad u_t \leftarrow u_t

  ``init`` stores ``measure(params)`` so that the state has its final
  structure from the start. In a chain it sees the updates transformed by the
  links before it (e.g. the norm before clipping).

  Args:
    measure_name: the key of the measurement in the state.
    measure: ``updates -> pytree``.

  References:
    Optax authors, Optax: composable gradient transformation and optimisation
    in JAX, 2020 (``optax.snapshot``).
  """

  def init_fn(params):
    return SnapshotState({measure_name: measure(params)})

  def update_fn(updates, state, params=None):
    del state, params
    return updates, SnapshotState({measure_name: measure(updates)})

  return base.GradientTransformation(init_fn, update_fn)


class MonitorState(NamedTuple):
  measurements: dict[str, Any]
  measure_states: tuple[Any, ...]


def _as_measure_transform(measure) -> base.GradientTransformationExtraArgs:
  # A plain function is a stateless measurement: its "updates" are the value.
  if callable(measure):
    measure = base.stateless(lambda u, _, m=measure: m(u))
  return base.with_extra_args_support(measure)


def monitor(
    measures: dict[str, Union[base.GradientTransformation, Measure]],
) -> base.GradientTransformationExtraArgs:
  r"""Records several measurements, some stateful, of the updates.

  .. math::
    (s^k_t, \sigma^k_t) = T_k(u_t, \sigma^k_{t-1}), \qquad u_t \leftarrow u_t

  Each measure is a function ``updates -> pytree`` or a transformation whose
  output "updates" are the measurement (e.g. :func:`measure_with_ema`). The
  measurements are empty after ``init`` and filled by each update.

  Args:
    measures: ``{name: measure}``.

  References:
    Optax authors, Optax: composable gradient transformation and optimisation
    in JAX, 2020 (``optax.monitor``).
  """
  transforms = {k: _as_measure_transform(m) for k, m in measures.items()}
  names = tuple(transforms)

  def init_fn(params):
    return MonitorState({}, tuple(transforms[k].init(params) for k in names))

  def update_fn(updates, state, params=None, **extra_args):
    measurements, measure_states = {}, []
    for name, inner_state in zip(names, state.measure_states):
      measurements[name], inner_state = transforms[name].update(
          updates, inner_state, params, **extra_args
      )
      measure_states.append(inner_state)
    return updates, MonitorState(measurements, tuple(measure_states))

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def measure_with_ema(
    measure: Measure,
    decay: Any,
    debias: bool = True,
    accumulator_dtype: Any = None,
) -> base.GradientTransformationExtraArgs:
  r"""A measurement followed by its exponential moving average (for :func:`monitor`).

  .. math::
    a_t = \beta a_{t-1} + (1 - \beta)\,\mathrm{measure}(u_t), \qquad
    \text{output } a_t / (1 - \beta^t) \text{ (with debias)}

  Its output "updates" are the averaged measurement, not the updates: use it
  inside :func:`monitor`, not directly in an optimizer chain.

  Args:
    measure: ``updates -> pytree``.
    decay: ``beta``, as in :func:`ema`.
    debias: divide by ``1 - beta^t``.
    accumulator_dtype: dtype of the average; ``None`` keeps the measurement's.

  References:
    Optax authors, Optax: composable gradient transformation and optimisation
    in JAX, 2020 (``optax.measure_with_ema``).
  """
  average = transform.ema(decay, debias, accumulator_dtype)
  # The average has the measurement's structure, not the params'.
  init_average = average.init
  average = average._replace(init=lambda params: init_average(measure(params)))
  return base.chain(base.stateless(lambda updates, _: measure(updates)), average)
