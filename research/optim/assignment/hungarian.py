r"""The linear assignment problem, solved by the Hungarian algorithm in JAX.

Given an ``n x m`` cost matrix ``C``, choose ``min(n, m)`` (row, column) pairs,
no row or column twice, of least total cost:

.. math::
  \min_X \sum_{ij} C_{ij} X_{ij} \quad \text{s.t.} \quad X_{ij} \in \{0, 1\},
  \ \sum_i X_{ij} \le 1,\ \sum_j X_{ij} \le 1,\ \sum_{ij} X_{ij} = \min(n, m).

The solver adds one row at a time and finds a shortest augmenting path in the
reduced costs ``C_ij - u_i - v_j`` (Dijkstra over the columns), then updates
the dual potentials ``u, v`` so that the reduced costs stay non-negative and
are zero on the matching: ``O(n^2 m)`` in all, jittable (``lax`` loops only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ['base_hungarian_algorithm', 'hungarian_algorithm']


def _row_of_each_column(cost: jax.Array) -> jax.Array:
  """The row matched to each column (-1 if none) for ``cost [n, m]``, n <= m.

  Rows and columns are 1-based inside; column 0 is a virtual column that
  holds the row being added, and ``row_of[j] == 0`` marks a free column.
  """
  n, m = cost.shape

  def add_row(carry, row):
    u, v, row_of = carry
    row_of = row_of.at[0].set(row + 1)

    def search_step(state):
      u, v, visited, dist, prev_col, col = state
      visited = visited.at[col].set(True)
      frontier = ~visited[1:]
      r = row_of[col]
      reduced = jnp.where(frontier, cost[r - 1] - u[r] - v[1:], jnp.inf)
      closer = reduced < dist
      prev_col = jnp.where(closer, col, prev_col)
      dist = jnp.where(closer, reduced, dist)
      next_col = jnp.argmin(jnp.where(frontier, dist, jnp.inf)) + 1
      delta = jnp.min(jnp.where(frontier, dist, jnp.inf))
      # Keep reduced costs >= 0 and tight on the visited tree.
      u = u.at[jnp.where(visited, row_of, n + 1)].add(delta, mode='drop')
      v = jnp.where(visited, v - delta, v)
      dist = jnp.where(frontier, dist - delta, dist)
      return u, v, visited, dist, prev_col, next_col

    state = (u, v, jnp.zeros(m + 1, bool), jnp.full(m, jnp.inf, cost.dtype),
             jnp.zeros(m, int), 0)
    u, v, _, _, prev_col, free_col = jax.lax.while_loop(
        lambda s: row_of[s[-1]] != 0, search_step, state)

    def flip_step(state):
      row_of, col = state
      back = prev_col[col - 1]
      return row_of.at[col].set(row_of[back]), back

    row_of, _ = jax.lax.while_loop(
        lambda s: s[1] != 0, flip_step, (row_of, free_col))
    return (u, v, row_of), None

  init = (jnp.zeros(n + 1, cost.dtype), jnp.zeros(m + 1, cost.dtype),
          jnp.zeros(m + 1, int))
  (_, _, row_of), _ = jax.lax.scan(add_row, init, jnp.arange(n))
  return row_of[1:] - 1


def _solve(cost_matrix):
  """``(col_of_row, row_of_col, transposed)`` for the wide orientation of C."""
  cost = jnp.asarray(cost_matrix)
  if cost.ndim != 2:
    raise ValueError(
        f'hungarian_algorithm: cost_matrix has shape {cost.shape}; allowed: a '
        '2-D matrix.')
  transposed = cost.shape[0] > cost.shape[1]
  if transposed:
    cost = cost.T
  cost = cost.astype(jnp.result_type(cost.dtype, float))
  rows, cols = cost.shape
  row_of_col = _row_of_each_column(cost)
  col_of_row = jnp.zeros(rows, int).at[
      jnp.where(row_of_col >= 0, row_of_col, rows)].set(
          jnp.arange(cols), mode='drop')
  return col_of_row, row_of_col, transposed


def _empty(cost_matrix) -> bool:
  return 0 in jnp.shape(cost_matrix)


def hungarian_algorithm(cost_matrix):
  r"""Solves the linear assignment problem; pairs ordered as in Optax.

  See the module docstring for the problem and the method.

  Args:
    cost_matrix: an ``n x m`` matrix of costs.

  Returns:
    ``(i, j)``: row and column indices of the ``min(n, m)`` matched pairs; the
    cost is ``cost_matrix[i, j].sum()``. For a square matrix ``j`` is
    ``0..n-1``; otherwise the pairs come in decreasing order of the shorter
    side's index.

  References:
    Kuhn, The Hungarian Method for the Assignment Problem, 1955; Jonker and
    Volgenant, A Shortest Augmenting Path Algorithm for Dense and Sparse
    Linear Assignment Problems, 1987.
  """
  if _empty(cost_matrix):
    return jnp.zeros(0, int), jnp.zeros(0, int)
  col_of_row, row_of_col, transposed = _solve(cost_matrix)
  short = jnp.arange(col_of_row.shape[0])[::-1]
  if transposed:
    return col_of_row[::-1], short
  if col_of_row.shape[0] == row_of_col.shape[0]:
    return row_of_col, jnp.arange(row_of_col.shape[0])
  return short, col_of_row[::-1]


def base_hungarian_algorithm(cost_matrix):
  r"""Solves the linear assignment problem; pairs in increasing row order.

  The same solution as :func:`hungarian_algorithm` (the same solver here),
  with the pairs sorted by row as Optax's ``base_hungarian_algorithm`` returns
  them.

  Args:
    cost_matrix: an ``n x m`` matrix of costs.

  Returns:
    ``(i, j)``: ``i`` increasing, ``j`` the matched columns; the cost is
    ``cost_matrix[i, j].sum()``.

  References:
    Crouse, On Implementing 2D Rectangular Assignment Algorithms, 2016.
  """
  if _empty(cost_matrix):
    return jnp.zeros(0, int), jnp.zeros(0, int)
  col_of_row, _, transposed = _solve(cost_matrix)
  if transposed:
    order = jnp.argsort(col_of_row)
    return col_of_row[order], order
  return jnp.arange(col_of_row.shape[0]), col_of_row
