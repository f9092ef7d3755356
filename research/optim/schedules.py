"""Schedules: functions ``count -> value`` of the number of updates so far.

``count`` starts at 0 on the first update; every schedule accepts Python
numbers and int or float arrays, and works under ``jit``, ``vmap`` and
``inject_hyperparams``. The first part follows Optax 0.2.8 name for name; the
second adds the schedules of the source notes that Optax lacks: power
scheduling, piecewise constant by epoch, cyclic cosine annealing for snapshot
ensembles and SGDR with a period multiplier.

Every input Optax accepts behaves as in Optax, including the degenerate ones
it logs (with ``absl.logging.info``, as Optax does) and works around: a
non-positive ``transition_steps`` gives the constant ``init_value``, a
negative ``transition_begin`` counts as 0, ``decay_rate=0`` gives a constant.
Inputs Optax rejects raise ``ValueError`` naming the argument. Stricter checks
are opt-in with ``strict=True`` on the schedules that have them (arguments
given as Python numbers only; traced values are never checked):

- a non-positive ``transition_steps`` or a negative ``transition_begin``
  (polynomial, linear, exponential) raises, and so does ``decay_rate <= 0``;
- boundary keys below 0 raise in the piecewise schedules, and the boundaries
  of ``join_schedules`` must increase strictly and number one less than the
  schedules;
- ``warmup_steps < 0`` raises, and ``warmup_constant_schedule`` with
  ``warmup_steps=0`` is ``peak_value`` from the start (Optax's is
  ``init_value`` forever);
- the one-cycle schedules check ``0 <= pct_start <= pct_final <= 1`` and
  positive division factors.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from research.optim import base
from research.optim import checks

__all__ = [
    'constant_schedule',
    'cosine_decay_schedule',
    'cosine_onecycle_schedule',
    'cyclic_cosine_schedule',
    'epoch_boundaries_to_steps',
    'exponential_decay',
    'join_schedules',
    'linear_onecycle_schedule',
    'linear_schedule',
    'piecewise_constant_by_epoch',
    'piecewise_constant_schedule',
    'piecewise_interpolate_schedule',
    'polynomial_schedule',
    'power_decay_schedule',
    'sgdr_cosine_schedule',
    'sgdr_restart_steps',
    'sgdr_schedule',
    'snapshot_steps',
    'warmup_constant_schedule',
    'warmup_cosine_decay_schedule',
    'warmup_exponential_decay_schedule',
]


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_boundary_keys(boundaries_and_scales, fn, strict):
  """Negative scales are rejected (as Optax does); negative boundaries only
  with ``strict``."""
  if not boundaries_and_scales:
    return
  for boundary, scale_ in boundaries_and_scales.items():
    if strict:
      checks.check_non_negative('boundaries_and_scales boundary', boundary, fn)
    checks.check_non_negative(f'boundaries_and_scales[{boundary!r}]', scale_, fn)


def _is_below(value, bound) -> bool:
  return checks.is_concrete_number(value) and value < bound


def _is_non_positive(value) -> bool:
  return checks.is_concrete_number(value) and value <= 0


def _begin_or_zero(transition_begin, kind):
  """Optax's handling of a negative ``transition_begin``: log, use 0."""
  if _is_below(transition_begin, 0):
    logging.info(
        f'{kind} schedule was set with a negative `transition_begin` value; '
        'this will result in `transition_begin` falling back to `0`.'
    )
    return 0
  return transition_begin


def _check_increasing(name, values, fn):
  values = list(values)
  if not all(checks.is_concrete_number(v) for v in values):
    return  # Traced boundaries cannot be checked.
  for a, b in zip(values, values[1:]):
    if b <= a:
      raise ValueError(
          f'{fn}: {name}={values!r} is not allowed; allowed: strictly '
          f'increasing values (got {a!r} then {b!r}).'
      )


# ---------------------------------------------------------------------------
# The schedules of Optax 0.2.8.
# ---------------------------------------------------------------------------


def constant_schedule(value: jax.typing.ArrayLike) -> base.Schedule:
  """``eta(t) = value`` for every count ``t``."""
  return lambda count: value


def _polynomial(init_value, end_value, power, transition_steps, transition_begin):
  def schedule(count):
    t = jnp.clip(count - transition_begin, 0, transition_steps)
    remaining = 1 - t / transition_steps
    return (init_value - end_value) * (remaining**power) + end_value

  return schedule


