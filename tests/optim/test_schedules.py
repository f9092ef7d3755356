"""Schedules: Optax's against Optax at every count; the source notes' ones
against their closed forms at points computed by hand; bad input.
"""

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim import schedules as S

# (id, builder, N): builder(module) makes the schedule from `optim` or `optax`;
# N lies past every phase, boundary and end of the schedule.
OPTAX_ROWS = [
    ('constant', lambda m: m.constant_schedule(0.3), 5),
    ('polynomial', lambda m: m.polynomial_schedule(1.0, 0.01, 2, 20, 5), 30),
    ('polynomial_sqrt', lambda m: m.polynomial_schedule(0.5, 1.5, 0.5, 7), 10),
    ('linear', lambda m: m.linear_schedule(1.0, 0.1, 15, 3), 25),
    ('piecewise_constant', lambda m: m.piecewise_constant_schedule(
        1.0, {10: 0.1, 5: 0.5, 20: 2.0}), 25),
    ('piecewise_constant_none', lambda m: m.piecewise_constant_schedule(0.1), 3),
    ('piecewise_linear', lambda m: m.piecewise_interpolate_schedule(
        'linear', 1.0, {4: 0.1, 8: 0.01, 15: 3.0}), 20),
    ('piecewise_cosine', lambda m: m.piecewise_interpolate_schedule(
        'cosine', 2.0, {5: 0.5, 12: 0.1}), 16),
    ('piecewise_linear_none', lambda m: m.piecewise_interpolate_schedule(
        'linear', 0.7), 3),
    ('exponential', lambda m: m.exponential_decay(1.0, 5, 0.5), 30),
    ('exponential_staircase', lambda m: m.exponential_decay(
        1.0, 4, 0.5, transition_begin=3, staircase=True), 20),
    ('exponential_floor', lambda m: m.exponential_decay(
        1.0, 5, 0.5, end_value=0.2), 20),
    ('exponential_growth_cap', lambda m: m.exponential_decay(
        0.1, 5, 2.0, end_value=0.5), 20),
    ('cosine', lambda m: m.cosine_decay_schedule(1.0, 20), 25),
    ('cosine_alpha_exponent', lambda m: m.cosine_decay_schedule(
        2.0, 17, alpha=0.1, exponent=2.0), 20),
    ('warmup_constant', lambda m: m.warmup_constant_schedule(0.0, 1.0, 10), 15),
    ('warmup_cosine', lambda m: m.warmup_cosine_decay_schedule(
        0.0, 1.0, 5, 25, end_value=0.1), 30),
    ('warmup_cosine_no_warmup', lambda m: m.warmup_cosine_decay_schedule(
        0.2, 1.0, 0, 12, exponent=2.0), 15),
    ('warmup_cosine_zero_peak', lambda m: m.warmup_cosine_decay_schedule(
        0.1, 0.0, 3, 9), 12),
    ('warmup_exponential', lambda m: m.warmup_exponential_decay_schedule(
        0.0, 1.0, 5, 4, 0.5, transition_begin=2, staircase=True,
        end_value=0.05), 40),
    ('linear_onecycle', lambda m: m.linear_onecycle_schedule(20, 1.0), 25),
    ('linear_onecycle_args', lambda m: m.linear_onecycle_schedule(
        24, 2.0, pct_start=0.25, pct_final=0.75, div_factor=10.0,
        final_div_factor=100.0), 30),
    ('cosine_onecycle', lambda m: m.cosine_onecycle_schedule(30, 2.0), 35),
    ('sgdr', lambda m: m.sgdr_schedule([
        dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10),
        dict(init_value=0.5, peak_value=0.8, warmup_steps=0, decay_steps=7,
             end_value=0.1),
        dict(init_value=0.1, peak_value=0.4, warmup_steps=3, decay_steps=6,
             exponent=2.0),
    ]), 30),
    ('join', lambda m: m.join_schedules([
        m.constant_schedule(1.0),
        m.linear_schedule(1.0, 0.0, 10),
        m.cosine_decay_schedule(0.5, 5),
    ], [5, 15]), 25),
    # Degenerate input that Optax accepts (it logs and works around it).
    ('polynomial_no_steps', lambda m: m.polynomial_schedule(1.0, 0.0, 2, 0), 5),
    ('linear_negative_begin', lambda m: m.linear_schedule(1.0, 0.0, 5, -1), 8),
    ('exponential_no_steps', lambda m: m.exponential_decay(1.0, 0, 0.5), 5),
    ('exponential_zero_rate', lambda m: m.exponential_decay(1.0, 5, 0.0), 5),
    ('exponential_negative_begin', lambda m: m.exponential_decay(
        1.0, 5, 0.5, -2), 10),
    ('warmup_constant_no_warmup', lambda m: m.warmup_constant_schedule(
        0.0, 0.3, 0), 5),
    ('warmup_cosine_negative_warmup', lambda m: m.warmup_cosine_decay_schedule(
        0.0, 1.0, -1, 10), 12),
    ('warmup_exponential_no_steps', lambda m: m.warmup_exponential_decay_schedule(
        0.0, 1.0, 5, 0, 0.5), 8),
    ('piecewise_negative_boundary', lambda m: m.piecewise_constant_schedule(
        1.0, {-5: 0.1, 3: 0.5}), 5),
    ('onecycle_pct_final_below_start', lambda m: m.linear_onecycle_schedule(
        10, 1.0, pct_start=0.9, pct_final=0.5), 12),
    ('join_unsorted_boundaries', lambda m: m.join_schedules(
        [m.constant_schedule(1.0), m.constant_schedule(2.0),
         m.constant_schedule(3.0)], [10, 5]), 12),
]
IDS = [r[0] for r in OPTAX_ROWS]


