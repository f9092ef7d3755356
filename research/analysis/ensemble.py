"""Ensembles evaluated at once: snapshot ensembles, independent ensembles and
MC-dropout samples, with their metrics (error, NLL, ECE, Brier, disagreement).

A stack of M parameter sets is one pytree whose leaves carry a leading member
axis (:func:`stack_trees`), so that one ``jax.vmap`` evaluates every member:

    stacked = stack_trees([snap for _, snap in fit_result.snapshots])
    probs = ensemble_predict(model.apply, stacked, x_test, batch_size=1000)
    curve = ensemble_curve(probs, y_test)   # metrics of the last m, m = 1..M

Training N seeds (and hyperparameters) at once is the same idea on the
train state: ``research.train.state.create_replicas`` and the Trainer.

Every function here is pure; metrics take softmax probabilities ``(N, C)``
and integer labels ``(N,)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from research.models import layers as model_layers

__all__ = [
    'brier_score',
    'classification_metrics',
    'ensemble_curve',
    'ensemble_predict',
    'error_rate',
    'expected_calibration_error',
    'map_in_batches',
    'mc_dropout_predict',
    'negative_log_likelihood',
    'pairwise_disagreement',
    'stack_trees',
    'unstack_tree',
]

MC_DROPOUT_STREAM = model_layers.MC_DROPOUT_STREAM  # 'mc_dropout'
ECE_BINS = 15


# --- stacks of pytrees --------------------------------------------------------


def stack_trees(trees: Sequence[Any]) -> Any:
  """``[t_1, ..., t_M]`` -> one pytree whose leaves have a leading axis M.

  Static fields (a TrainState's ``apply_fn``, ``tx``) are taken from the
  trees, which must all have the same structure.
  """
  trees = list(trees)
  if not trees:
    raise ValueError('stack_trees: trees is empty; give at least one pytree.')
  first = jax.tree.structure(trees[0])
  for i, t in enumerate(trees[1:], start=1):
    if jax.tree.structure(t) != first:
      raise ValueError(
          f'stack_trees: tree {i} has structure {jax.tree.structure(t)}, '
          f'tree 0 has {first}; all trees must have the same structure.')
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree: Any) -> list:
  """The inverse of :func:`stack_trees`: a list of M pytrees."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError('unstack_tree: the tree has no leaves.')
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        f'unstack_tree: leaves have leading sizes {sorted(map(str, sizes))}; '
        'all leaves need the same leading (member) axis.')
  (m,) = sizes
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(m)]


# --- evaluation ---------------------------------------------------------------


def _check_batch_size(batch_size):
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ValueError(f'batch_size={batch_size!r} must be None or an int >= 1.')


def map_in_batches(fn: Callable, x: Any, batch_size: Optional[int] = None) -> Any:
  """``fn`` over the leading axis of ``x`` in batches of ``batch_size``.

  ``x`` (an array or a pytree of arrays with a common leading size N) is
  padded to a multiple of the batch size by repeating its last example, the
  batches run under ``lax.map`` (one compiled body, memory of one batch), and
  the padded rows are dropped. ``fn`` maps a batch ``(B, ...)`` to outputs
  with leading size B. ``batch_size=None`` calls ``fn`` once on all of ``x``.
  Traceable: call it inside ``jax.jit``.
  """
  _check_batch_size(batch_size)
  n = jax.tree.leaves(x)[0].shape[0]
  if batch_size is None or batch_size >= n:
    return fn(x)
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n

  def to_batches(a):
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1), mode='edge')
    return a.reshape((num_batches, batch_size) + a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(to_batches, x))
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def _nonempty(variables: dict) -> dict:
  # A Trainer snapshot of a model without BatchNorm has batch_stats == {}.
  return {k: v for k, v in variables.items() if jax.tree.leaves(v)}


def _softmax(logits):
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'batch_size'))
def _ensemble(stacked_variables, x, apply_fn, batch_size):
  def member(variables, xb):
    return _softmax(apply_fn(variables, xb, train=False))

  def batch(xb):  # (B, ...) -> (B, M, C): the batch axis first for map
    probs = jax.vmap(member, in_axes=(0, None))(stacked_variables, xb)
    return jnp.moveaxis(probs, 0, 1)

  return jnp.moveaxis(map_in_batches(batch, x, batch_size), 1, 0)


