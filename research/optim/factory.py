"""Optimizers from a config, by name, with their numbers in the state.

In the manner of big_vision's ``optax.make``: a study names an optimizer, a
learning-rate schedule and their arguments, and gets one
:class:`~research.optim.base.GradientTransformation`::

    tx = make('sgd', learning_rate=0.1, momentum=0.9, nesterov=True,
              weight_decay=1e-4, schedule='cyclic_cosine_schedule',
              schedule_kwargs=dict(total_steps=1200, num_cycles=5))

Every numeric (float) argument -- the learning rate (the schedule's base
value), momentum, betas, weight decay, float schedule arguments -- is held
in the optimizer state (:func:`~research.optim.inject.inject_hyperparams`),
and every call with the same name, schedule and non-numeric arguments
returns an *equal* transformation (same update function, an ``init`` that
compares equal). A jitted train step therefore compiles once for all
learning rates, momenta and schedule peaks: JAX's own jit cache sees the
same program. A grid of such runs stacks states that differ only in these
numbers (:func:`set_hyperparams_in`, ``research.train.state.create_replicas``)
and trains as one vmapped program.

Weight decay: an alias that takes ``weight_decay`` (adamw, lion, ...) gets
it; for any other, a non-zero ``weight_decay`` adds ``weight_decay * params``
to the gradient before the alias (coupled L2, as SGD with weight decay in
the papers of the studies).
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import alias as alias_lib
from research.optim import base
from research.optim import inject
from research.optim import schedules as schedules_lib

__all__ = ['make', 'optimizer_names', 'schedule_names', 'set_hyperparams_in',
           'hyperparams_of']

# Shortcuts the studies use besides the aliases' own names.
_SHORTCUTS = {
    'gd': ('sgd', {}),
    'momentum': ('sgd', dict(momentum=0.9)),
    'nesterov': ('sgd', dict(momentum=0.9, nesterov=True)),
}
_SCHEDULE_PREFIX = 'schedule_'


def _aliases() -> dict[str, Callable]:
  """Optimizers whose first argument is the learning rate: the aliases, the
  optimizers of ``contrib`` (muon, prodigy, schedule_free_adamw, ...),
  shampoo and soap."""
  # By module path: the package binds the names shampoo and soap to the
  # functions, and contrib imports this package.
  modules = [importlib.import_module(f'research.optim.{m}')
             for m in ('contrib', 'shampoo', 'soap')]
  out = {}
  for module in modules + [alias_lib]:
    for name in getattr(module, '__all__', None) or dir(module):
      fn = getattr(module, name)
      if name.startswith(('scale_by', '_')) or not inspect.isfunction(fn):
        continue
      params = list(inspect.signature(fn).parameters)
      if params[:1] == ['learning_rate']:
        out[name] = fn
  return out


def _schedules() -> dict[str, Callable]:
  return {name: getattr(schedules_lib, name) for name in schedules_lib.__all__
          if name.endswith('_schedule') or name in ('exponential_decay', 'sgdr_schedule')}


def optimizer_names() -> list[str]:
  """The names :func:`make` accepts."""
  return sorted(set(_aliases()) | set(_SHORTCUTS))


def schedule_names() -> list[str]:
  """The schedule names :func:`make` accepts (besides None: constant)."""
  return sorted(_schedules())


# Names a ``*_dtype`` argument (mu_dtype, nu_dtype, ...) may take; None
# keeps the params' dtype.
DTYPE_NAMES = ('float32', 'bfloat16', 'float16', 'float64')


def _check_dtype_args(name: str, kwargs: dict) -> None:
  for k, v in kwargs.items():
    if not k.endswith('_dtype') or v is None:
      continue
    try:
      ok = jnp.issubdtype(jnp.dtype(v), jnp.floating)
    except TypeError:
      ok = False
    if not ok:
      raise ValueError(f'{name}: {k}={v!r} is unknown; allowed: None (the params\' '
                       f'dtype), {", ".join(repr(d) for d in DTYPE_NAMES)}.')


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral))


def _freeze(v):
  """A hashable stand-in for a static argument (dicts and lists of numbers)."""
  if isinstance(v, dict):
    return ('dict', tuple(sorted((k, _freeze(x)) for k, x in v.items())))
  if isinstance(v, (list, tuple)):
    return ('seq', tuple(_freeze(x) for x in v))
  return v


# One injected transformation per structure: (name, schedule, static
# arguments, names of the numeric ones) -> the transformation built with the
# first values seen (later calls put their own values in the state).
_PROGRAMS: dict = {}


def _program(name: str, schedule: Optional[str], static: dict,
             numeric: dict) -> base.GradientTransformationExtraArgs:
  key = (name, schedule, tuple(sorted((k, _freeze(v)) for k, v in static.items())),
         tuple(sorted(numeric)))
  if key not in _PROGRAMS:
    _PROGRAMS[key] = _build_program(name, schedule, static, numeric)
  return _PROGRAMS[key]


def _build_program(name, schedule, static, numeric):
  alias_fn = _aliases()[name]
  takes_wd = 'weight_decay' in inspect.signature(alias_fn).parameters
  schedule_fn = _schedules()[schedule] if schedule else None

  def build(**kw):
    kw = dict(kw)
    lr = kw.pop('learning_rate')
    sched_kw = {k[len(_SCHEDULE_PREFIX):]: kw.pop(k) for k in list(kw)
                if k.startswith(_SCHEDULE_PREFIX)}
    wd = kw.pop('weight_decay', 0.0)
    if schedule_fn is not None:
      lr = schedule_fn(lr, **sched_kw)
    if takes_wd:
      return alias_fn(lr, weight_decay=wd, **kw)
    tx = alias_fn(lr, **kw)
    if 'weight_decay' in numeric:
      return base.chain(adding.add_decayed_weights(wd), tx)
    return tx

  names = list(static) + list(numeric)
  build.__signature__ = inspect.Signature(
      [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in names])
  build.__name__ = f'make_{name}'
  return inject.inject_hyperparams(build, static_args=tuple(static))(
      **static, **numeric)


class _Init:
  """``init`` of a shared program, then this call's numeric values.

  Two of them are equal when their programs are: the values are state, not
  program, so jit treats optimizers that differ only in numbers as one.
  """

  def __init__(self, program, values: dict):
    self.program, self.values = program, values

  def __call__(self, params):
    state = self.program.init(params)
    return state._replace(hyperparams={
        k: jnp.asarray(self.values.get(k, v), dtype=jnp.asarray(v).dtype)
        for k, v in state.hyperparams.items()})

  def __eq__(self, other):
    return isinstance(other, _Init) and other.program is self.program

  def __hash__(self):
    return hash(id(self.program))


def make(name: str, learning_rate: float, *, schedule: Optional[str] = None,
         schedule_kwargs: Optional[dict] = None, weight_decay: Optional[float] = None,
         **kwargs: Any) -> base.GradientTransformationExtraArgs:
  """The optimizer ``name`` (an alias of ``research.optim``, an optimizer of
  ``research.optim.contrib``, shampoo, soap, or 'gd', 'momentum',
  'nesterov') with its float arguments held in the state.

  Args:
    name: see :func:`optimizer_names`.
    learning_rate: the constant rate, or the schedule's first argument (its
      base or peak value).
    schedule: a schedule of ``research.optim`` by name (see
      :func:`schedule_names`), or None for a constant rate.
    schedule_kwargs: the schedule's other arguments; ints (steps, cycles)
      and dicts (boundaries) are part of the program, floats are state.
    weight_decay: given to aliases that take it (None: the alias's
      default), else coupled L2 before the alias (None or 0: none).
    **kwargs: the alias's own arguments; the moments' dtypes by name
      (``mu_dtype='bfloat16'``, ``nu_dtype=...`` where the alias has them).

  Returns:
    A transformation whose state is an ``InjectStatefulHyperparamsState``
    holding ``learning_rate``, ``weight_decay`` (if non-zero or taken by
    the alias), the float arguments and ``schedule_<arg>`` for float
    schedule arguments.
  """
  aliases = _aliases()
  if name in _SHORTCUTS:
    base_name, extra = _SHORTCUTS[name]
    kwargs = {**extra, **kwargs}
    name = base_name
  if name not in aliases:
    raise ValueError(f'optimizer name={name!r} is unknown; allowed: '
                     f'{", ".join(optimizer_names())}.')
  if schedule is not None and schedule not in _schedules():
    raise ValueError(f'schedule={schedule!r} is unknown; allowed: None (constant), '
                     f'{", ".join(schedule_names())}.')
  if not _is_number(learning_rate) or learning_rate < 0:
    raise ValueError(f'learning_rate={learning_rate!r} is invalid; allowed: a float >= 0.')
  params = inspect.signature(aliases[name]).parameters
  if weight_decay is None:
    weight_decay = params['weight_decay'].default if 'weight_decay' in params else 0.0
  if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
    raise TypeError(f'weight_decay={weight_decay!r} must be a float.')
  if weight_decay < 0:
    raise ValueError(f'weight_decay={weight_decay!r} is invalid; allowed: >= 0.')
  unknown = set(kwargs) - set(params)
  if unknown:
    raise ValueError(f'{name}: unknown argument(s) {sorted(unknown)}; allowed: '
                     f'{", ".join(p for p in params if p != "learning_rate")}.')
  _check_dtype_args(name, kwargs)
  if schedule_kwargs and schedule is None:
    raise ValueError(f'schedule_kwargs={schedule_kwargs!r} given without a schedule.')
  args = dict(kwargs, learning_rate=float(learning_rate))
  if weight_decay or 'weight_decay' in params:
    args['weight_decay'] = float(weight_decay)
  for k, v in (schedule_kwargs or {}).items():
    args[_SCHEDULE_PREFIX + k] = v
  numeric = {k: float(v) for k, v in args.items() if _is_number(v)}
  static = {k: v for k, v in args.items() if k not in numeric}
  program = _program(name, schedule, static, numeric)
  return base.GradientTransformationExtraArgs(_Init(program, numeric), program.update)


def _is_inject_state(node) -> bool:
  return hasattr(node, 'hyperparams_states') and hasattr(node, 'hyperparams')


def set_hyperparams_in(opt_state, **values):
  """``opt_state`` with injected hyperparameters replaced wherever their
  inject state sits in the tree (e.g. inside a chain or a stack of
  replicas, where a value may be a vector with one entry per replica)."""
  found = set()

  def visit(node):
    if not _is_inject_state(node):
      return node
    mine = {k: v for k, v in values.items() if k in node.hyperparams}
    found.update(mine)
    return inject.set_hyperparams(node, **mine) if mine else node

  out = jax.tree.map(visit, opt_state, is_leaf=_is_inject_state)
  missing = set(values) - found
  if missing:
    known = sorted({k for n in jax.tree.leaves(opt_state, is_leaf=_is_inject_state)
                    if _is_inject_state(n) for k in n.hyperparams})
    raise ValueError(f'set_hyperparams_in: {sorted(missing)} not injected in this '
                     f'state; allowed: {known}.')
  return out


def hyperparams_of(opt_state) -> dict:
  """The injected hyperparameters of a state (the first inject state found)."""
  for n in jax.tree.leaves(opt_state, is_leaf=_is_inject_state):
    if _is_inject_state(n):
      return dict(n.hyperparams)
  return {}