def _on_counts(schedule, counts):
  # One compilation for all counts; each count is still a scalar inside.
  return np.asarray(jax.jit(jax.vmap(schedule))(counts))


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.float32], ids=['int32', 'f32'])
@pytest.mark.parametrize('name,build,n', OPTAX_ROWS, ids=IDS)
def test_equals_optax_at_every_count_under_jit(name, build, n, dtype):
  counts = jnp.arange(n + 1, dtype=dtype)
  ours = _on_counts(build(optim), counts)
  ref = _on_counts(build(optax), counts)
  assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
  # Same operations in the same order: equal to the last bit.
  np.testing.assert_array_equal(ours, ref, err_msg=name)


@pytest.mark.parametrize('name,build,n', OPTAX_ROWS, ids=IDS)
def test_equals_optax_on_python_and_scalar_counts(name, build, n):
  ours, ref = build(optim), build(optax)
  for count in (0, n // 2, n):
    np.testing.assert_array_equal(np.asarray(ours(count)), np.asarray(ref(count)))
    c = jnp.asarray(count, jnp.int32)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(ours)(c)), np.asarray(jax.jit(ref)(c)))


def test_schedules_accept_traced_values():
  # Under inject_hyperparams or jit a peak value is a tracer: no Python
  # branch on it may break, and the value must follow it.
  @jax.jit
  def at(peak, count):
    return S.warmup_cosine_decay_schedule(0.0, peak, 5, 25, end_value=0.1)(count)

  ref = optax.warmup_cosine_decay_schedule(0.0, 2.0, 5, 25, end_value=0.1)
  for count in (0, 3, 5, 14, 30):
    np.testing.assert_allclose(at(2.0, count), ref(count), rtol=1e-6)

  @jax.jit
  def decayed(rate, count):  # The side of end_value follows a traced rate.
    return S.exponential_decay(1.0, 5, rate, end_value=0.5)(count)

  for rate in (0.5, 1.5):
    ref = optax.exponential_decay(1.0, 5, rate, end_value=0.5)
    for count in (0, 3, 20):
      np.testing.assert_allclose(decayed(rate, count), ref(count), rtol=1e-6)