def polynomial_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    power: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Polynomial annealing from ``init_value`` to ``end_value``.

  .. math::
    \eta(t) = (I - E)\,\Big(1 - \frac{\min(\max(t - B, 0), T)}{T}\Big)^{P} + E

  so ``I`` until ``t = B``, ``E`` from ``t = B + T`` on.

  Args:
    init_value: ``I``.
    end_value: ``E``.
    power: ``P``.
    transition_steps: ``T``, the length of the transition; ``T <= 0`` gives
      the constant ``I`` (logged).
    transition_begin: ``B``, the count at which the transition starts; a
      negative value counts as 0 (logged).
    strict: raise ``ValueError`` for ``T <= 0`` or ``B < 0`` instead.
  """
  return _polynomial_or_constant(
      'polynomial_schedule', init_value, end_value, power, transition_steps,
      transition_begin, strict,
  )


def _polynomial_or_constant(fn, init_value, end_value, power, transition_steps,
                            transition_begin, strict):
  if strict:
    checks.check_positive('transition_steps', transition_steps, fn)
    checks.check_non_negative('transition_begin', transition_begin, fn)
  checks.check_numbers(fn, init_value=init_value, end_value=end_value,
                       power=power, transition_steps=transition_steps,
                       transition_begin=transition_begin)
  if _is_non_positive(transition_steps):
    logging.info(
        'A polynomial schedule was set with a non-positive `transition_steps` '
        'value; this results in a constant schedule with value `init_value`.'
    )
    return constant_schedule(init_value)
  transition_begin = _begin_or_zero(transition_begin, 'A polynomial')
  return _polynomial(init_value, end_value, power, transition_steps, transition_begin)


def linear_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Linear annealing: :func:`polynomial_schedule` with ``power=1``.

  .. math::
    \eta(t) = I + \frac{\min(\max(t - B, 0), T)}{T}\,(E - I)

  Args: as :func:`polynomial_schedule`.
  """
  return _polynomial_or_constant(
      'linear_schedule', init_value, end_value, 1, transition_steps,
      transition_begin, strict,
  )


def piecewise_constant_schedule(
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Optional[dict[int, float]] = None,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Multiplies the value by ``s_i`` once the count reaches boundary ``b_i``.

  .. math::
    \eta(t) = \eta_0 \prod_{i:\, t \ge b_i} s_i

  Args:
    init_value: ``eta_0``.
    boundaries_and_scales: ``{b_i: s_i}`` with ``s_i >= 0``.
      For absolute values per epoch see :func:`piecewise_constant_by_epoch`.
    strict: also require ``b_i >= 0``.
  """
  _check_boundary_keys(boundaries_and_scales, 'piecewise_constant_schedule',
                       strict)
  pieces = sorted((boundaries_and_scales or {}).items())

  def schedule(count):
    value = init_value
    for boundary, factor in pieces:
      value = jnp.where(count < boundary, value, factor * value)
    return value

  return schedule


def exponential_decay(
    init_value: jax.typing.ArrayLike,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[jax.typing.ArrayLike] = None,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Exponential decay by ``decay_rate`` every ``transition_steps`` counts.

  .. math::
    \eta(t) = \eta_0\, r^{p}, \qquad p = \frac{t - B}{T}
    \;(\lfloor\cdot\rfloor \text{ with staircase}), \qquad
    \eta(t) = \eta_0 \text{ for } t \le B,

  clipped below at ``end_value`` when ``r < 1`` (above when ``r > 1``).

  The source notes' *exponential scheduling*, a tenfold drop every ``s``
  steps, :math:`\eta(t) = \eta_0\, 0.1^{t/s}`, is
  ``exponential_decay(init_value=eta0, transition_steps=s, decay_rate=0.1)``;
  TensorFlow's ``tf.train.exponential_decay(0.1, step, 10000, 1/10)`` is
  ``exponential_decay(0.1, 10000, 0.1)``. The Keras example
  ``0.01 * 0.1**(epoch / 20)`` evaluated per step is
  ``exponential_decay(0.01, 20 * steps_per_epoch, 0.1)``.

  Args:
    init_value: ``eta_0``.
    transition_steps: ``T``; ``T <= 0`` gives the constant ``eta_0`` (logged).
    decay_rate: ``r``; ``r = 0`` gives the constant ``eta_0`` (logged).
    transition_begin: ``B``; a negative value counts as 0 (logged).
    staircase: decay in whole steps of ``T`` counts.
    end_value: optional bound at which the decay stops.
    strict: raise ``ValueError`` for ``T <= 0``, ``r <= 0`` or ``B < 0``.

  References:
    Géron, Hands-On Machine Learning with Scikit-Learn, Keras and TensorFlow,
    ch. 11, 2019.
  """
  fn = 'exponential_decay'
  if strict:
    checks.check_positive('transition_steps', transition_steps, fn)
    checks.check_positive('decay_rate', decay_rate, fn)
    checks.check_non_negative('transition_begin', transition_begin, fn)
  checks.check_numbers(fn, transition_steps=transition_steps,
                       decay_rate=decay_rate, transition_begin=transition_begin,
                       end_value=end_value)
  if _is_non_positive(transition_steps):
    logging.info(
        'An exponential schedule was set with a non-positive `transition_steps`'
        ' value; this will result in a constant schedule with value '
        '`init_value`.'
    )
    return constant_schedule(init_value)
  if checks.is_concrete_number(decay_rate) and decay_rate == 0:
    logging.info(
        'An exponential schedule was set with a zero `decay_rate` value; '
        'this will result in a constant schedule with value `init_value`.'
    )
    return constant_schedule(init_value)
  transition_begin = _begin_or_zero(transition_begin, 'An exponential')
  clip = None
  if end_value is not None:
    if checks.is_concrete_number(decay_rate):
      clip = jnp.maximum if decay_rate < 1.0 else jnp.minimum
    else:  # A traced rate: choose the bound's side without a Python branch.
      clip = lambda v, e: jnp.where(  # noqa: E731
          decay_rate < 1.0, jnp.maximum(v, e), jnp.minimum(v, e))

  def schedule(count):
    since = count - transition_begin
    p = since / transition_steps
    if staircase:
      p = jnp.floor(p)
    value = jnp.where(
        since <= 0, init_value, init_value * jnp.power(decay_rate, p)
    )
    return value if clip is None else clip(value, end_value)

  return schedule


def _as_float_if_int(x):
  return float(x) if isinstance(x, int) else x


def _cosine(init_value, decay_steps, alpha, exponent):
  decay_steps = _as_float_if_int(decay_steps)

  def schedule(count):
    count = jnp.minimum(_as_float_if_int(count), decay_steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps))
    return init_value * ((1 - alpha) * cosine**exponent + alpha)

  return schedule


def cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    decay_steps: int,
    alpha: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> base.Schedule:
  r"""Cosine annealing from ``init_value`` to ``alpha * init_value``.

  .. math::
    \eta(t) = \eta_0 \Big[(1 - \alpha)\Big(\tfrac12\big(1 + \cos\tfrac{\pi
    \min(t, T)}{T}\big)\Big)^{p} + \alpha\Big]

  Args:
    init_value: ``eta_0``.
    decay_steps: ``T > 0``.
    alpha: the final value as a fraction of ``init_value``.
    exponent: ``p``.

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts,
    2017.
  """
  checks.check_positive('decay_steps', decay_steps, 'cosine_decay_schedule')
  return _cosine(init_value, decay_steps, alpha, exponent)


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Optional[dict[int, float]] = None,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Interpolates between the cumulative values ``v_i = eta_0 prod_{j<=i} s_j``.

  With boundaries ``0 = b_0 < b_1 < ... < b_n`` (``b_0`` added), on
  ``[b_{i-1}, b_i)`` the value goes from ``v_{i-1}`` to ``v_i``, linearly or
  along a half cosine,

  .. math::
    \text{linear: } v_{i-1} + (v_i - v_{i-1})\,\rho, \qquad
    \text{cosine: } v_i + \tfrac{v_{i-1} - v_i}{2}(1 + \cos \pi\rho),
    \qquad \rho = \frac{t - b_{i-1}}{b_i - b_{i-1}},

  and stays at ``v_n`` from ``b_n`` on.

  Args:
    interpolate_type: ``'linear'`` or ``'cosine'``.
    init_value: ``eta_0``.
    boundaries_and_scales: ``{b_i: s_i}``, ``s_i >= 0``.
    strict: also require ``b_i >= 0``.
  """
  fn = 'piecewise_interpolate_schedule'
  checks.check_choice('interpolate_type', interpolate_type, _INTERPOLATORS, fn)
  _check_boundary_keys(boundaries_and_scales, fn, strict)
  interpolate = _INTERPOLATORS[interpolate_type]
  pieces = sorted((boundaries_and_scales or {}).items())
  boundaries = tuple(b for b, _ in pieces)
  scales = tuple(s for _, s in pieces)

  def schedule(count):
    edges = jnp.stack((0,) + boundaries)
    values = jnp.cumprod(jnp.stack((init_value,) + scales))
    start, stop = edges[:-1], edges[1:]
    inside = jnp.logical_and(start <= count, count < stop)
    frac = (count - start) / jnp.maximum(stop - start, 1)
    ramps = interpolate(values[:-1], values[1:], frac)
    return inside.dot(ramps) + (edges[-1] <= count) * values[-1]

  return schedule


def _linear_ramp(start, end, frac):
  return (end - start) * frac + start


def _cosine_ramp(start, end, frac):
  return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * frac) + 1)


_INTERPOLATORS = {'linear': _linear_ramp, 'cosine': _cosine_ramp}


def _check_onecycle(fn, transition_steps, pct_start, div_factor, final_div_factor,
                    pct_final=1.0, strict=False):
  checks.check_positive('transition_steps', transition_steps, fn)
  checks.check_numbers(fn, pct_start=pct_start, pct_final=pct_final,
                       div_factor=div_factor, final_div_factor=final_div_factor)
  if not strict:
    return
  checks.check_range('pct_start', pct_start, 0.0, 1.0, fn=fn)
  checks.check_range('pct_final', pct_final, pct_start, 1.0, fn=fn)
  checks.check_positive('div_factor', div_factor, fn)
  checks.check_positive('final_div_factor', final_div_factor, fn)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""The one-cycle policy with linear ramps.

  With ``eta_lo = peak_value / div_factor`` and ``T = transition_steps``:
  linear from ``eta_lo`` to ``peak_value`` on ``[0, pct_start T)``, back to
  ``eta_lo`` on ``[pct_start T, pct_final T)``, then down to
  ``eta_lo / final_div_factor`` at ``T`` (boundaries rounded down to ints).

  Args:
    transition_steps: ``T > 0``.
    peak_value: the largest value.
    pct_start: fraction of ``T`` spent rising, in ``[0, 1]``.
    pct_final: fraction of ``T`` at which the descent ends, in
      ``[pct_start, 1]``.
    div_factor: ``peak_value / eta_lo > 0``.
    final_div_factor: ``eta_lo / eta_end > 0``.
    strict: check the ranges of ``pct_start``, ``pct_final`` and the
      division factors (Optax takes any value).

  References:
    Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates, 2017.
  """
  _check_onecycle('linear_onecycle_schedule', transition_steps, pct_start,
                  div_factor, final_div_factor, pct_final, strict)
  # Built as a dict so that coinciding boundaries resolve as in Optax.
  return piecewise_interpolate_schedule('linear', peak_value / div_factor, {
      int(pct_start * transition_steps): div_factor,
      int(pct_final * transition_steps): 1.0 / div_factor,
      transition_steps: 1.0 / final_div_factor,
  })


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""The one-cycle policy with half-cosine ramps.

  From ``eta_lo = peak_value / div_factor`` up to ``peak_value`` on
  ``[0, pct_start T)``, then down to ``eta_lo / final_div_factor`` at ``T``.

  Args: as :func:`linear_onecycle_schedule` (no ``pct_final``).

  References:
    Smith & Topin, Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates, 2017.
  """
  _check_onecycle('cosine_onecycle_schedule', transition_steps, pct_start,
                  div_factor, final_div_factor, strict=strict)
  return piecewise_interpolate_schedule('cosine', peak_value / div_factor, {
      int(pct_start * transition_steps): div_factor,
      int(transition_steps): 1.0 / (div_factor * final_div_factor),
  })


def join_schedules(
    schedules: Sequence[base.Schedule],
    boundaries: Sequence[int],
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Runs ``schedules[i]`` on ``[b_{i-1}, b_i)``, restarting its count at 0.

  .. math::
    \eta(t) = f_i(t - b_{i-1}) \quad \text{for } b_{i-1} \le t < b_i,
    \qquad b_{-1} = 0.

  Args:
    schedules: ``n`` schedules.
    boundaries: ``n - 1`` increasing counts (extra schedules or boundaries
      are ignored, as in Optax).
    strict: require exactly ``n - 1`` strictly increasing boundaries.
  """
  fn = 'join_schedules'
  schedules, boundaries = list(schedules), list(boundaries)
  if strict:
    if len(boundaries) != len(schedules) - 1:
      raise ValueError(
          f'{fn}: got {len(schedules)} schedules and boundaries={boundaries!r}; '
          'allowed: exactly one boundary fewer than schedules.'
      )
    _check_increasing('boundaries', boundaries, fn)

  def schedule(count):
    value = schedules[0](count)
    for boundary, later in zip(boundaries, schedules[1:]):
      value = jnp.where(count < boundary, value, later(count - boundary))
    return value

  return schedule