def ensemble_predict(
    apply_fn: Callable,
    stacked_variables: dict,
    x: jax.Array,
    *,
    batch_size: Optional[int] = None,
) -> jax.Array:
  r"""Softmax probabilities of every member of a stacked ensemble.

  .. math::
    p_{m,n} = \mathrm{softmax}(f(x_n; \theta_m)), \quad m = 1..M

  with the model in evaluation mode (``train=False``: BatchNorm uses each
  member's own running statistics, no dropout). Members are evaluated at once
  with ``jax.vmap``; examples in batches of ``batch_size``.

  Args:
    apply_fn: ``apply_fn(variables, x, train=False) -> logits`` (a Flax
      ``model.apply``).
    stacked_variables: ``{'params': ..., ['batch_stats': ...]}`` whose leaves
      have a leading member axis M (see :func:`stack_trees`).
    x: inputs ``(N, ...)``.
    batch_size: examples per evaluation batch, or None for all at once.

  Returns:
    Probabilities ``(M, N, C)`` in float32.

  References:
    Huang et al., Snapshot ensembles: train 1, get M for free, 2017;
    Lakshminarayanan et al., Simple and scalable predictive uncertainty
    estimation using deep ensembles, 2017.
  """
  _check_batch_size(batch_size)
  return _ensemble(_nonempty(dict(stacked_variables)), x, apply_fn=apply_fn,
                   batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'num_samples', 'batch_size'))
def _mc_dropout(variables, x, key, apply_fn, num_samples, batch_size):
  keys = jax.random.split(key, num_samples)

  def sample(k, xb, index):
    k = jax.random.fold_in(k, index)  # fresh masks in every batch
    logits = apply_fn(variables, xb, train=False, mc_dropout=True,
                      rngs={MC_DROPOUT_STREAM: k})
    return _softmax(logits)

  def batch(args):
    xb, index = args
    probs = jax.vmap(sample, in_axes=(0, None, None))(keys, xb, index[0])
    return jnp.moveaxis(probs, 0, 1)

  n = x.shape[0]
  size = n if batch_size is None else min(batch_size, n)
  index = jnp.arange(n, dtype=jnp.int32) // size  # the batch of each example
  return jnp.moveaxis(map_in_batches(batch, (x, index), batch_size), 1, 0)


def mc_dropout_predict(
    apply_fn: Callable,
    variables: dict,
    x: jax.Array,
    key: jax.Array,
    num_samples: int,
    *,
    batch_size: Optional[int] = None,
) -> jax.Array:
  r"""Softmax probabilities of ``num_samples`` MC-dropout networks.

  .. math::
    p_{s,n} = \mathrm{softmax}(f(x_n; \theta, z_s)), \quad
    z_s \sim \mathrm{dropout\ masks}, \; s = 1..S

  The model runs with ``train=False, mc_dropout=True`` (BatchNorm in
  inference mode, dropout active) and draws its masks from the
  ``'mc_dropout'`` stream (``research.models``); sample ``s`` uses
  ``split(key, S)[s]`` folded with the batch index, so the masks, but not
  their distribution, depend on ``batch_size``. Samples run at once with
  ``jax.vmap`` over keys.

  Args:
    apply_fn: ``apply_fn(variables, x, train=False, mc_dropout=True,
      rngs={'mc_dropout': key}) -> logits``.
    variables: one model's ``{'params', ['batch_stats']}``.
    x: inputs ``(N, ...)``.
    key: a PRNG key.
    num_samples: S >= 1.
    batch_size: examples per batch, or None for all at once.

  Returns:
    Probabilities ``(S, N, C)`` in float32.

  References:
    Gal & Ghahramani, Dropout as a Bayesian approximation: representing model
    uncertainty in deep learning, 2016.
  """
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f'num_samples={num_samples!r} must be an int >= 1.')
  _check_batch_size(batch_size)
  return _mc_dropout(_nonempty(dict(variables)), x, key, apply_fn=apply_fn,
                     num_samples=num_samples, batch_size=batch_size)


# --- metrics ------------------------------------------------------------------


