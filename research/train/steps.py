"""Pure train and eval steps: ``train_step(state, batch, logged, spec)``.

A batch is a dict with ``x``, ``y`` and optionally ``mask`` (1 for a real
example, 0 for padding). Under ``pmap`` the steps get an ``axis_name`` and
average gradients, losses and BatchNorm statistics across devices; under
``jit`` (one device or sharded) the batch is global and nothing else changes.

The compiled program depends on the model (``state.apply_fn``), the optimizer
(``state.tx``) and the :class:`StepSpec` (loss, penalties, strategy, precision
policy) only: the run length, the log interval and the snapshot steps are not
in it. Whether a
step computes its diagnostics is the traced argument ``logged``, so runs of
any length share one compilation through JAX's own jit cache.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from research.train import losses
from research.train import precision as precision_lib

DROPOUT = 0  # purposes folded into the step key
MC_DROPOUT = 1

NONFINITE_CHECKS = ('grads', 'loss')
REPLICA_LOOPS = ('vmap', 'map')

# ``loss_fn(params, batch_stats, batch, rng) -> (loss, aux)``: ``aux`` is a
# dict; its ``batch_stats`` entry (if any) is the new BatchNorm state, its
# ``outputs`` entry (if any) the model outputs, every other scalar a metric.
LossFn = Callable[[Any, Any, dict, Optional[jax.Array]], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What the compiled step depends on besides the model and the optimizer.

  Hashable: it is a static argument of the jitted steps, so two Trainers with
  equal specs (and the same model and optimizer objects) share compilations.

  Attributes:
    loss: a built-in loss name (:data:`research.train.losses.LOSSES`) applied
      to the model outputs, or a :data:`LossFn` (compared by identity).
    l1, l2: penalty weights folded into a built-in loss (kernels only).
    axis_name: the pmap axis to average over, or None under jit.
    grad_norms: also report the gradient norm of every layer.
    nonfinite_check: 'grads' checks the loss and every gradient entry at
      every step (:func:`nonfinite_probe`); 'loss' checks the loss only, and
      the gradients only at logged steps.
    replicas: the state carries a leading replica axis (a grid of seeds and
      hyperparameters trained at once on the same batches).
    replica_loop: how a replicated step runs its replicas: 'vmap' batches
      them into one computation; 'map' runs them one after another inside
      the same program (``lax.map``). 'map' is for optimizers with a
      data-dependent branch (SOAP's basis refresh): under vmap a
      ``lax.cond`` or ``lax.switch`` on a per-replica value computes every
      branch at every step.
    precision: the policy (:data:`research.train.precision.POLICIES`): the
      params and inputs are cast to its compute dtype inside the step.
    loss_scaling: dynamic loss scaling with ``state.loss_scale`` (required
      by 'float16'); its overflowing steps are skipped by the guard.
  """

  loss: Union[str, LossFn] = 'cross_entropy'
  l1: float = 0.0
  l2: float = 0.0
  axis_name: Optional[str] = None
  grad_norms: bool = False
  nonfinite_check: str = 'grads'
  replicas: bool = False
  replica_loop: str = 'vmap'
  precision: str = 'float32'
  loss_scaling: bool = False

  def __post_init__(self):
    if self.replica_loop not in REPLICA_LOOPS:
      raise ValueError(f'replica_loop={self.replica_loop!r} is invalid; allowed: '
                       + ', '.join(repr(x) for x in REPLICA_LOOPS) + '.')
    precision_lib.uses_loss_scaling(
        self.precision, 'dynamic' if self.loss_scaling else 'none')
    if isinstance(self.loss, str):
      losses.get_loss(self.loss)  # unknown names fail here
    elif not callable(self.loss):
      raise TypeError(f'loss={self.loss!r} must be a loss name '
                      f'({", ".join(losses.LOSSES)}) or a callable.')
    elif self.l1 or self.l2:
      raise ValueError('l1/l2 apply to the built-in losses only; add the penalty '
                       'to your loss_fn instead.')
    if self.nonfinite_check not in NONFINITE_CHECKS:
      raise ValueError(f'nonfinite_check={self.nonfinite_check!r} is unknown; allowed: '
                       f'{", ".join(NONFINITE_CHECKS)}.')
    for name in ('l1', 'l2'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name}={getattr(self, name)!r} is invalid; allowed: >= 0.')

  @property
  def classify(self) -> bool:
    return self.loss == 'cross_entropy'


