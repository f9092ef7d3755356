"""L-BFGS and the line searches that choose its step size.

``scale_by_lbfgs`` turns the gradient into a quasi-Newton direction; a line
search (backtracking on the Armijo condition, or the zoom search on the strong
Wolfe conditions) then scales that direction. Line searches evaluate the
objective, so their ``update`` needs ``value``, ``grad`` and ``value_fn``:

    updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                value_fn=loss)

Inner products and axpy's are written out here (not taken from ``tree``) to
reproduce Optax's exact order of floating-point operations: a line search
branches on comparisons of values, so a last-bit difference can change the
step it takes.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'BacktrackingLinesearchInfo',
    'ScaleByBacktrackingLinesearchState',
    'ScaleByLBFGSState',
    'ScaleByZoomLinesearchState',
    'ZoomLinesearchInfo',
    'lbfgs',
    'scale_by_backtracking_linesearch',
    'scale_by_lbfgs',
    'scale_by_zoom_linesearch',
    'value_and_grad_from_state',
]


# ---------------------------------------------------------------------------
# Tree arithmetic in Optax's order of operations.


def _leaf_vdot(a, b):
  # ``jnp.vdot`` flattens both leaves and conjugates ``a`` if complex (the
  # same values as a full ``tensordot``, and the same program as Optax's).
  return jnp.vdot(
      jnp.asarray(a), jnp.asarray(b), precision=jax.lax.Precision.HIGHEST
  )


def _real_vdot(x, y):
  """``Re <x, y> = Re sum conj(x) y`` over all leaves, leaf by leaf."""
  total = jax.tree.reduce(
      operator.add, jax.tree.map(_leaf_vdot, x, y), initializer=0
  )
  return jnp.real(total)


def _axpy(x, a, y):
  """``x + a y`` without casting ``a`` first (the dtype promotes as it will)."""
  a = jnp.asarray(a)
  return jax.tree.map(lambda xi, yi: xi + a * yi, x, y)


def _scale(a, x):
  return jax.tree.map(lambda xi: a * xi, x)


def _conj(x):
  return jax.tree.map(jnp.conj, x)


def _where(condition, x, y):
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def _cast_like(tree, like):
  # Leaves of ``like`` without a dtype (Python ints in a loop carry) stay.
  return jax.tree.map(
      lambda t, o: t.astype(o.dtype) if hasattr(o, 'dtype') else t, tree, like
  )


def _real_dtype(params):
  """The dtype of a loss value for these params (real part if complex)."""
  return jnp.real(jnp.empty((), jax.tree.leaves(params)[0].dtype)).dtype


def _split_fn_kwargs(value_fn, extra_args):
  """The extra arguments that ``value_fn`` takes by name.

  Unlike Optax, which raises TypeError on any other keyword, the rest are
  ignored: in a chain every transform sees every extra argument.
  """
  names = inspect.signature(value_fn).parameters
  return {k: v for k, v in extra_args.items() if k in names}


def _log_if(condition, message, **values):
  """Logs ``message`` (formatted with ``values``) when ``condition`` holds."""

  def callback(condition, **values):
    if condition:
      logging.warning(message.format(**values))

  jax.debug.callback(callback, condition, **values)


# ---------------------------------------------------------------------------
# L-BFGS direction.


class ScaleByLBFGSState(NamedTuple):
  count: jax.Array  # int32, number of updates so far
  params: base.Params  # params at the previous update
  updates: base.Updates  # incoming updates (gradients) at the previous update
  diff_params_memory: base.Params  # leaves stacked: (memory_size, *shape)
  diff_updates_memory: base.Updates  # leaves stacked: (memory_size, *shape)
  weights_memory: jax.Array  # (memory_size,): rho_k = 1 / <dg_k, dw_k>


def _inverse_hessian_product(
    updates, dw_memory, dg_memory, rhos, identity_scale, newest
):
  r"""The two-loop recursion: ``P_k u`` from the stored pairs.

  Slots are visited from ``newest - 1`` back to ``newest`` (mod the memory
  size) in the first loop and forwards in the second; empty slots have
  ``rho = 0`` and change nothing.

  References:
    Nocedal & Wright, Numerical optimization, 1999, Algorithm 7.4.
  """
  memory_size = rhos.shape[0]
  order = (newest + jnp.arange(memory_size)) % memory_size
  pair = lambda i: (  # noqa: E731
      jax.tree.map(lambda m: m[i], dw_memory),
      jax.tree.map(lambda m: m[i], dg_memory),
  )

  def backward(q, i):
    dw, dg = pair(i)
    alpha = rhos[i] * _real_vdot(dw, q)
    return _cast_like(_axpy(q, -alpha, dg), q), alpha

  q, alphas = jax.lax.scan(backward, updates, order, reverse=True)
  r = _scale(identity_scale, q)

  def forward(r, i_alpha):
    i, alpha = i_alpha
    dw, dg = pair(i)
    beta = rhos[i] * _real_vdot(dg, r)
    return _cast_like(_axpy(r, alpha - beta, dw), r), beta

  r, _ = jax.lax.scan(forward, r, (order, alphas))
  return r


def scale_by_lbfgs(
    memory_size: int = 10,
    scale_init_precond: bool = True,
) -> base.GradientTransformationExtraArgs:
  r"""The L-BFGS direction: the updates times an inverse-Hessian estimate.

  With ``s_j = w_{j+1} - w_j`` and ``y_j = u_{j+1} - u_j`` (params and
  incoming updates of consecutive calls), the estimate after ``k`` calls is

  .. math::
    P_k = V_{k-1}^\top \cdots V_{k-m}^\top (\gamma_k I) V_{k-m} \cdots
      V_{k-1} + \sum_j \rho_j (\ldots) s_j s_j^\top (\ldots), \quad
    V_j = I - \rho_j y_j s_j^\top, \quad \rho_j = 1 / \langle y_j, s_j
    \rangle,

  over the last ``m`` pairs, and the output is ``P_k u_k`` (chain a negative
  step size or line search after it). ``gamma_k = <s, y> / <y, y>`` of the
  newest pair with ``scale_init_precond`` (else ``1``); on the first call,
  with no pair yet, ``gamma_0 = min(1, 1 / ||u_0||)``, so that the first step
  has length at most one.

  The memory is updated before the product, from the params and updates of
  this call, so that chained after a line search it only records accepted
  steps.

  Args:
    memory_size: ``m``, the number of pairs kept, ``>= 1``.
    scale_init_precond: use the scaled identity ``gamma_k I`` as the initial
      estimate.

  References:
    Nocedal & Wright, Numerical optimization, 1999, Algorithms 7.4 and 7.5;
    Liu & Nocedal, On the limited memory BFGS method for large scale
    optimization, 1989.
  """
  checks.check_range('memory_size', memory_size, 1, None, fn='scale_by_lbfgs')

  def init_fn(params):
    stacked = jax.tree.map(
        lambda p: jnp.zeros((memory_size,) + p.shape, p.dtype), params
    )
    return ScaleByLBFGSState(
        count=jnp.zeros([], jnp.int32),
        params=otu.tree_zeros_like(params),
        updates=otu.tree_zeros_like(params),
        diff_params_memory=stacked,
        diff_updates_memory=stacked,
        weights_memory=jnp.zeros(memory_size),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    checks.require_params(params, 'scale_by_lbfgs')
    # The pair from the previous call to this one goes into slot count - 1;
    # the recursion then starts from slot count (the oldest pair).
    newest = state.count % memory_size
    slot = (state.count - 1) % memory_size

    # No pair exists on the first call (count 0): it is zero there. (The
    # test of ``count > 0`` is made leaf by leaf, as in Optax's program.)
    dw = otu.tree_sub(params, state.params)
    dg = otu.tree_sub(updates, state.updates)
    curvature = _real_vdot(dg, dw)
    rho = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
    dw, dg, rho = jax.tree.map(
        lambda x: jnp.where(state.count > 0, x, jnp.zeros_like(x)),
        (dw, dg, rho),
    )
    dw_memory, dg_memory, rhos = jax.tree.map(
        lambda memory, new: memory.at[slot].set(new),
        (state.diff_params_memory, state.diff_updates_memory,
         state.weights_memory),
        (dw, dg, rho),
    )

    if scale_init_precond:
      sy = _real_vdot(dg, dw)
      dg_sq = otu.tree_norm(dg, squared=True)
      gamma = jnp.where(dg_sq > 0.0, sy / dg_sq, 1.0)
      first_gamma = jnp.minimum(
          1.0, 1.0 / otu.tree_norm(jax.lax.stop_gradient(updates))
      )
      gamma = jnp.where(state.count > 0, gamma, first_gamma)
    else:
      gamma = 1.0

    direction = _inverse_hessian_product(
        updates, dw_memory, dg_memory, rhos, gamma, newest
    )
    return direction, ScaleByLBFGSState(
        count=otu.safe_increment(state.count),
        params=params,
        updates=updates,
        diff_params_memory=dw_memory,
        diff_updates_memory=dg_memory,
        weights_memory=rhos,
    )

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Backtracking (Armijo) line search.


class BacktrackingLinesearchInfo(NamedTuple):
  num_linesearch_steps: jax.Array  # int, function evaluations in the search
  decrease_error: jax.Array  # > 0 where the Armijo condition still fails


class ScaleByBacktrackingLinesearchState(NamedTuple):
  learning_rate: jax.Array  # the accepted step size
  value: jax.Array  # the objective at the accepted step
  grad: Optional[base.Updates]  # its gradient (with store_grad), else None
  info: BacktrackingLinesearchInfo


class _BacktrackingCarry(NamedTuple):
  learning_rate: jax.Array
  new_value: jax.Array
  new_grad: base.Updates
  decrease_error: jax.Array
  iter_num: Any


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: jax.typing.ArrayLike = 1e-4,
    decrease_factor: jax.typing.ArrayLike = 0.8,
    increase_factor: jax.typing.ArrayLike = 1.5,
    max_learning_rate: jax.typing.ArrayLike = 1.0,
    atol: jax.typing.ArrayLike = 0.0,
    rtol: jax.typing.ArrayLike = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Scales the updates by a step size found by backtracking (Armijo).

  Starting from ``eta = min(increase_factor * eta_prev, max_learning_rate)``,
  ``eta`` is multiplied by ``decrease_factor`` until

  .. math::
    f(w + \eta u) \le (1 + \delta) f(w) + \eta c \langle u, \nabla f(w)
    \rangle + \epsilon

  or ``max_backtracking_steps`` reductions were made; the output is
  ``eta u``. If every trial value was NaN or infinite the step is ``0``.

  Args:
    max_backtracking_steps: the most reductions of the step size, ``>= 0``.
    slope_rtol: ``c``, in ``[0, 1)``.
    decrease_factor: the reduction factor, in ``(0, 1)``.
    increase_factor: the growth of the first trial over the previous step,
      ``>= 1``.
    max_learning_rate: the largest trial step, ``> 0``.
    atol: ``epsilon``, ``>= 0``.
    rtol: ``delta``, ``>= 0``.
    store_grad: keep the gradient at the accepted point in the state (see
      :func:`value_and_grad_from_state`); costs a linearization per trial.
    verbose: log (absl, warning level) when the search fails.

  References:
    Armijo, Minimization of functions having Lipschitz continuous first
    partial derivatives, 1966; Nocedal & Wright, Numerical optimization,
    1999, Algorithm 3.1.
  """
  fn = 'scale_by_backtracking_linesearch'
  checks.check_non_negative('max_backtracking_steps', max_backtracking_steps, fn)
  checks.check_decay('slope_rtol', slope_rtol, fn)
  checks.check_range(
      'decrease_factor', decrease_factor, 0.0, 1.0, low_inclusive=False,
      high_inclusive=False, fn=fn,
  )
  checks.check_range('increase_factor', increase_factor, 1.0, None, fn=fn)
  checks.check_positive('max_learning_rate', max_learning_rate, fn)
  checks.check_non_negative('atol', atol, fn)
  checks.check_non_negative('rtol', rtol, fn)

  def init_fn(params):
    dtype = _real_dtype(params)
    return ScaleByBacktrackingLinesearchState(
        learning_rate=jnp.array(1.0, dtype),
        value=jnp.array(jnp.inf, dtype),
        grad=otu.tree_zeros_like(params) if store_grad else None,
        info=BacktrackingLinesearchInfo(
            num_linesearch_steps=jnp.asarray(0),
            decrease_error=jnp.array(jnp.inf, dtype),
        ),
    )

  def armijo_error(learning_rate, slope, value, new_value):
    error = new_value - (1.0 + rtol) * value - learning_rate * slope_rtol * slope
    error = jnp.where(jnp.isnan(error), jnp.inf, error)
    return jnp.maximum(error, 0.0)

  def update_fn(
      updates, state, params=None, *, value, grad, value_fn, **extra_args
  ):
    checks.require_params(params, fn)
    fn_kwargs = _split_fn_kwargs(value_fn, extra_args)
    objective = lambda w: value_fn(w, **fn_kwargs)  # noqa: E731
    slope = _real_vdot(updates, _conj(grad))

    def searching(carry):
      return (~(carry.decrease_error <= atol)) & (
          carry.iter_num <= max_backtracking_steps
      )

    def trial(carry):
      # The first trial keeps the initial guess; each later one shrinks it.
      learning_rate = jnp.where(
          carry.iter_num > 0,
          decrease_factor * carry.learning_rate,
          carry.learning_rate,
      )
      candidate = _axpy(params, learning_rate, updates)
      if store_grad:
        new_value, jvp = jax.linearize(objective, candidate)
        error = armijo_error(learning_rate, slope, value, new_value)
        # The gradient (a transposed jvp) only where the search stops. The
        # cotangent has the value's dtype (Optax's 1.0 fails in bfloat16).
        new_grad = jax.lax.cond(
            (error <= atol) | (carry.iter_num == max_backtracking_steps),
            lambda w: jax.linear_transpose(jvp, w)(jnp.ones_like(new_value))[0],
            lambda *_: carry.new_grad,
            candidate,
        )
      else:
        new_value = objective(candidate)
        error = armijo_error(learning_rate, slope, value, new_value)
        new_grad = carry.new_grad
      new_carry = _BacktrackingCarry(
          learning_rate=learning_rate,
          new_value=new_value,
          new_grad=new_grad,
          decrease_error=error,
          iter_num=carry.iter_num + 1,
      )
      return _cast_like(new_carry, carry)

    start = _BacktrackingCarry(
        learning_rate=jnp.minimum(
            increase_factor * state.learning_rate, max_learning_rate
        ),
        new_value=value,
        new_grad=otu.tree_zeros_like(params),
        decrease_error=jnp.array(jnp.inf),
        iter_num=0,
    )
    end = jax.lax.while_loop(searching, trial, start)

    # No finite trial value: make no step rather than a NaN one.
    learning_rate = jnp.where(
        jnp.isinf(end.decrease_error), 0.0, end.learning_rate
    )
    if verbose:
      _log_if(
          end.decrease_error > atol,
          'scale_by_backtracking_linesearch: no step size with sufficient '
          'decrease (value {value}, slope {slope}, last step {step}, decrease '
          'error {error}); infinite error means a step of 0.',
          value=value, slope=slope, step=end.learning_rate,
          error=end.decrease_error,
      )
    new_state = ScaleByBacktrackingLinesearchState(
        learning_rate=learning_rate,
        value=end.new_value,
        grad=end.new_grad if store_grad else None,
        info=BacktrackingLinesearchInfo(
            num_linesearch_steps=end.iter_num,
            decrease_error=end.decrease_error,
        ),
    )
    return _scale(learning_rate, updates), _cast_like(new_state, state)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Zoom line search (strong Wolfe conditions).


