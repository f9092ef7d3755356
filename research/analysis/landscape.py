"""Loss landscapes: filter-normalized random directions, 1-D and 2-D slices,
linear interpolation between two models and the loss barrier on the path.

    d = random_direction(params, key)                   # filter-normalized
    alphas, losses = jnp.linspace(-1, 1, 41), loss_curve(fn, params, d, alphas)
    surface = loss_surface(fn, params, d1, d2, alphas, betas)   # (len(a), len(b))
    curve = interpolation_curve(fn, params_a, params_b, jnp.linspace(0, 1, 21))
    barrier = loss_barrier(ts, curve)

``fn(params) -> scalar`` is the loss (a fixed batch closed over, the model in
evaluation mode, BatchNorm statistics held fixed). Every function is
traceable; the slices evaluate their points with ``lax.map`` (one compiled
loss, points in sequence, memory of one evaluation).

Filter normalization (Li et al., 2018): a random Gaussian direction ``d``
is rescaled filter by filter, ``d_{i,j} <- d_{i,j} / ||d_{i,j}|| *
||theta_{i,j}||``, where a filter is one output unit of a layer: the slice of
a kernel at one index of its last (output) axis, for convolutions
``(..., in, out)`` and dense layers ``(in, out)`` alike. Parameters of
rank <= 1 (biases, BatchNorm scales and offsets) get a zero direction, as in
the paper's code (``ignore='biasbn'``), so that plots of networks with and
without BatchNorm compare.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    'IGNORE',
    'NORMALIZATIONS',
    'interpolate',
    'interpolation_curve',
    'loss_barrier',
    'loss_curve',
    'loss_surface',
    'normalize_direction',
    'random_direction',
    'shift',
]

_EPS = 1e-10


def _filter_norms(x: jax.Array) -> jax.Array:
  """The L2 norm of each filter (last axis), broadcastable against ``x``."""
  axes = tuple(range(x.ndim - 1))
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def _filter(d, w):
  return d * (_filter_norms(w) / (_filter_norms(d) + _EPS))


def _layer(d, w):
  return d * (jnp.linalg.norm(w) / (jnp.linalg.norm(d) + _EPS))


def _none(d, w):
  del w
  return d


# How a direction's kernel is scaled to the model's: by filter (the paper),
# by whole layer, or not at all.
NORMALIZATIONS: dict[str, Callable] = {'filter': _filter, 'layer': _layer, 'none': _none}
# What rank <= 1 parameters (biases, BatchNorm) get: 'biasbn' a zero direction
# (the paper's default), 'none' the parameter itself (the paper's code
# otherwise copies the weights).
IGNORE = ('biasbn', 'none')


def _check(norm: str, ignore: str) -> None:
  if norm not in NORMALIZATIONS:
    raise ValueError(f'direction normalization norm={norm!r} is unknown; allowed: '
                     f'{", ".join(NORMALIZATIONS)}.')
  if ignore not in IGNORE:
    raise ValueError(f'ignore={ignore!r} is unknown; allowed: {", ".join(IGNORE)}.')


def normalize_direction(direction: Any, params: Any, norm: str = 'filter',
                        ignore: str = 'biasbn') -> Any:
  """``direction`` rescaled to ``params`` leaf by leaf (see the module doc)."""
  _check(norm, ignore)
  scale = NORMALIZATIONS[norm]

  def one(d, w):
    if jnp.ndim(w) <= 1:
      return jnp.zeros_like(w) if ignore == 'biasbn' else jnp.asarray(w)
    return scale(d.astype(w.dtype), w)

  return jax.tree.map(one, direction, params)


def random_direction(params: Any, key: jax.Array, norm: str = 'filter',
                     ignore: str = 'biasbn') -> Any:
  """A Gaussian direction like ``params``, normalized (default: by filter)."""
  _check(norm, ignore)
  # One draw for the whole tree: a single random program to compile.
  flat, unravel = ravel_pytree(params)
  gauss = unravel(jax.random.normal(key, flat.shape, flat.dtype))
  return normalize_direction(gauss, params, norm, ignore)


def shift(params: Any, directions: tuple, coefficients: tuple) -> Any:
  """``params + sum_i c_i d_i``."""
  out = params
  for d, c in zip(directions, coefficients):
    out = jax.tree.map(lambda p, x, c=c: p + c * x, out, d)
  return out


def loss_curve(fn, params: Any, direction: Any, alphas: jax.Array) -> jax.Array:
  """``fn(params + alpha d)`` for each ``alpha``: the 1-D plot."""
  return jax.lax.map(lambda a: fn(shift(params, (direction,), (a,))), jnp.asarray(alphas))


def loss_surface(fn, params: Any, d1: Any, d2: Any, alphas: jax.Array,
                 betas: jax.Array) -> jax.Array:
  """``fn(params + alpha d1 + beta d2)`` on the grid, shape ``(len(alphas),
  len(betas))``: the 2-D (contour) plot."""
  alphas, betas = jnp.asarray(alphas), jnp.asarray(betas)
  a, b = jnp.meshgrid(alphas, betas, indexing='ij')
  values = jax.lax.map(lambda ab: fn(shift(params, (d1, d2), (ab[0], ab[1]))),
                       jnp.stack([a.ravel(), b.ravel()], axis=1))
  return values.reshape(a.shape)


def interpolate(params_a: Any, params_b: Any, t) -> Any:
  """``(1 - t) a + t b`` leaf by leaf: exactly ``a`` at 0 and ``b`` at 1
  (for finite params), which ``a + t (b - a)`` is not in floating point."""
  return jax.tree.map(lambda a, b: (1 - t) * a + t * b, params_a, params_b)


def interpolation_curve(fn, params_a: Any, params_b: Any, ts: jax.Array) -> jax.Array:
  """``fn((1 - t) a + t b)`` for each ``t``."""
  return jax.lax.map(lambda t: fn(interpolate(params_a, params_b, t)), jnp.asarray(ts))


def loss_barrier(ts, losses) -> float:
  r"""The height of the path above the straight line between its ends:

  .. math::
    B = \max_t \; L(t) - \left[(1 - t) L(0) + t L(1)\right]

  (0 for a convex path; ``ts`` must start at 0 and end at 1).

  References:
    Frankle, Dziugaite, Roy & Carbin, Linear mode connectivity and the
    lottery ticket hypothesis, 2020.
  """
  ts, losses = np.asarray(ts, np.float64), np.asarray(losses, np.float64)
  if ts.ndim != 1 or ts.shape != losses.shape or ts.size < 2 or ts[0] != 0 or ts[-1] != 1:
    raise ValueError('loss_barrier: ts must be a 1-D grid from 0 to 1 with one loss '
                     f'per point; got ts of shape {ts.shape}, losses {losses.shape}.')
  line = (1 - ts) * losses[0] + ts * losses[-1]
  return float(np.max(losses - line))
