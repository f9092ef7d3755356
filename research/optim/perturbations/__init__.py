"""Optax's ``perturbations``: smoothing a function by perturbing its input."""

from research.optim.perturbations.smoothing import *  # noqa: F401,F403