class ZoomLinesearchInfo(NamedTuple):
  num_linesearch_steps: jax.Array  # int, function evaluations in the search
  decrease_error: jax.Array  # > 0 where sufficient decrease still fails
  curvature_error: jax.Array  # > 0 where the curvature condition still fails


class ScaleByZoomLinesearchState(NamedTuple):
  learning_rate: jax.Array  # the accepted step size
  value: jax.Array  # the objective at the accepted step
  grad: base.Updates  # its gradient
  info: ZoomLinesearchInfo


class _ZoomCarry(NamedTuple):
  """The loop state of one zoom line search (all step sizes are scalars)."""

  count: jax.Array
  params: base.Params
  updates: base.Updates
  stepsize_guess: jax.Array
  # The last trial point.
  stepsize: jax.Array
  value: jax.Array
  grad: base.Updates
  slope: jax.Array
  # At step size 0.
  value_init: jax.Array
  slope_init: jax.Array
  # Violations at the last trial point (0 when satisfied).
  decrease_error: jax.Array
  curvature_error: jax.Array
  error: jax.Array
  # Phase flags: bracketing done, search done, search failed.
  interval_found: jax.Array
  done: jax.Array
  failed: jax.Array
  # The bracket: value(high) >= value(low), not high >= low.
  low: jax.Array
  value_low: jax.Array
  slope_low: jax.Array
  high: jax.Array
  value_high: jax.Array
  slope_high: jax.Array
  cubic_ref: jax.Array
  value_cubic_ref: jax.Array
  # The best point seen with sufficient decrease, a fallback.
  safe_stepsize: jax.Array
  safe_value: jax.Array
  safe_grad: base.Updates


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc):
  """Critical point of the cubic through (a, fa), (b, fb), (c, fc) with
  slope ``fpa`` at ``a``; NaN when there is none (then it is not used)."""
  db = b - a
  dc = c - a
  denom = (db * dc) ** 2 * (db - dc)
  coeffs = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
  rhs = jnp.array([fb - fa - fpa * db, fc - fa - fpa * dc])
  a3, b2 = (
      jnp.dot(coeffs, rhs, precision=jax.lax.Precision.HIGHEST) / denom
  )
  radical = b2 * b2 - 3.0 * a3 * fpa
  return a + (-b2 + jnp.sqrt(radical)) / (3.0 * a3)