@jax.jit
def error_rate(probs: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Fraction of examples whose arg-max class is not the label."""
  return jnp.mean((jnp.argmax(probs, axis=-1) != labels).astype(jnp.float32))


@jax.jit
def negative_log_likelihood(probs: jax.Array, labels: jax.Array,
                            eps: float = 1e-12) -> jax.Array:
  r"""Mean negative log-likelihood of the labels, probabilities clipped.

  .. math::
    \mathrm{NLL} = -\frac{1}{N} \sum_n \log \max(p_{n, y_n}, \epsilon)

  The clip keeps a confidently wrong example (probability 0 in float32)
  finite.
  """
  p = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return -jnp.mean(jnp.log(jnp.clip(p.astype(jnp.float32), eps, 1.0)))


@functools.partial(jax.jit, static_argnames='num_bins')
def expected_calibration_error(probs: jax.Array, labels: jax.Array,
                               num_bins: int = ECE_BINS) -> jax.Array:
  r"""Expected calibration error over equal-width confidence bins.

  With confidence :math:`c_n = \max_k p_{n,k}`, prediction
  :math:`\hat y_n = \arg\max_k p_{n,k}` and bins
  :math:`B_b = \{n : c_n \in ((b-1)/K, b/K]\}`, :math:`b = 1..K`:

  .. math::
    \mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,
      \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|
    = \frac{1}{N} \sum_b \Big|\sum_{n \in B_b} ([\hat y_n = y_n] - c_n)\Big|

  Args:
    probs: ``(N, C)`` probabilities.
    labels: ``(N,)`` integer labels.
    num_bins: K, 15 as in Guo et al.

  References:
    Guo et al., On calibration of modern neural networks, 2017; Naeini et
    al., Obtaining well calibrated probabilities using Bayesian binning, 2015.
  """
  if not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f'num_bins={num_bins!r} must be an int >= 1.')
  confidence = jnp.max(probs, axis=-1).astype(jnp.float32)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
  # Bin b (0-based) holds confidences in (b/K, (b+1)/K].
  bins = jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1
  bins = jnp.clip(bins, 0, num_bins - 1)
  gap = jax.ops.segment_sum(correct - confidence, bins, num_segments=num_bins)
  return jnp.sum(jnp.abs(gap)) / confidence.shape[0]


@jax.jit
def brier_score(probs: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Mean over examples of the squared distance to the one-hot label.

  .. math::
    \mathrm{BS} = \frac{1}{N} \sum_n \sum_k (p_{n,k} - [y_n = k])^2

  References:
    Brier, Verification of forecasts expressed in terms of probability, 1950.
  """
  onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(probs.astype(jnp.float32) - onehot), axis=-1))


@jax.jit
def classification_metrics(probs: jax.Array, labels: jax.Array) -> dict:
  """``{'error', 'nll', 'ece', 'brier'}`` of ``(N, C)`` probabilities."""
  return dict(
      error=error_rate(probs, labels),
      nll=negative_log_likelihood(probs, labels),
      ece=expected_calibration_error(probs, labels),
      brier=brier_score(probs, labels),
  )


@jax.jit
def ensemble_curve(probs: jax.Array, labels: jax.Array) -> dict:
  r"""Metrics of the ensembles of the last m members, m = 1..M, and of each member.

  .. math::
    \bar p^{(m)} = \frac{1}{m} \sum_{i=M-m+1}^{M} p_i

  (averaged softmax). With members in training order (snapshots), entry
  ``m - 1`` is the snapshot ensemble of the last m snapshots.

  Args:
    probs: ``(M, N, C)`` member probabilities (:func:`ensemble_predict`).
    labels: ``(N,)`` integer labels.

  Returns:
    ``{'ensemble': metrics, 'members': metrics}``, each a dict of
    ``(M,)`` arrays (see :func:`classification_metrics`); ``ensemble[k]`` is
    the ensemble of size ``k + 1``, ``members[k]`` member ``k`` alone.

  References:
    Huang et al., Snapshot ensembles: train 1, get M for free, 2017.
  """
  m = probs.shape[0]
  sizes = jnp.arange(1, m + 1, dtype=jnp.float32)[:, None, None]
  averaged = jnp.cumsum(probs[::-1].astype(jnp.float32), axis=0) / sizes
  per_set = jax.vmap(classification_metrics, in_axes=(0, None))
  return dict(ensemble=per_set(averaged, labels), members=per_set(probs, labels))


@jax.jit
def pairwise_disagreement(probs: jax.Array) -> jax.Array:
  r"""``D[i, j]``: fraction of examples where members i and j predict different classes.

  .. math::
    D_{ij} = \frac{1}{N} \sum_n [\arg\max_k p_{i,n,k} \ne \arg\max_k p_{j,n,k}]

  Symmetric with a zero diagonal; ``probs`` is ``(M, N, C)``.

  References:
    Fort et al., Deep ensembles: a loss landscape perspective, 2019.
  """
  predictions = jnp.argmax(probs, axis=-1)
  differ = predictions[:, None, :] != predictions[None, :, :]
  return jnp.mean(differ.astype(jnp.float32), axis=-1)