def path_name(path) -> str:
  """``(DictKey('Dense_0'), DictKey('kernel'))`` -> ``'Dense_0/kernel'``."""
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def layer_grad_norms(grads) -> dict:
  """L2 norm of the gradient of every leaf, keyed by its path."""
  return {
      path_name(p): jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
      for p, g in jax.tree_util.tree_leaves_with_path(grads)
  }


def learning_rate_of(opt_state) -> Optional[jax.Array]:
  """The learning rate held in an ``inject_hyperparams`` state, if any."""
  found = []

  def visit(node):
    hp = getattr(node, 'hyperparams', None)
    if isinstance(hp, dict) and 'learning_rate' in hp:
      found.append(hp['learning_rate'])
    return node

  jax.tree.map(visit, opt_state, is_leaf=lambda n: hasattr(n, 'hyperparams'))
  return found[0] if found else None


def _grad_sq(tree) -> jax.Array:
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


# Leaves of one size and dtype with at most this many entries each are
# checked together, at most PROBE_GROUP_MAX_COUNT at a time; larger ones are
# reduced alone.
PROBE_GROUP_MAX_SIZE = 1 << 16
PROBE_GROUP_MAX_COUNT = 64


def nonfinite_probe(tree) -> jax.Array:
  """``sum(x * 0)`` over every entry: exactly 0 if all are finite, else NaN.

  ``0 * inf`` and ``0 * nan`` are NaN and NaN survives any sum, while finite
  entries add exact zeros, so the test has no overflow (unlike a squared
  norm). It is also cheaper for XLA on CPU: 40 scanned steps of the MNIST-1D
  MLP, timed alternately against a hand-written loop, ran at 0.84x its speed
  with the squared norm as the check and 0.93x with this probe (0.94x with no
  gradient check at all). The squared norm is computed on logged steps only.
  The result is float32.

  Leaves of one size and dtype (each at most :data:`PROBE_GROUP_MAX_SIZE`
  entries) are flattened and added elementwise, ``x1 * 0 + x2 * 0 + ...``
  (at most :data:`PROBE_GROUP_MAX_COUNT` at a time, as a balanced tree), and
  only that sum is reduced; larger leaves are reduced alone. XLA on CPU
  makes each small reduction an op of its own (on the 102-leaf deep_mlp of
  ``experiments/benchmarks/train_throughput.py``, 50 Dense(64) layers, the
  Trainer ran at 0.84-0.94x the hand-written loop with one reduction per
  leaf). Stacking the leaves of one shape and reducing the stack once
  copied them first: on deep_mlp's tree, in a jit + scan, that probe took
  132 us per step, this one 88 us; in the Trainer the two are within the
  run-to-run noise (+-5 %) at batch 10 and 100. Concatenating all small
  leaves of a dtype made XLA split the MNIST-1D MLP's step badly (0.28x).
  """
  groups, total = {}, jnp.zeros((), jnp.float32)
  for x in jax.tree.leaves(tree):
    x = jnp.asarray(x)
    zero = x * jnp.zeros((), x.dtype)
    if x.size > PROBE_GROUP_MAX_SIZE:
      total = total + jnp.sum(zero).astype(jnp.float32)
    else:
      groups.setdefault((x.size, x.dtype), []).append(zero.reshape(-1))
  for zeros in groups.values():
    for i in range(0, len(zeros), PROBE_GROUP_MAX_COUNT):
      part = jax.tree.reduce_associative(operator.add, zeros[i:i + PROBE_GROUP_MAX_COUNT])
      total = total + jnp.sum(part).astype(jnp.float32)
  return total


def _mask(batch) -> jax.Array:
  if 'mask' in batch:
    return batch['mask'].astype(jnp.float32)
  return jnp.ones((batch['x'].shape[0],), jnp.float32)


