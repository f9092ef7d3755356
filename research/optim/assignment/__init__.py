"""Optax's ``assignment``: the linear assignment problem (Hungarian algorithm)."""

from research.optim.assignment.hungarian import *  # noqa: F401,F403