def warmup_constant_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Linear warmup from ``init_value`` to ``peak_value``, then constant.

  .. math::
    \eta(t) = I + (P - I) \min(t, W) / W

  Args:
    init_value: ``I``.
    peak_value: ``P``.
    warmup_steps: ``W``; ``W <= 0`` gives ``I`` forever (logged), as in
      Optax.
    strict: reject ``W < 0``, and make ``W = 0`` mean no warmup: ``P`` from
      the start.
  """
  if strict:
    checks.check_non_negative('warmup_steps', warmup_steps,
                              'warmup_constant_schedule')
    if checks.is_concrete_number(warmup_steps) and warmup_steps == 0:
      return constant_schedule(peak_value)
  return linear_schedule(init_value, peak_value, warmup_steps)


def _end_over_peak(end_value, peak_value):
  if checks.is_concrete_number(peak_value):
    return 0.0 if peak_value == 0.0 else end_value / peak_value
  # Traced peak (e.g. under inject_hyperparams): no Python branch on it.
  return jnp.where(peak_value == 0.0, 0.0, end_value / peak_value)


def warmup_cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

  .. math::
    \eta(t) = \begin{cases}
      I + (P - I)\, t / W & t < W \\
      E + (P - E)\big(\tfrac12(1 + \cos\tfrac{\pi \min(t - W, D - W)}{D - W})
      \big)^{p} & t \ge W
    \end{cases}

  Args:
    init_value: ``I``.
    peak_value: ``P``.
    warmup_steps: ``W >= 0``.
    decay_steps: ``D > W``, the total length including the warmup.
    end_value: ``E``.
    exponent: ``p``.
    strict: reject ``W < 0`` (Optax then decays from the start).

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts,
    2017; Goyal et al., Accurate, Large Minibatch SGD, 2017.
  """
  fn = 'warmup_cosine_decay_schedule'
  if strict:
    checks.check_non_negative('warmup_steps', warmup_steps, fn)
  if checks.is_concrete_number(warmup_steps) and checks.is_concrete_number(
      decay_steps) and decay_steps <= warmup_steps:
    raise ValueError(
        f'{fn}: decay_steps={decay_steps!r} is out of range; allowed: '
        f'decay_steps > warmup_steps={warmup_steps!r} (decay_steps includes '
        'the warmup).'
    )
  decay = _cosine(peak_value, decay_steps - warmup_steps,
                  _end_over_peak(end_value, peak_value), exponent)
  return join_schedules(
      [linear_schedule(init_value, peak_value, warmup_steps), decay], [warmup_steps]
  )