def test_warmup_constant_without_warmup_is_the_peak_when_strict():
  # Opt-in: Optax's (our default) gives init_value forever for 0 steps.
  sched = S.warmup_constant_schedule(0.0, 0.3, 0, strict=True)
  assert [float(sched(c)) for c in (0, 1, 100)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize('make,message', [
    (lambda m: m.polynomial_schedule(1.0, 0.0, 2, 0), 'non-positive'),
    (lambda m: m.linear_schedule(1.0, 0.0, 5, -1), 'negative `transition_begin`'),
    (lambda m: m.exponential_decay(1.0, 0, 0.5), 'non-positive'),
    (lambda m: m.exponential_decay(1.0, 5, 0.0), 'zero `decay_rate`'),
    (lambda m: m.exponential_decay(1.0, 5, 0.5, -2), 'negative `transition_begin`'),
], ids=['poly_T0', 'linear_B-1', 'exp_T0', 'exp_rate0', 'exp_B-2'])
def test_degenerate_input_is_logged_as_optax_logs_it(make, message, caplog):
  caplog.set_level(logging.INFO)
  make(optax)
  expected = [r.getMessage() for r in caplog.records if message in r.getMessage()]
  caplog.clear()
  make(optim)
  ours = [r.getMessage() for r in caplog.records if message in r.getMessage()]
  assert expected and ours == expected


# ---------------------------------------------------------------------------
# The source notes' schedules at points computed by hand (values rounded to
# 7 significant digits in the comments; compared at rtol 1e-6, float32).
# ---------------------------------------------------------------------------

def _check_points(schedule, points):
  for count, expected in points:
    for c in (count, jnp.int32(count), jnp.float32(count)):
      np.testing.assert_allclose(
          float(jax.jit(schedule)(c)), expected, rtol=1e-6, atol=1e-9,
          err_msg=f'count={c!r}')


def test_power_decay_schedule():
  # eta0 / (1 + t/k)^c with eta0 = 0.1, k = 10, c = 1:
  # t=0: 0.1; t=10: 0.1/2 = 0.05; t=20: 0.1/3 = 0.03333333; t=30: 0.025.
  _check_points(S.power_decay_schedule(0.1, 10), [
      (0, 0.1), (10, 0.05), (20, 0.03333333), (30, 0.025)])
  # c = 2: t=5: 0.1/1.5^2 = 0.1/2.25 = 0.04444444; t=10: 0.1/4 = 0.025.
  _check_points(S.power_decay_schedule(0.1, 10, 2.0), [
      (5, 0.04444444), (10, 0.025)])
  # Keras SGD(lr=0.01, decay=1e-4) is k = 1/decay = 10000, c = 1:
  # lr after 10000 iterations = 0.01 / (1 + 1e-4 * 10000) = 0.005;
  # after 2500: 0.01 / 1.25 = 0.008.
  _check_points(S.power_decay_schedule(0.01, 1 / 1e-4), [
      (2500, 0.008), (10000, 0.005)])


def test_exponential_scheduling_of_the_notes():
  # eta(t) = eta0 * 0.1^(t/s), eta0 = 0.01, s = 20:
  # t=10: 0.01 * 0.1^0.5 = 0.01 * 0.3162278 = 0.003162278;
  # t=20: 0.001; t=40: 0.0001; t=30: 0.01 * 0.1^1.5 = 0.0003162278.
  _check_points(S.exponential_decay(0.01, 20, 0.1), [
      (0, 0.01), (10, 0.003162278), (20, 0.001), (30, 0.0003162278),
      (40, 0.0001)])


def test_piecewise_constant_by_epoch():
  # The notes: 0.01 before epoch 5, 0.005 before epoch 15, then 0.001;
  # 100 steps per epoch: epoch 5 starts at count 500, epoch 15 at 1500.
  assert S.epoch_boundaries_to_steps([5, 15], 100) == [500, 1500]
  sched = S.piecewise_constant_by_epoch([0.01, 0.005, 0.001], [5, 15], 100)
  _check_points(sched, [
      (0, 0.01), (499, 0.01), (500, 0.005), (1499, 0.005), (1500, 0.001),
      (100000, 0.001)])


def test_cyclic_cosine_schedule_and_snapshots():
  # alpha0 = 0.1, T = 10, M = 2: P = ceil(10/2) = 5; count = t - 1.
  # count 0: 0.1; count 1: 0.05 (cos(pi/5) + 1) = 0.05 * 1.809017 = 0.09045085;
  # count 4: 0.05 (cos(4 pi/5) + 1) = 0.05 * 0.1909830 = 0.009549150;
  # count 5 (t = 6, a new cycle): 0.1.
  _check_points(S.cyclic_cosine_schedule(0.1, 10, 2), [
      (0, 0.1), (1, 0.09045085), (4, 0.009549150), (5, 0.1), (9, 0.009549150)])
  assert S.snapshot_steps(10, 2) == [5, 10]
  # T = 10, M = 3: P = ceil(10/3) = 4; count 2: 0.05 (cos(pi/2) + 1) = 0.05;
  # count 9: mod(9, 4) = 1: 0.05 (cos(pi/4) + 1) = 0.05 * 1.707107 = 0.08535534.
  _check_points(S.cyclic_cosine_schedule(0.1, 10, 3), [
      (2, 0.05), (4, 0.1), (9, 0.08535534)])
  # The last cycle is cut short: cycles end after updates 4, 8 and 10.
  assert S.snapshot_steps(10, 3) == [4, 8, 10]


def test_cyclic_cosine_is_the_papers_equation_with_t_equal_count_plus_one():
  # Eq. 2 of Huang et al. written with the paper's 1-based t.
  a0, big_t, m = 0.2, 23, 4
  period = math.ceil(big_t / m)
  sched = jax.jit(jax.vmap(S.cyclic_cosine_schedule(a0, big_t, m)))
  counts = np.arange(big_t)
  t = counts + 1
  paper = a0 / 2 * (np.cos(np.pi * np.mod(t - 1, period) / period) + 1)
  np.testing.assert_allclose(sched(jnp.asarray(counts)), paper, rtol=1e-6)
  # A snapshot ends each cycle: the value rises right after each one.
  values = np.asarray(sched(jnp.arange(big_t + 1)))
  for end in S.snapshot_steps(big_t, m)[:-1]:
    assert values[end] > values[end - 1]


def test_sgdr_cosine_schedule_with_period_multiplier():
  # eta_max = 1, eta_min = 0, T_0 = 10, T_mult = 2: cycles [0,10), [10,30),
  # [30,70). t=5: 0.5 (1 + cos(pi/2)) = 0.5; t=10: restart, 1;
  # t=20: T_cur = 10 of 20: 0.5; t=25: 0.5 (1 + cos(3 pi/4)) = 0.5 *
  # 0.2928932 = 0.1464466; t=30: 1; t=50: T_cur = 20 of 40: 0.5.
  _check_points(S.sgdr_cosine_schedule(1.0, 10, 2.0), [
      (0, 1.0), (5, 0.5), (10, 1.0), (20, 0.5), (25, 0.1464466), (30, 1.0),
      (50, 0.5)])
  # Between eta_min = 0.1 and eta_max = 0.5: t=5 of 10: 0.1 + 0.2 = 0.3;
  # t=18: T_cur = 8 of 20: 0.1 + 0.2 (1 + cos(0.4 pi)) = 0.1 + 0.2 *
  # 1.309017 = 0.3618034.
  _check_points(S.sgdr_cosine_schedule(0.5, 10, 2.0, eta_min=0.1), [
      (5, 0.3), (18, 0.3618034)])
  assert S.sgdr_restart_steps(100, 10, 2.0) == [10, 30, 70]
  assert S.sgdr_restart_steps(35, 10) == [10, 20, 30]


def test_sgdr_cosine_schedule_horizon_holds_eta_min():
  # total_steps = 30 with T_0 = 10, T_mult = 2: cycles [0,10) and [10,30);
  # from 30 on the value stays at eta_min = 0.1 instead of restarting.
  sched = S.sgdr_cosine_schedule(1.0, 10, 2.0, eta_min=0.1, total_steps=30)
  _check_points(sched, [(10, 1.0), (20, 0.55), (30, 0.1), (1000, 0.1)])
  sched = S.sgdr_cosine_schedule(1.0, 10, eta_min=0.1, total_steps=25)
  # Equal periods: the cycle [20, 30) started before 25 and runs to its end.
  _check_points(sched, [(20, 1.0), (25, 0.55), (30, 0.1), (99, 0.1)])


def test_sgdr_cosine_with_equal_periods_equals_optax_sgdr():
  # T_mult = 1: Optax's sgdr_schedule with identical cycles, no warmup. The
  # formulas differ in rounding (E + (P-E)c vs P((1-E/P)c + E/P)): rtol 1e-6.
  ours = S.sgdr_cosine_schedule(0.8, 12, eta_min=0.05)
  ref = optax.sgdr_schedule([dict(init_value=0.8, peak_value=0.8, warmup_steps=0,
                                  decay_steps=12, end_value=0.05)] * 4)
  counts = jnp.arange(48)
  np.testing.assert_allclose(_on_counts(ours, counts), _on_counts(ref, counts),
                             rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# Bad input: ValueError naming the argument and what is allowed.
# ---------------------------------------------------------------------------

# Rejected by default: Optax rejects them too, or the schedule is ours.
BAD = [
    (lambda: S.cosine_decay_schedule(1.0, 0), r'decay_steps=0 .*allowed'),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
     r'decay_steps=10 .*allowed: decay_steps > warmup_steps=10'),
    (lambda: S.piecewise_constant_schedule(1.0, {5: -0.1}),
     r'boundaries_and_scales\[5\]=-0.1 .*allowed'),
    (lambda: S.piecewise_interpolate_schedule('quadratic', 1.0),
     r"interpolate_type='quadratic' .*allowed: 'linear', 'cosine'"),
    (lambda: S.linear_onecycle_schedule(0, 1.0), r'transition_steps=0 .*allowed'),
    (lambda: S.power_decay_schedule(0.1, 0), r'k=0 .*allowed'),
    (lambda: S.power_decay_schedule(0.1, 10, -1.0), r'c=-1.0 .*allowed'),
    (lambda: S.epoch_boundaries_to_steps([5, 5], 100),
     r'epoch_boundaries=\[5, 5\] .*allowed: strictly increasing'),
    (lambda: S.epoch_boundaries_to_steps([5], 0), r'steps_per_epoch=0 .*allowed'),
    (lambda: S.piecewise_constant_by_epoch([0.1, 0.01], [2, 4], 10),
     r'allowed: exactly one value more'),
    (lambda: S.cyclic_cosine_schedule(0.1, 3, 5),
     r'total_steps=3 .*num_cycles=5; allowed: total_steps >= num_cycles'),
    (lambda: S.snapshot_steps(3, 5), r'total_steps=3 .*allowed'),
    (lambda: S.cyclic_cosine_schedule(0.1, 5, 4),
     r'total_steps=5 with num_cycles=4 .*allowed'),
    (lambda: S.cyclic_cosine_schedule(0.1, 10, 0), r'num_cycles=0 .*allowed'),
    (lambda: S.sgdr_cosine_schedule(1.0, 0), r'first_period=0 .*allowed'),
    (lambda: S.sgdr_cosine_schedule(1.0, 10, 0.5), r't_mult=0.5 .*allowed'),
]


@pytest.mark.parametrize('make,match', BAD, ids=[m for _, m in BAD])
def test_bad_input_raises(make, match):
  with pytest.raises(ValueError, match=match):
    make()


# Accepted by Optax (and by default by us; see OPTAX_ROWS), rejected with
# strict=True.
STRICT = [
    (lambda: S.polynomial_schedule(1.0, 0.0, 2, 0, strict=True),
     r'transition_steps=0 .*allowed'),
    (lambda: S.linear_schedule(1.0, 0.0, -3, strict=True),
     r'transition_steps=-3 .*allowed'),
    (lambda: S.linear_schedule(1.0, 0.0, 5, -1, strict=True),
     r'transition_begin=-1 .*allowed'),
    (lambda: S.exponential_decay(1.0, 0, 0.5, strict=True),
     r'transition_steps=0 .*allowed'),
    (lambda: S.exponential_decay(1.0, 5, 0.0, strict=True),
     r'decay_rate=0.0 .*allowed'),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5, strict=True),
     r'transition_steps=0 .*allowed'),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10, strict=True),
     r'warmup_steps=-1 .*allowed'),
    (lambda: S.piecewise_constant_schedule(1.0, {-5: 0.1}, strict=True),
     r'boundary=-5 .*allowed'),
    (lambda: S.linear_onecycle_schedule(
        10, 1.0, pct_start=0.9, pct_final=0.5, strict=True),
     r'pct_final=0.5 .*allowed: \[0.9, 1.0\]'),
    (lambda: S.cosine_onecycle_schedule(10, 1.0, div_factor=0.0, strict=True),
     r'div_factor=0.0 .*allowed'),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [10, 5], strict=True),
     r'boundaries=\[10, 5\] .*allowed: strictly increasing'),
    (lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [5], strict=True),
     r'allowed: exactly one boundary fewer'),
]


@pytest.mark.parametrize('make,match', STRICT, ids=[m for _, m in STRICT])
def test_strict_rejects_what_optax_accepts(make, match):
  with pytest.raises(ValueError, match=match):
    make()


@pytest.mark.parametrize('make', [
    lambda: S.linear_schedule('1.0', 0.0, 5),
    lambda: S.exponential_decay(1.0, '5', 0.5),
    lambda: S.linear_onecycle_schedule(10, 1.0, pct_start='0.3'),
], ids=['init_value', 'transition_steps', 'pct_start'])
def test_a_string_for_a_number_is_a_type_error(make):
  with pytest.raises(TypeError):
    make()