def _quadratic_minimizer(a, fa, fpa, b, fb):
  """Critical point of the parabola through (a, fa), (b, fb), slope fpa at a."""
  db = b - a
  curvature = (fb - fa - fpa * db) / (db**2)
  return a - fpa / (2.0 * curvature)


def _zoom_search(
    max_linesearch_steps,
    max_stepsize,
    tol,
    increase_factor,
    slope_rtol,
    curv_rtol,
    approx_dec_rtol,
    interval_threshold,
    verbose,
):
  """Returns ``(start, step, searching)`` for a ``lax.while_loop``."""

  def evaluate(value_and_grad_fn, params, stepsize, updates):
    value, grad = value_and_grad_fn(_axpy(params, stepsize, updates))
    return value, grad, _real_vdot(_conj(grad), updates)

  def decrease_error_of(stepsize, value, slope, value_init, slope_init):
    # Armijo: f(eta) <= f(0) + c1 eta f'(0), eq. (3.7a) of Nocedal & Wright.
    error = value - value_init - slope_rtol * stepsize * slope_init
    if approx_dec_rtol is not None:
      # Near a minimum Armijo cannot resolve the decrease in floating point;
      # Hager & Zhang's approximate condition f'(eta) <= (2 c1 - 1) f'(0)
      # takes over once f(eta) <= f(0) + c3 |f(0)| (their eqs. 23, 26-27).
      approx = slope - (2 * slope_rtol - 1.0) * slope_init
      approx = jnp.maximum(
          approx, value - value_init - approx_dec_rtol * jnp.abs(value_init)
      )
      error = jnp.minimum(approx, error)
    error = jnp.maximum(error, 0.0)
    return jnp.where(jnp.isnan(error), jnp.inf, error)

  def curvature_error_of(slope, slope_init):
    # Strong Wolfe: |f'(eta)| <= c2 |f'(0)|, eq. (3.7b) of Nocedal & Wright.
    error = jnp.maximum(jnp.abs(slope) - curv_rtol * jnp.abs(slope_init), 0.0)
    return jnp.where(jnp.isnan(error), jnp.inf, error)

  def start(updates, params, value, grad, guess):
    dtype = _real_dtype(params)
    slope = _real_vdot(updates, grad)
    zero = jnp.asarray(0.0)
    inf = jnp.asarray(jnp.inf)
    false = jnp.asarray(False)
    return _ZoomCarry(
        count=jnp.asarray(0),
        params=params,
        updates=updates,
        stepsize_guess=guess,
        stepsize=jnp.asarray(0.0, dtype=dtype),
        value=jnp.array(value, dtype=dtype),
        grad=grad,
        slope=slope,
        value_init=value,
        slope_init=slope,
        decrease_error=inf,
        curvature_error=inf,
        error=inf,
        interval_found=false,
        done=false,
        failed=false,
        low=zero,
        value_low=value,
        slope_low=slope,
        high=zero,
        value_high=value,
        slope_high=slope,
        cubic_ref=zero,
        value_cubic_ref=value,
        safe_stepsize=zero,
        safe_value=value,
        safe_grad=grad,
    )

  def bracket(s, value_and_grad_fn):
    """One step of Algorithm 3.5 of Nocedal & Wright: grow the step until
    an interval containing an acceptable step is found."""
    first = s.count == 0
    stepsize = jnp.where(first, s.stepsize_guess, increase_factor * s.stepsize)
    if max_stepsize is not None:
      at_max = stepsize >= max_stepsize
      stepsize = jnp.minimum(stepsize, max_stepsize)
    else:
      at_max = jnp.asarray(False)
    value, grad, slope = evaluate(value_and_grad_fn, s.params, stepsize, s.updates)
    dec = decrease_error_of(stepsize, value, slope, s.value_init, s.slope_init)
    curv = curvature_error_of(slope, s.slope_init)
    error = jnp.maximum(dec, curv)

    safe_stepsize, safe_value, safe_grad = _where(
        dec <= tol,
        [stepsize, value, grad],
        [s.safe_stepsize, s.safe_value, s.safe_grad],
    )
    # The new point ends the bracket above (too high a value), or below (the
    # slope turned non-negative with a good value); else keep growing.
    new_is_high = (dec > 0.0) | ((value >= s.value) & ~first)
    new_is_low = (slope >= 0.0) & ~new_is_high
    low, value_low, slope_low, high, value_high, slope_high = _where(
        new_is_low,
        [stepsize, value, slope, s.stepsize, s.value, s.slope],
        [s.stepsize, s.value, s.slope, stepsize, value, slope],
    )
    interval_found = new_is_high | new_is_low | (error <= tol)
    # At the largest step with no bracket, a larger step would be needed for
    # the curvature condition: stop here (the fallback step is used).
    done = (error <= tol) | (at_max & ~interval_found)
    if verbose:
      _log_if(
          at_max & ~interval_found,
          'scale_by_zoom_linesearch: reached max_learning_rate={step} without '
          'an interval satisfying the curvature condition (decrease error '
          '{dec}, curvature error {curv}); consider a larger maximum.',
          step=stepsize, dec=dec, curv=curv,
      )
    failed = (s.count + 1 >= max_linesearch_steps) & ~done
    new = s._replace(
        count=otu.safe_increment(s.count),
        stepsize=stepsize, value=value, grad=grad, slope=slope,
        decrease_error=dec, curvature_error=curv, error=error,
        interval_found=jnp.asarray(interval_found),
        done=jnp.asarray(done),
        failed=jnp.asarray(failed),
        low=low, value_low=value_low, slope_low=slope_low,
        high=high, value_high=value_high, slope_high=slope_high,
        cubic_ref=low, value_cubic_ref=value_low,
        safe_stepsize=safe_stepsize, safe_value=safe_value,
        safe_grad=safe_grad,
    )
    return _cast_like(new, s)

  def zoom(s, value_and_grad_fn):
    """One step of Algorithm 3.6 of Nocedal & Wright: shrink the bracket
    around a point from cubic, else quadratic, else bisection steps."""
    width = jnp.abs(s.high - s.low)
    left = jnp.minimum(s.high, s.low)
    right = jnp.maximum(s.high, s.low)
    cubic_margin = 0.2 * width
    quad_margin = 0.1 * width
    too_narrow = width <= interval_threshold

    cubic = _cubic_minimizer(
        s.low, s.value_low, s.slope_low, s.high, s.value_high, s.cubic_ref,
        s.value_cubic_ref,
    )
    use_cubic = (cubic > left + cubic_margin) & (cubic < right - cubic_margin)
    quad = _quadratic_minimizer(
        s.low, s.value_low, s.slope_low, s.high, s.value_high
    )
    use_quad = ~use_cubic & (quad > left + quad_margin) & (
        quad < right - quad_margin
    )
    use_bisection = ~use_cubic & ~use_quad
    middle = jnp.where(use_cubic, cubic, s.cubic_ref)
    middle = jnp.where(use_quad, quad, middle)
    middle = jnp.where(use_bisection, (s.low + s.high) / 2.0, middle)

    value, grad, slope = evaluate(value_and_grad_fn, s.params, middle, s.updates)
    dec = decrease_error_of(middle, value, slope, s.value_init, s.slope_init)
    curv = curvature_error_of(slope, s.slope_init)
    error = jnp.maximum(dec, curv)

    # The fallback keeps the lowest value with sufficient decrease.
    better_safe = (dec <= tol) & (value < s.safe_value)
    safe_stepsize, safe_value, safe_grad = _where(
        better_safe,
        [middle, value, grad],
        [s.safe_stepsize, s.safe_value, s.safe_grad],
    )
    done = error <= tol

    middle_is_high = (dec > 0.0) | (value >= s.value_low)
    low_is_high = (slope * (s.high - s.low) >= 0.0) & ~middle_is_high
    middle_is_low = ~middle_is_high
    high, value_high, slope_high = _where(
        middle_is_high,
        [middle, value, slope],
        [s.high, s.value_high, s.slope_high],
    )
    high, value_high, slope_high = _where(
        low_is_high,
        [s.low, s.value_low, s.slope_low],
        [high, value_high, slope_high],
    )
    low, value_low, slope_low = _where(
        middle_is_low,
        [middle, value, slope],
        [s.low, s.value_low, s.slope_low],
    )
    # The end point that was replaced becomes the third cubic point.
    cubic_ref, value_cubic_ref = _where(
        middle_is_high | low_is_high,
        [s.high, s.value_high],
        [s.low, s.value_low],
    )
    # A bracket below the resolution ends the search once a step with
    # sufficient decrease is known; without one, keep going (very steep
    # functions need tiny steps).
    out_of_steps = (s.count + 1) >= max_linesearch_steps
    failed = (
        jnp.asarray(out_of_steps) | (too_narrow & (safe_stepsize > 0.0))
    ) & ~done
    new = s._replace(
        count=otu.safe_increment(s.count),
        stepsize=middle, value=value, grad=grad, slope=slope,
        decrease_error=dec, curvature_error=curv, error=error,
        done=done, failed=failed,
        low=low, value_low=value_low, slope_low=slope_low,
        high=high, value_high=value_high, slope_high=slope_high,
        cubic_ref=cubic_ref, value_cubic_ref=value_cubic_ref,
        safe_stepsize=safe_stepsize, safe_value=safe_value,
        safe_grad=safe_grad,
    )
    return _cast_like(new, s)

  def fall_back(s):
    """On failure, take the fallback step if there is one (or if the last
    trial was not even finite); else the last trial."""
    use_safe = (s.safe_stepsize > 0.0) | jnp.isinf(s.decrease_error)
    stepsize, value, grad = _where(
        use_safe,
        [s.safe_stepsize, s.safe_value, s.safe_grad],
        [s.stepsize, s.value, s.grad],
    )
    if verbose:
      _log_if(
          True,
          'scale_by_zoom_linesearch: the strong Wolfe conditions were not met '
          '(value {value}, slope {slope}, last step {step}, decrease error '
          '{dec}, curvature error {curv}); taking step {taken}. A non-negative '
          'slope means the update is not a descent direction.',
          value=s.value_init, slope=s.slope_init, step=s.stepsize,
          dec=s.decrease_error, curv=s.curvature_error, taken=stepsize,
      )
    return _cast_like(s._replace(stepsize=stepsize, value=value, grad=grad), s)

  def step(s, value_and_grad_fn):
    s_new = jax.lax.cond(
        s.interval_found,
        lambda s: zoom(s, value_and_grad_fn),
        lambda s: bracket(s, value_and_grad_fn),
        s,
    )
    s_new = jax.lax.cond(s_new.failed, fall_back, lambda s: s, s_new)
    return _cast_like(s_new, s)

  def searching(s):
    return ~(s.done | s.failed)

  return start, step, searching


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: Optional[jax.typing.ArrayLike] = None,
    tol: jax.typing.ArrayLike = 0.0,
    increase_factor: jax.typing.ArrayLike = 2.0,
    slope_rtol: jax.typing.ArrayLike = 1e-4,
    curv_rtol: jax.typing.ArrayLike = 0.9,
    approx_dec_rtol: Optional[jax.typing.ArrayLike] = 1e-6,
    stepsize_precision: jax.typing.ArrayLike = 1e-5,
    initial_guess_strategy: str = 'keep',
    verbose: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Scales the updates by a step size meeting the strong Wolfe conditions.

  Finds ``eta`` with

  .. math::
    f(w + \eta u) \le f(w) + c_1 \eta \langle u, \nabla f(w) \rangle +
    \epsilon, \qquad
    |\langle \nabla f(w + \eta u), u \rangle| \le c_2 |\langle \nabla f(w),
    u \rangle| + \epsilon,

  first growing ``eta`` by ``increase_factor`` until an interval containing
  such a step is bracketed, then shrinking the bracket by cubic, quadratic or
  bisection steps. Near a minimum, where ``f(w + eta u) <= f(w) + c_3 |f(w)|``,
  the first condition may be replaced by Hager and Zhang's approximate one,
  ``<grad f(w + eta u), u> <= (2 c_1 - 1) <grad f(w), u>``. If the search runs
  out of steps, the best step with sufficient decrease is used. The output is
  ``eta u``; the state keeps the value and gradient at the new point.

  Args:
    max_linesearch_steps: the most function evaluations, ``>= 1``.
    max_learning_rate: the largest step, ``> 0``, or ``None`` for no bound.
    tol: ``epsilon``, ``>= 0``.
    increase_factor: growth of the trial step while bracketing, ``> 1``.
    slope_rtol: ``c_1``, in ``[0, 1)``.
    curv_rtol: ``c_2``, in ``[0, 1]``.
    approx_dec_rtol: ``c_3 >= 0``, or ``None`` for Armijo's condition only.
    stepsize_precision: a bracket narrower than this ends the search when a
      step with sufficient decrease is known, ``>= 0``.
    initial_guess_strategy: ``'keep'`` (start from the previous step) or
      ``'one'`` (start from 1, best for quasi-Newton directions).
    verbose: log (absl, warning level) when the search fails.

  References:
    Nocedal & Wright, Numerical optimization, 1999, Algorithms 3.5 and 3.6;
    Hager & Zhang, Algorithm 851: CG_DESCENT, a conjugate gradient method with
    guaranteed descent, 2006.
  """
  fn = 'scale_by_zoom_linesearch'
  checks.check_range('max_linesearch_steps', max_linesearch_steps, 1, None, fn=fn)
  if max_learning_rate is not None:
    checks.check_positive('max_learning_rate', max_learning_rate, fn)
  checks.check_non_negative('tol', tol, fn)
  checks.check_range(
      'increase_factor', increase_factor, 1.0, None, low_inclusive=False, fn=fn
  )
  checks.check_decay('slope_rtol', slope_rtol, fn)
  checks.check_range('curv_rtol', curv_rtol, 0.0, 1.0, fn=fn)
  if approx_dec_rtol is not None:
    checks.check_non_negative('approx_dec_rtol', approx_dec_rtol, fn)
  checks.check_non_negative('stepsize_precision', stepsize_precision, fn)
  checks.check_choice(
      'initial_guess_strategy', initial_guess_strategy, ('keep', 'one'), fn
  )

  start, step, searching = _zoom_search(
      max_linesearch_steps=max_linesearch_steps,
      max_stepsize=max_learning_rate,
      tol=tol,
      increase_factor=increase_factor,
      slope_rtol=slope_rtol,
      curv_rtol=curv_rtol,
      approx_dec_rtol=approx_dec_rtol,
      interval_threshold=stepsize_precision,
      verbose=verbose,
  )

  def init_fn(params):
    dtype = _real_dtype(params)
    return ScaleByZoomLinesearchState(
        learning_rate=jnp.asarray(1.0, dtype=dtype),
        value=jnp.asarray(jnp.inf, dtype=dtype),
        grad=otu.tree_zeros_like(params),
        info=ZoomLinesearchInfo(
            num_linesearch_steps=jnp.asarray(0),
            decrease_error=jnp.asarray(jnp.inf),
            curvature_error=jnp.asarray(jnp.inf),
        ),
    )

  def update_fn(
      updates, state, params=None, *, value, grad, value_fn, **extra_args
  ):
    checks.require_params(params, fn)
    fn_kwargs = _split_fn_kwargs(value_fn, extra_args)
    value_and_grad_fn = jax.value_and_grad(
        lambda w: value_fn(w, **fn_kwargs)
    )
    if initial_guess_strategy == 'one':
      guess = jnp.asarray(1.0)
    else:
      guess = state.learning_rate
    end = jax.lax.while_loop(
        searching,
        lambda s: step(s, value_and_grad_fn),
        start(updates, params, value, grad, guess),
    )
    new_state = ScaleByZoomLinesearchState(
        learning_rate=end.stepsize,
        value=end.value,
        grad=end.grad,
        info=ZoomLinesearchInfo(
            num_linesearch_steps=end.count,
            decrease_error=end.decrease_error,
            curvature_error=end.curvature_error,
        ),
    )
    return _scale(end.stepsize, updates), _cast_like(new_state, state)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------
# The optimizer and a helper to reuse the line search's last evaluation.


def lbfgs(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Optional[base.GradientTransformation] = scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy='one'
    ),
) -> base.GradientTransformationExtraArgs:
  r"""L-BFGS: the quasi-Newton direction, then a line search.

  .. math::
    w_{k+1} = w_k - \eta_k P_k \nabla f(w_k)

  with ``P_k`` the inverse-Hessian estimate of :func:`scale_by_lbfgs` and
  ``eta_k`` from ``linesearch`` (by default a zoom search on the strong Wolfe
  conditions, starting from 1), times ``learning_rate`` if one is given. The
  update needs ``value``, ``grad`` and ``value_fn`` keyword arguments (see
  :func:`value_and_grad_from_state` to reuse the search's last evaluation).
  Complex params are supported.

  Args:
    learning_rate: a scalar or schedule multiplying the step, or ``None``.
    memory_size: the number of (step, gradient change) pairs kept, ``>= 1``.
    scale_init_precond: start from ``gamma_k I`` rather than ``I``.
    linesearch: a transformation choosing the step size, or ``None`` for none
      (then ``learning_rate`` alone sets it).

  References:
    Nocedal & Wright, Numerical optimization, 1999, Algorithms 7.4 and 7.5;
    Liu & Nocedal, On the limited memory BFGS method for large scale
    optimization, 1989.
  """
  if learning_rate is None:
    step_size = transform.scale(-1.0)
  else:
    checks.check_learning_rate(learning_rate, 'lbfgs')
    step_size = transform.scale_by_learning_rate(learning_rate)
  return base.chain(
      scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
      step_size,
      base.identity() if linesearch is None else linesearch,
  )


def _state_fields(tree, name):
  """Every field called ``name`` of a NamedTuple inside ``tree``."""
  found = []

  def visit(node):
    if isinstance(node, tuple) and hasattr(node, '_fields'):
      for field, child in zip(node._fields, node):
        if field == name:
          found.append(child)
        else:
          visit(child)
    elif isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)

  visit(tree)
  return found


def value_and_grad_from_state(
    value_fn: Callable[..., jax.Array],
) -> Callable[..., tuple[jax.Array, base.Updates]]:
  """Like ``jax.value_and_grad(value_fn)``, reusing a line search's result.

  The returned ``f(params, *args, state, **kwargs)`` reads ``value`` and
  ``grad`` from the optimizer state (the line search evaluated them at the
  point it accepted, which is the new ``params``) and only evaluates
  ``value_fn`` when that value is not finite (e.g. before the first step).

  Raises:
    ValueError: if the state has no single ``value`` and ``grad`` field, or
      the ``grad`` stored is ``None`` (backtracking without ``store_grad``).
  """

  def value_and_grad(params, *fn_args, state, **fn_kwargs):
    values, grads = _state_fields(state, 'value'), _state_fields(state, 'grad')
    if len(values) != 1 or len(grads) != 1 or grads[0] is None:
      raise ValueError(
          'value_and_grad_from_state: the state must hold exactly one value '
          f'and one (non-None) grad; found {len(values)} and {len(grads)}. '
          'Use an optimizer with a line search (with store_grad=True for '
          'backtracking).'
      )
    value, grad = values[0], grads[0]
    return jax.lax.cond(
        jnp.isfinite(value),
        lambda *_: (value, grad),
        lambda p, a, kw: jax.value_and_grad(value_fn)(p, *a, **kw),
        params, fn_args, fn_kwargs,
    )

  return value_and_grad