def warmup_exponential_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: jax.typing.ArrayLike,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[jax.typing.ArrayLike] = None,
    *,
    strict: bool = False,
) -> base.Schedule:
  r"""Linear warmup to ``peak_value``, then :func:`exponential_decay` from it.

  .. math::
    \eta(t) = I + (P - I)\, t / W \;(t < W), \qquad
    \eta(t) = \text{exponential\_decay}(P, \dots)(t - W) \;(t \ge W)

  Args:
    init_value: ``I``.
    peak_value: ``P``.
    warmup_steps: ``W >= 0``.
    transition_steps, decay_rate, transition_begin, staircase, end_value: as
      :func:`exponential_decay`.
    strict: reject ``W < 0`` and pass ``strict`` on to
      :func:`exponential_decay`.
  """
  if strict:
    checks.check_non_negative(
        'warmup_steps', warmup_steps, 'warmup_exponential_decay_schedule')
  decay = exponential_decay(
      peak_value, transition_steps, decay_rate, transition_begin, staircase,
      end_value, strict=strict,
  )
  return join_schedules(
      [linear_schedule(init_value, peak_value, warmup_steps), decay], [warmup_steps]
  )


def sgdr_schedule(
    cosine_kwargs: Iterable[dict[str, jax.typing.ArrayLike]],
) -> base.Schedule:
  r"""Warm restarts: :func:`warmup_cosine_decay_schedule` cycles, one per dict.

  Cycle ``i`` runs for ``cosine_kwargs[i]['decay_steps']`` counts (its
  warmup included), then the next one starts from count 0. For the paper's
  geometric periods ``T_i = T_0 T_mult^i`` see :func:`sgdr_cosine_schedule`.

  Args:
    cosine_kwargs: the keyword arguments of each cycle's
      :func:`warmup_cosine_decay_schedule`.

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts,
    2017.
  """
  cycles, ends, end = [], [], 0
  for kwargs in cosine_kwargs:
    cycles.append(warmup_cosine_decay_schedule(**kwargs))
    end += kwargs['decay_steps']
    ends.append(end)
  return join_schedules(cycles, ends[:-1])


