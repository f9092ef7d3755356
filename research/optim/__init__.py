"""From-scratch gradient transformations with Optax's names and semantics.

``from research import optim as optax`` works for every name exported here.
"""

from research.optim import tree
from research.optim.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Schedule,
    ScalarOrSchedule,
    Updates,
    apply_updates,
    chain,
    identity,
    incremental_update,
    init_empty_state,
    named_chain,
    periodic_update,
    set_to_zero,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
)
from research.optim.tree import (
    abs_sq,
    bias_correction,
    global_norm,
    safe_increment,
    safe_int32_increment,
    safe_norm,
    safe_root_mean_squares,
)
from research.optim.transform import (
    ScaleByScheduleState,
    TraceState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    trace,
)
from research.optim.alias import sgd
