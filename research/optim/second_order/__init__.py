"""Optax's ``second_order``: Hessian-vector products and diagonal curvature.

Deprecated in Optax 0.2.7 (to be removed in 0.2.9), and so here: each call
warns with a ``DeprecationWarning``. ``research.analysis`` has the maintained
Hessian tools.
"""

from research.optim.second_order.diagonal import *  # noqa: F401,F403
