"""Optax's ``contrib``: newer optimizers, under the same path as in Optax.

``from research import optim as optax; optax.contrib.muon(...)`` works as in
Optax 0.2.8. Each module lists its public names in ``__all__``.
"""

# --- group 1 (acprop, ademamix, adopt, cocob, dadapt, dog, dowg, dpsgd, galore, madgrad, mechanize)
from research.optim.contrib._acprop import *  # noqa: F401,F403
from research.optim.contrib._ademamix import *  # noqa: F401,F403
from research.optim.contrib._adopt import *  # noqa: F401,F403
from research.optim.contrib._cocob import *  # noqa: F401,F403
from research.optim.contrib._dadapt_adamw import *  # noqa: F401,F403
from research.optim.contrib._dog import *  # noqa: F401,F403
from research.optim.contrib._galore import *  # noqa: F401,F403
from research.optim.contrib._madgrad import *  # noqa: F401,F403
from research.optim.contrib._mechanic import *  # noqa: F401,F403
from research.optim.contrib._privacy import *  # noqa: F401,F403
# --- end group 1

# --- group 2 (momo, muon, prodigy, reduce_on_plateau, sam, schedule_free, sophia, complex)
from research.optim.contrib._complex_valued import *  # noqa: F401,F403
from research.optim.contrib._momo import *  # noqa: F401,F403
from research.optim.contrib._muon import *  # noqa: F401,F403
from research.optim.contrib._prodigy import *  # noqa: F401,F403
from research.optim.contrib._sam import *  # noqa: F401,F403
from research.optim.contrib._schedule_free import *  # noqa: F401,F403
from research.optim.contrib._sophia import *  # noqa: F401,F403
from research.optim.plateau import (  # noqa: F401  (also top-level)
    ReduceLROnPlateauState,
    reduce_on_plateau,
)
# --- end group 2
