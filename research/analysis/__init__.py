"""Analysis tools: the propagation probe and curvature (``hessian``: HVPs,
Lanczos spectra, critical-point index)."""

from research.analysis import hessian

from research.analysis.propagation import (
    SATURATION,
    cross_entropy_loss,
    probe_config,
    propagation_probe,
)