# ---------------------------------------------------------------------------
# The schedules of the source notes that Optax lacks.
# ---------------------------------------------------------------------------


def power_decay_schedule(
    init_value: jax.typing.ArrayLike,
    k: jax.typing.ArrayLike,
    c: jax.typing.ArrayLike = 1.0,
) -> base.Schedule:
  r"""Power scheduling: the value falls like a power of the count.

  .. math::
    \eta(t) = \frac{\eta_0}{(1 + t / k)^{c}}

  With ``c = 1`` the value halves after ``k`` counts and is a third after
  ``2k``. Keras' old ``SGD(lr=eta0, decay=d)`` is this schedule with
  ``k = 1 / d`` and ``c = 1`` (Keras' ``iterations`` is our ``count``).

  Args:
    init_value: ``eta_0``.
    k: ``k > 0``, the count scale.
    c: ``c >= 0``, the power (usually 1).

  References:
    Géron, Hands-On Machine Learning with Scikit-Learn, Keras and TensorFlow,
    ch. 11, 2019.
  """
  fn = 'power_decay_schedule'
  checks.check_positive('k', k, fn)
  checks.check_non_negative('c', c, fn)

  def schedule(count):
    return init_value / (1 + count / k) ** c

  return schedule


def epoch_boundaries_to_steps(
    epoch_boundaries: Sequence[int], steps_per_epoch: int
) -> list[int]:
  """Step counts at which the given epochs start: ``[e * steps_per_epoch]``.

  Epoch ``e`` (0-based) holds counts ``e * steps_per_epoch`` to
  ``(e + 1) * steps_per_epoch - 1``. The result can key
  :func:`piecewise_constant_schedule` or serve as :func:`join_schedules`'
  boundaries.

  Args:
    epoch_boundaries: strictly increasing, non-negative epoch numbers.
    steps_per_epoch: a positive integer.
  """
  fn = 'epoch_boundaries_to_steps'
  if not _is_int(steps_per_epoch):
    raise ValueError(
        f'{fn}: steps_per_epoch={steps_per_epoch!r} is not allowed; allowed: '
        'a positive int.'
    )
  checks.check_positive('steps_per_epoch', steps_per_epoch, fn)
  epoch_boundaries = list(epoch_boundaries)
  for e in epoch_boundaries:
    checks.check_non_negative('epoch_boundaries entry', e, fn)
  _check_increasing('epoch_boundaries', epoch_boundaries, fn)
  return [int(e * steps_per_epoch) for e in epoch_boundaries]


def piecewise_constant_by_epoch(
    values: Sequence[jax.typing.ArrayLike],
    epoch_boundaries: Sequence[int],
    steps_per_epoch: int,
) -> base.Schedule:
  r"""Piecewise constant scheduling with absolute values, by epoch.

  .. math::
    \eta(t) = v_i \quad \text{for } e_{i-1} \le \lfloor t / S \rfloor < e_i,
    \qquad e_{-1} = 0,\; e_n = \infty

  The source notes' example (0.01 before epoch 5, 0.005 before epoch 15,
  then 0.001) is ``piecewise_constant_by_epoch([0.01, 0.005, 0.001], [5, 15],
  steps_per_epoch)``.

  Args:
    values: ``n + 1`` values ``v_0 .. v_n``.
    epoch_boundaries: ``n`` strictly increasing epochs ``e_i >= 0`` at which
      the next value starts.
    steps_per_epoch: ``S``, updates per epoch.
  """
  values = list(values)
  steps = epoch_boundaries_to_steps(epoch_boundaries, steps_per_epoch)
  if len(values) != len(steps) + 1:
    raise ValueError(
        f'piecewise_constant_by_epoch: got {len(values)} values for '
        f'epoch_boundaries={list(epoch_boundaries)!r}; allowed: exactly one '
        'value more than boundaries.'
    )
  return join_schedules([constant_schedule(v) for v in values], steps)