def _call_kwargs(apply_fn) -> tuple[bool, bool]:
  """(takes ``train=``, is a Flax ``apply``): how to call the model."""
  module = getattr(apply_fn, '__self__', None)
  is_flax = module is not None and hasattr(module, 'init') and hasattr(module, 'apply')
  fn = type(module).__call__ if is_flax else apply_fn
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False, is_flax
  takes_train = 'train' in params or any(
      p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  return takes_train, is_flax


def apply_model(apply_fn, variables, x, *, train: bool, rng=None):
  """``(outputs, new_batch_stats or None)`` for a Flax ``apply`` or a plain
  ``apply_fn(variables, x)``; ``train=`` is passed only where it is taken."""
  takes_train, is_flax = _call_kwargs(apply_fn)
  kwargs = dict(train=train) if takes_train else {}
  if not is_flax:
    return apply_fn(variables, x, **kwargs), None
  if train and 'batch_stats' in variables:
    out, new_vars = apply_fn(variables, x, rngs={'dropout': rng}, mutable=['batch_stats'],
                             **kwargs)
    return out, new_vars['batch_stats']
  rngs = {'dropout': rng} if (train and rng is not None) else None
  return apply_fn(variables, x, rngs=rngs, **kwargs), None


def model_loss(apply_fn, name: str = 'cross_entropy', l1: float = 0.0,
               l2: float = 0.0, precision: str = 'float32') -> LossFn:
  """The built-in :data:`LossFn`: a named per-example loss of the model's
  outputs, averaged over the batch's mask, plus ``l2 sum ||W||^2 / 2 + l1
  sum |W|`` over kernels. ``aux`` holds the data loss, outputs and the new
  BatchNorm statistics. Under a ``precision`` policy the model sees params
  and inputs in its compute dtype; the loss and penalties are float32."""
  per_example = losses.get_loss(name)
  policy = precision_lib.get_policy(precision)

  def loss_fn(params, batch_stats, batch, rng):
    variables = {'params': policy.cast_to_compute(params)}
    if batch_stats:
      variables['batch_stats'] = batch_stats
    outputs, new_stats = apply_model(apply_fn, variables, policy.cast_to_compute(batch['x']),
                                     train=True, rng=rng)
    data_loss = losses.masked_mean(per_example(outputs, batch['y']), _mask(batch))
    total = data_loss
    if l2:
      total = total + l2 * losses.l2_penalty(params)
    if l1:
      total = total + l1 * losses.l1_penalty(params)
    aux = dict(loss=data_loss, outputs=outputs)
    if new_stats is not None:
      aux['batch_stats'] = new_stats
    return total, aux

  return loss_fn


def _loss_fn(state, spec: StepSpec) -> LossFn:
  """The spec's loss under its precision policy (a custom loss gets its
  params and ``batch['x']`` cast to the compute dtype)."""
  if isinstance(spec.loss, str):
    return model_loss(state.apply_fn, spec.loss, spec.l1, spec.l2, spec.precision)
  policy = precision_lib.get_policy(spec.precision)
  if policy.compute_dtype is None:
    return spec.loss

  def cast_loss(params, batch_stats, batch, rng):
    batch = dict(batch, x=policy.cast_to_compute(batch['x']))
    return spec.loss(policy.cast_to_compute(params), batch_stats, batch, rng)
  return cast_loss


def loss_and_grads(state, batch, key, spec: StepSpec = StepSpec()):
  """``(objective, aux, grads)`` of the spec's loss at ``state.params``.

  The gradients have the params' dtype (float32 master params under the
  mixed policies); with loss scaling they are computed for the scaled loss
  and divided by the scale (an overflow shows as inf or NaN).
  """
  loss_fn = _loss_fn(state, spec)
  args = (state.params, state.batch_stats, batch, key)
  if not spec.loss_scaling:
    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(*args)
    return total, aux, grads
  if state.loss_scale is None:
    raise ValueError('StepSpec(loss_scaling=True) needs state.loss_scale; use '
                     'research.train.precision.prepare_state(state, True).')
  scale = state.loss_scale.scale

  def scaled(*a):
    total, aux = loss_fn(*a)
    return total.astype(jnp.float32) * scale, (total, aux)

  (_, (total, aux)), grads = jax.value_and_grad(scaled, has_aux=True)(*args)
  grads = jax.tree.map(lambda g: (g / scale).astype(g.dtype), grads)
  return total, aux, grads


def _train_step(state, batch, logged, spec: StepSpec):
  key = state.step_key(DROPOUT)
  if spec.axis_name is not None:  # a different dropout mask on each device
    key = jax.random.fold_in(key, jax.lax.axis_index(spec.axis_name))
  total, aux, grads = loss_and_grads(state, batch, key, spec)
  aux = dict(aux)
  batch_stats = aux.pop('batch_stats', state.batch_stats)
  outputs = aux.pop('outputs', None)
  data_loss = aux.pop('loss', total)
  if spec.axis_name is not None:
    grads = jax.lax.pmean(grads, spec.axis_name)
    batch_stats = jax.lax.pmean(batch_stats, spec.axis_name)
  classify = spec.classify and outputs is not None

  def diagnostics(_):
    d = dict(grad_sq=_grad_sq(grads))
    if classify:
      d['accuracy'] = losses.masked_mean(losses.correct(outputs, batch['y']), _mask(batch))
    if spec.grad_norms:
      d['layer_grad_norms'] = layer_grad_norms(grads)
    return d

  shapes = jax.eval_shape(diagnostics, None)
  diag = jax.lax.cond(logged, diagnostics,
                      lambda _: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes),
                      None)
  # Under 'loss', the squared norm (0 on steps not logged) checks the
  # gradients where it is computed; loss scaling checks them at every step.
  probe = (nonfinite_probe(grads) if spec.nonfinite_check == 'grads' or spec.loss_scaling
           else diag['grad_sq'])
  metrics = dict(loss=data_loss, objective=total)
  metrics.update({k: v for k, v in aux.items() if jnp.ndim(v) == 0})
  if classify:
    metrics['accuracy'] = diag['accuracy']
  if spec.axis_name is not None:
    metrics = jax.lax.pmean(metrics, spec.axis_name)
  finite = jnp.isfinite(metrics['objective']) & jnp.isfinite(probe)

  def apply():
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), state.params, updates)
    return params, opt_state, batch_stats, learning_rate_of(opt_state)

  def skip():
    return state.params, state.opt_state, state.batch_stats, learning_rate_of(state.opt_state)

  # lax.cond, not jnp.where(finite, new, old): with a select XLA recomputes
  # the new optimizer state inside the parameter update and copies the old
  # state to keep it alive (12 extra copies per step for Adam on the MLP;
  # 40 scanned steps ran 0.87x a hand-written loop with the select, 0.95x
  # with the cond). Under vmap (replicas) the cond becomes a select again,
  # per replica.
  params, opt_state, batch_stats, lr = jax.lax.cond(finite, apply, skip)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            batch_stats=batch_stats)
  overflow = None
  if spec.loss_scaling:  # an overflow with a finite loss is the scaler's business
    new_state = new_state.replace(
        loss_scale=precision_lib.update_loss_scale(state.loss_scale, finite))
    overflow = (~finite & jnp.isfinite(metrics['objective'])
                & (state.loss_scale.scale > precision_lib.MIN_SCALE))
    metrics['loss_scale'] = state.loss_scale.scale
    metrics['overflow'] = overflow.astype(jnp.float32)
  metrics['grad_norm'] = jnp.sqrt(diag['grad_sq'])
  if lr is not None:  # the rate applied at this step (the last one, if skipped)
    metrics['learning_rate'] = jnp.asarray(lr, jnp.float32)
  # Skipped and not an overflow the loss scale can still absorb: the
  # Trainer counts these (max_nonfinite_in_row).
  metrics['nonfinite'] = (~finite if overflow is None else ~finite & ~overflow).astype(
      jnp.float32)
  if spec.grad_norms:
    metrics['layer_grad_norms'] = diag['layer_grad_norms']
  return new_state, metrics


