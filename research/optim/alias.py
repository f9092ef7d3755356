"""Optimizers by name: each is ``chain(scale_by_<algo>, [decay], scale_by_learning_rate)``.

Names, signatures, defaults and update rules follow Optax 0.2.8.
"""

from __future__ import annotations

from typing import Any, Optional

import jax

from research.optim import base
from research.optim import checks
from research.optim import transform

__all__ = [
    'sgd',
]


def sgd(
    learning_rate: base.ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Stochastic gradient descent, with optional (Nesterov) momentum.

  .. math::
    m_t = g_t + \mu m_{t-1}, \qquad
    \theta_t = \theta_{t-1} - \eta_t m_t \;
    (\text{Nesterov: } - \eta_t (g_t + \mu m_t))

  Args:
    learning_rate: ``eta``, a scalar or a schedule of the step count.
    momentum: ``mu`` in ``[0, 1)``; ``None`` for plain SGD.
    nesterov: use Nesterov momentum.
    accumulator_dtype: dtype of the momentum buffer.

  References:
    Robbins & Monro, A stochastic approximation method, 1951;
    Sutskever et al., On the importance of initialization and momentum in deep
    learning, 2013.
  """
  checks.check_learning_rate(learning_rate, 'sgd')
  checks.check_decay('momentum', momentum, fn='sgd')
  if momentum is not None:
    opt = transform.trace(
        decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
    )
  else:
    opt = base.identity()
  return base.chain(opt, transform.scale_by_learning_rate(learning_rate))
