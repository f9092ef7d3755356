"""Optax's ``projections``: Euclidean projections of pytrees onto convex sets.

Each ``projection_<set>(tree, ...)`` returns the point of the set nearest to
``tree`` in the l2 norm of all leaves stacked, with the structure of ``tree``.
"""

from research.optim.projections.euclidean import *  # noqa: F401,F403