def train_step(state, batch, logged, spec: StepSpec = StepSpec()):
  """One step: ``(state, metrics)``; ``logged`` (a traced bool) asks for the
  diagnostics (accuracy, gradient norms; 0 otherwise). A step found
  non-finite leaves the state unchanged except for ``step`` and reports
  ``nonfinite = 1``. With ``spec.replicas`` the state has a leading replica
  axis and every replica trains on the same batch (vmapped, or one after
  another with ``spec.replica_loop='map'``).

  The metrics hold ``loss`` (the data loss), ``objective`` (with penalties),
  ``nonfinite``, ``learning_rate`` (under ``inject_hyperparams``) and the
  scalar entries of a custom loss's ``aux`` at every step, and ``grad_norm``,
  ``accuracy`` and ``layer_grad_norms`` (if asked) at logged steps. With
  loss scaling, ``loss_scale`` (the scale this step used) and ``overflow``
  (1: skipped and the scale halved; not counted as ``nonfinite``).
  """
  if spec.replicas and spec.replica_loop == 'map':
    return jax.lax.map(lambda s: _train_step(s, batch, logged, spec), state)
  if spec.replicas:
    return jax.vmap(_train_step, in_axes=(0, None, None, None))(state, batch, logged, spec)
  return _train_step(state, batch, logged, spec)


