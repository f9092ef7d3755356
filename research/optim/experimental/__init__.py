"""Optax 0.2.8's ``optax.experimental``: gradient aggregation (per-example
updates in, one update out)."""

from research.optim.experimental import aggregating

__all__ = ['aggregating']
