"""Optax's ``losses``: loss functions under the same path and names as Optax 0.2.8.

``from research import optim as optax; optax.losses.softmax_cross_entropy``
works as in Optax. Losses return per-example values (reduce over the batch
yourself) unless their docstring says otherwise.
"""

from research.optim.losses.classification import *  # noqa: F401,F403
from research.optim.losses.ctc import *  # noqa: F401,F403
from research.optim.losses.divergences import *  # noqa: F401,F403
from research.optim.losses.fenchel_young import *  # noqa: F401,F403
from research.optim.losses.ranking import *  # noqa: F401,F403
from research.optim.losses.regression import *  # noqa: F401,F403
from research.optim.losses.segmentation import *  # noqa: F401,F403
from research.optim.losses.self_supervised import *  # noqa: F401,F403
