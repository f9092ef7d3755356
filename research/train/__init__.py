"""Training: the state, pure steps, the Trainer (none / sharded / pmap),
checkpoints, hooks, ensembles and transfer utilities."""

from research.train.state import TrainState, create_replicas
from research.train.trainer import (
    FitResult,
    NonFiniteError,
    Trainer,
    default_config,
    validate_config,
)
