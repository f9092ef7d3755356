"""Learning-rate-free step sizes: distance over gradients (DoG).

Name, signature and state follow Optax 0.2.8
(``optax.scale_by_distance_over_gradients``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from research.optim import base
from research.optim import checks
from research.optim import tree as otu

__all__ = ['ScaleByDistanceOverGradientsState', 'scale_by_distance_over_gradients']


class ScaleByDistanceOverGradientsState(NamedTuple):
  max_dist: Any
  grad_sum_of_squares: Any
  init_params: Any


def _distance(x, y=0.0):
  return jnp.sqrt(jnp.square(x - y).sum())


def scale_by_distance_over_gradients(
    reps_rel=1e-6, eps=1e-8, param_dtype=jnp.float32, global_scale=1.0
) -> base.GradientTransformation:
  r"""Layer-wise DoG: each leaf's step is its distance travelled over its
  root gradient sum of squares.

  .. math::
    r_t = \max(r_{t-1}, \|x_t - x_0\|),\ r_0 = \rho (1 + \|x_0\|), \quad
    G_t = G_{t-1} + \|g_t\|^2, \quad u_t = s \frac{r_t}{\sqrt{G_t + \epsilon}} g_t

  per leaf (one ``r`` and ``G`` per array). ``s = global_scale``; use
  ``-1`` to descend, or follow with ``scale_by_learning_rate(1.0)``.

  Args:
    reps_rel: ``rho``, the initial distance relative to ``1 + ||x_0||``
      (the paper suggests 1e-4 with batch norm, 1e-6 otherwise).
    eps: ``epsilon`` inside the root.
    param_dtype: dtype of the stored initial params.
    global_scale: ``s``.

  References:
    Ivgi, Hinder & Carmon, DoG is SGD's best friend: a parameter-free dynamic
    step size schedule, 2023.
  """
  fn = 'scale_by_distance_over_gradients'
  checks.check_non_negative('reps_rel', reps_rel, fn)
  checks.check_non_negative('eps', eps, fn)

  def init_fn(params):
    return ScaleByDistanceOverGradientsState(
        jax.tree.map(lambda x: reps_rel * (1 + _distance(x)), params),
        jax.tree.map(lambda x: jnp.zeros(1), params),
        otu.tree_cast(params, param_dtype),
    )

  def update_fn(updates, state, params):
    checks.require_params(params, fn)
    max_dist = jax.tree.map(
        lambda d, x, x0: jnp.maximum(d, _distance(x, x0)),
        state.max_dist, params, state.init_params,
    )
    g_sos = jax.tree.map(
        lambda s, g: s + jnp.square(g).sum(), state.grad_sum_of_squares, updates
    )
    updates = jax.tree.map(
        lambda g, d, s: global_scale * (d / jnp.sqrt(s + eps)) * g,
        updates, max_dist, g_sos,
    )
    return updates, ScaleByDistanceOverGradientsState(
        max_dist, g_sos, state.init_params
    )

  return base.GradientTransformation(init_fn, update_fn)
