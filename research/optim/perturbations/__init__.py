"""Optax's ``perturbations``: smoothing a function by random perturbations of its input."""

from research.optim.perturbations.smoothing import *  # noqa: F401,F403
