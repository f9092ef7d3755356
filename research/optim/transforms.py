"""Optax 0.2.8's ``optax.transforms``: the composable building blocks by name.

Everything here is defined in the family modules (``adding``, ``clipping``,
``wrappers``, ``monitor``, ...); this module gathers them under Optax's
namespace so that ``research.optim.transforms.masked`` works as
``optax.transforms.masked``.
"""

# pylint: disable=unused-import
from research.optim.accumulation import (
    MultiSteps,
    MultiStepsState,
    ShouldSkipUpdateFunction,
    skip_large_updates,
    skip_not_finite,
)
from research.optim.adding import AddNoiseState, add_decayed_weights, add_noise
from research.optim.base import chain, named_chain
from research.optim.clipping import (
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    unitwise_clip,
    unitwise_norm,
)
from research.optim.combine import PartitionState, partition, selective_transform
from research.optim.constraints import (
    NonNegativeParamsState,
    ZeroNansState,
    keep_params_nonnegative,
    zero_nans,
)
from research.optim.monitor import (
    MonitorState,
    SnapshotState,
    measure_with_ema,
    monitor,
    snapshot,
)
from research.optim.per_example import (
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
)
from research.optim.transform import EmaState, TraceState, ema, trace
from research.optim.wrappers import (
    ApplyIfFiniteState,
    ConditionallyMaskState,
    ConditionallyTransformState,
    ConditionFn,
    MaskedNode,
    MaskedState,
    apply_if_finite,
    conditionally_mask,
    conditionally_transform,
    flatten,
    freeze,
    masked,
)

__all__ = sorted(n for n in dir() if not n.startswith('_'))