def _cycle_length(total_steps, num_cycles, fn):
  for name, value in (('total_steps', total_steps), ('num_cycles', num_cycles)):
    if not _is_int(value) or value < 1:
      raise ValueError(
          f'{fn}: {name}={value!r} is out of range; allowed: an int >= 1.'
      )
  if total_steps < num_cycles:
    raise ValueError(
        f'{fn}: total_steps={total_steps} is out of range for '
        f'num_cycles={num_cycles}; allowed: total_steps >= num_cycles.'
    )
  length = -(-total_steps // num_cycles)  # ceil(T / M) in exact integers.
  if (num_cycles - 1) * length >= total_steps:
    # E.g. T = 5, M = 4: ceil(T/M) = 2 and only 3 cycles fit in 5 steps.
    raise ValueError(
        f'{fn}: total_steps={total_steps} with num_cycles={num_cycles} gives '
        f'cycles of ceil(T/M)={length} steps, of which only '
        f'{-(-total_steps // length)} fit; allowed: (num_cycles - 1) * '
        'ceil(total_steps / num_cycles) < total_steps.'
    )
  return length


def cyclic_cosine_schedule(
    init_value: jax.typing.ArrayLike, total_steps: int, num_cycles: int
) -> base.Schedule:
  r"""Cyclic cosine annealing for snapshot ensembles.

  Huang et al. (2017), Eq. 2, for iterations ``t = 1, ..., T`` and ``M``
  cycles:

  .. math::
    \alpha(t) = \frac{\alpha_0}{2}\Big(\cos\Big(\frac{\pi \operatorname{mod}
    (t - 1, \lceil T/M \rceil)}{\lceil T/M \rceil}\Big) + 1\Big)

  The paper's iteration ``t`` is our update number ``count + 1`` (our count
  is 0 on the first update), so ``mod(t - 1, .)`` is ``mod(count, .)``: the
  first update of each cycle gets ``alpha_0`` and the last one
  ``alpha_0 (cos(pi (P - 1)/P) + 1)/2``, close to 0, with
  ``P = ceil(T/M)``. Take the snapshots after the updates listed by
  :func:`snapshot_steps`. Past ``T`` the cycles go on.

  Args:
    init_value: ``alpha_0``.
    total_steps: ``T``, the number of updates of the whole run.
    num_cycles: ``M``, the number of cycles (snapshots); every cycle must be
      non-empty: ``(M - 1) ceil(T/M) < T``, which excludes ``T < M``.

  References:
    Huang et al., Snapshot Ensembles: Train 1, Get M for Free, 2017.
  """
  period = _cycle_length(total_steps, num_cycles, 'cyclic_cosine_schedule')

  def schedule(count):
    phase = jnp.mod(count, period)
    return init_value / 2 * (jnp.cos(jnp.pi * phase / period) + 1)

  return schedule


def snapshot_steps(total_steps: int, num_cycles: int) -> list[int]:
  """The update numbers after which each cycle of a cyclic schedule ends.

  For :func:`cyclic_cosine_schedule` with ``P = ceil(T/M)``: ``[P, 2P, ...,
  T]`` (``min(m P, T)`` for ``m = 1..M``; the last cycle is shorter when
  ``M`` does not divide ``T``). Each entry is the optimizer's count *after*
  the cycle's last update, which is also the paper's 1-based ``t`` of that
  update: save snapshot ``m`` once ``m``-th entry updates have been applied.
  """
  period = _cycle_length(total_steps, num_cycles, 'snapshot_steps')
  return [min(m * period, total_steps) for m in range(1, num_cycles + 1)]


# Cycles beyond this many are not laid out when total_steps is not given.
_MAX_SGDR_CYCLES = 100_000


def _sgdr_starts(first_period, t_mult, horizon, fn):
  """Start counts of the cycles that begin before ``horizon``, and one more."""
  starts, period = [0.0], float(first_period)
  while starts[-1] < horizon:
    starts.append(starts[-1] + period)
    period *= t_mult
    if len(starts) > _MAX_SGDR_CYCLES:
      raise ValueError(
          f'{fn}: first_period={first_period!r} with t_mult={t_mult!r} needs '
          f'over {_MAX_SGDR_CYCLES} cycles to cover {horizon} steps; pass '
          'total_steps (the run length) to lay out only the cycles you use.'
      )
  return starts


def _check_sgdr(first_period, t_mult, total_steps, fn):
  for name, value in (('first_period', first_period), ('t_mult', t_mult)):
    if not checks.is_concrete_number(value):
      raise ValueError(
          f'{fn}: {name}={value!r} is not allowed; allowed: a Python number '
          '(the cycles are laid out when the schedule is built).'
      )
  checks.check_positive('first_period', first_period, fn)
  checks.check_range('t_mult', t_mult, 1.0, None, fn=fn)
  if total_steps is not None:
    checks.check_positive('total_steps', total_steps, fn)


def _sgdr_value(eta_max, eta_min, t_cur, period):
  return eta_min + 0.5 * (eta_max - eta_min) * (1 + jnp.cos(jnp.pi * t_cur / period))


def sgdr_cosine_schedule(
    eta_max: jax.typing.ArrayLike,
    first_period: int,
    t_mult: float = 1.0,
    eta_min: jax.typing.ArrayLike = 0.0,
    total_steps: Optional[int] = None,
) -> base.Schedule:
  r"""SGDR: cosine annealing with warm restarts and growing periods.

  .. math::
    \eta(t) = \eta_{\min} + \tfrac12(\eta_{\max} - \eta_{\min})
    \Big(1 + \cos\frac{\pi T_{cur}}{T_i}\Big), \qquad
    T_i = T_0\, T_{mult}^{\,i},

  where cycle ``i`` starts at count ``s_i = T_0 (1 + T_mult + ... +
  T_mult^{i-1})`` and ``T_cur = t - s_i``. The paper counts ``T_cur`` in
  epochs, possibly fractional; here periods are numbers of updates, and
  ``T_cur`` advances by one per update. Each cycle starts at ``eta_max`` and
  reaches ``eta_min`` only at its restart. The restarts are at the counts of
  :func:`sgdr_restart_steps`.

  Without ``total_steps`` the cycles go on forever. With it, the cycles that
  start before ``total_steps`` run to their end and the value then stays at
  ``eta_min`` (choose ``total_steps`` as a sum of periods for a clean end).

  Args:
    eta_max: the value at every restart.
    first_period: ``T_0 > 0``, in updates (a Python number).
    t_mult: ``T_mult >= 1`` (a Python number), the period's growth factor.
    eta_min: the value each cycle anneals towards.
    total_steps: optional horizon (see above).

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts,
    2017.
  """
  fn = 'sgdr_cosine_schedule'
  _check_sgdr(first_period, t_mult, total_steps, fn)
  if t_mult == 1:
    # Equal periods: a modulo, exact for any count and no layout needed.
    end = None
    if total_steps is not None:
      end = -(-total_steps // first_period) * first_period

    def schedule(count):
      t_cur = jnp.mod(count, first_period)
      if end is not None:
        t_cur = jnp.where(count >= end, first_period, t_cur)
      return _sgdr_value(eta_max, eta_min, t_cur, first_period)

    return schedule

  horizon = 2**31 if total_steps is None else total_steps
  starts = np.asarray(_sgdr_starts(first_period, t_mult, horizon, fn))
  begins, periods = starts[:-1], np.diff(starts)

  def schedule(count):
    i = jnp.searchsorted(begins, count, side='right') - 1
    i = jnp.clip(i, 0, len(periods) - 1)
    period = jnp.asarray(periods)[i]
    t_cur = jnp.minimum(count - jnp.asarray(begins)[i], period)
    return _sgdr_value(eta_max, eta_min, t_cur, period)

  return schedule


def sgdr_restart_steps(
    total_steps: int, first_period: int, t_mult: float = 1.0
) -> list:
  """The counts at which the cycles of :func:`sgdr_cosine_schedule` end.

  ``[T_0, T_0 + T_0 T_mult, ...]``, those not after ``total_steps``. Each is
  the number of updates applied once that cycle's last update is done: the
  moment to take a snapshot. Ints when the periods are whole numbers.
  """
  fn = 'sgdr_restart_steps'
  checks.check_positive('total_steps', total_steps, fn)
  _check_sgdr(first_period, t_mult, total_steps, fn)
  if t_mult == 1:
    ends = [first_period * m for m in range(1, int(total_steps // first_period) + 1)]
  else:
    ends = [e for e in _sgdr_starts(first_period, t_mult, total_steps, fn)[1:]
            if e <= total_steps]
  return [int(e) if float(e).is_integer() else e for e in ends]


# Optax's ``schedules`` namespace also holds the hyperparameter injection
# (``optax.schedules.inject_hyperparams``); the same objects as at the top level.
from research.optim.base import Schedule  # noqa: E402,F401
from research.optim.inject import (  # noqa: E402,F401
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    StatefulSchedule,
    WrappedSchedule,
    inject_hyperparams,
    inject_stateful_hyperparams,
)