def make_train_step(loss: Union[str, LossFn] = 'cross_entropy', **spec_fields):
  """``train_step(state, batch, logged=True)`` for a :class:`StepSpec`.

  A convenience for hand-written loops; the Trainer calls :func:`train_step`
  with its spec as a static argument.
  """
  spec = StepSpec(loss=loss, **spec_fields)

  def step(state, batch, logged=True):
    return train_step(state, batch, jnp.asarray(logged), spec)

  return step


def _eval_step(state, batch, spec: StepSpec):
  mask = _mask(batch)
  policy = precision_lib.get_policy(spec.precision)
  if isinstance(spec.loss, str):
    variables = dict(state.variables, params=policy.cast_to_compute(state.params))
    outputs, _ = apply_model(state.apply_fn, variables, policy.cast_to_compute(batch['x']),
                             train=False)
    per_example = losses.get_loss(spec.loss)(outputs, batch['y'])
    sums = dict(loss_sum=jnp.sum(per_example * mask), count=jnp.sum(mask))
    if spec.classify:
      sums['correct'] = jnp.sum(losses.correct(outputs, batch['y']) * mask)
  else:  # a custom loss: its batch mean, weighted by the batch's count
    loss, aux = _loss_fn(state, spec)(state.params, state.batch_stats, batch, None)
    count = jnp.sum(mask)
    sums = dict(loss_sum=aux.get('loss', loss) * count, count=count)
    if 'accuracy' in aux:
      sums['correct'] = aux['accuracy'] * count
  if spec.axis_name is not None:
    sums = jax.lax.psum(sums, spec.axis_name)
  return sums


def eval_step(state, batch, spec: StepSpec = StepSpec()):
  """Sums (not means) of loss, correct and count over the batch, so that
  batches, devices and hosts add up exactly and padded examples (mask 0)
  count for nothing."""
  if spec.replicas:
    return jax.vmap(_eval_step, in_axes=(0, None, None))(state, batch, spec)
  return _eval_step(state, batch, spec)


def make_eval_step(loss: Union[str, LossFn] = 'cross_entropy', **spec_fields):
  """``eval_step(state, batch) -> sums`` for a :class:`StepSpec`."""
  spec = StepSpec(loss=loss, **spec_fields)
  return lambda state, batch: eval_step(state, batch, spec)


def summarize_eval(sums: dict) -> dict:
  """Sums over all batches -> mean loss and accuracy (per replica if stacked)."""
  count = np.asarray(sums['count'], np.float64)
  denom = np.maximum(count, 1.0)
  out = dict(loss=np.asarray(sums['loss_sum'], np.float64) / denom, count=count)
  if 'correct' in sums:
    out['accuracy'] = np.asarray(sums['correct'], np.float64) / denom
  return {k: float(v) if np.ndim(v) == 0 else v.tolist() for k, v in out.items()}
