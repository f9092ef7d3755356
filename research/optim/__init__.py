"""From-scratch gradient transformations with Optax's names and semantics.

``from research import optim as optax`` works for every name exported here.
Each module lists its public names in ``__all__``.
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
from research.optim.transform import *  # noqa: F401,F403
from research.optim.adding import *  # noqa: F401,F403
from research.optim.clipping import *  # noqa: F401,F403
from research.optim.constraints import *  # noqa: F401,F403
from research.optim.combine import *  # noqa: F401,F403
from research.optim.wrappers import *  # noqa: F401,F403
from research.optim.accumulation import *  # noqa: F401,F403
from research.optim.factorized import *  # noqa: F401,F403
from research.optim.layerwise import *  # noqa: F401,F403
from research.optim.sm3 import *  # noqa: F401,F403
from research.optim.lbfgs import *  # noqa: F401,F403
from research.optim.schedules import *  # noqa: F401,F403
from research.optim.inject import *  # noqa: F401,F403
from research.optim.plateau import *  # noqa: F401,F403
from research.optim.saddle import *  # noqa: F401,F403
from research.optim.alias import *  # noqa: F401,F403
from research.optim.factory import *  # noqa: F401,F403
from research.optim.flat import *  # noqa: F401,F403

# --- submodules and names of Optax's API (losses, tree, projections, ...)
# tree, transforms, microbatching, experimental, top-level names
from research.optim import experimental  # noqa: E402,F401
from research.optim import linear_algebra  # noqa: E402,F401
from research.optim import microbatching  # noqa: E402,F401
from research.optim import transforms  # noqa: E402,F401
from research.optim import tree_utils  # noqa: E402,F401
from research.optim.alias import MaskOrFn  # noqa: E402,F401
from research.optim.base import (  # noqa: E402,F401
    TransformInitFn,
    TransformUpdateExtraArgsFn,
    TransformUpdateFn,
)
from research.optim.linear_algebra import *  # noqa: E402,F401,F403
from research.optim.microbatching import microbatch  # noqa: E402,F401
from research.optim.misc import *  # noqa: E402,F401,F403
from research.optim.monitor import *  # noqa: E402,F401,F403
from research.optim.multipliers import *  # noqa: E402,F401,F403
from research.optim.parameter_free import *  # noqa: E402,F401,F403
from research.optim.per_example import *  # noqa: E402,F401,F403
from research.optim.tree import (  # noqa: E402,F401
    tree_map_params,
    update_infinity_moment,
    update_moment,
    update_moment_per_elem_norm,
)
# losses, projections, second_order, perturbations, assignment
from research.optim import assignment  # noqa: E402,F401
from research.optim import losses  # noqa: E402,F401
from research.optim import perturbations  # noqa: E402,F401
from research.optim import projections  # noqa: E402,F401
from research.optim import second_order  # noqa: E402,F401
from research.optim.losses import (  # noqa: E402,F401
    convex_kl_divergence,
    cosine_distance,
    cosine_similarity,
    ctc_loss,
    ctc_loss_with_forward_probs,
    generalized_kl_divergence,
    hinge_loss,
    huber_loss,
    kl_divergence,
    l2_loss,
    log_cosh,
    ntxent,
    safe_softmax_cross_entropy,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    smooth_labels,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)
# --- end submodules

from research.optim import contrib  # noqa: E402,F401

# --- beyond optax (shampoo, soap)
from research.optim.shampoo import *  # noqa: E402,F401,F403
from research.optim.soap import *  # noqa: E402,F401,F403
# --- end beyond optax
