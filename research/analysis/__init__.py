"""Analysis tools: propagation probe (and, from other modules, curvature and
gradient statistics)."""

from research.analysis.propagation import (
    SATURATION,
    cross_entropy_loss,
    probe_config,
    propagation_probe,
)
