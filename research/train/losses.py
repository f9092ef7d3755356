"""Per-example losses, penalties and the metrics a step reports.

Each loss maps ``(outputs, targets) -> per-example loss``; steps average it
with a mask so that padded evaluation examples count for nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``-log softmax(logits)[label]`` per example, for integer labels."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def mean_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """``mean_j (outputs_j - targets_j)^2`` per example."""
  outputs = outputs.astype(jnp.float32)
  targets = jnp.reshape(targets, outputs.shape).astype(jnp.float32)
  err = jnp.square(outputs - targets)
  return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)


LOSSES = {
    'cross_entropy': softmax_cross_entropy,
    'mse': mean_squared_error,
}


def get_loss(name: str):
  if name not in LOSSES:
    raise ValueError(f'loss={name!r} is unknown; allowed: {", ".join(LOSSES)}.')
  return LOSSES[name]


def is_weight(path, leaf) -> bool:
  """Penalties apply to kernels (ndim >= 2), not to biases or norm scales."""
  del path
  return jnp.ndim(leaf) >= 2


def l2_penalty(params) -> jax.Array:
  """``sum ||W||^2 / 2`` over kernels (the L2 term whose gradient is ``W``)."""
  leaves = [x for p, x in jax.tree_util.tree_leaves_with_path(params) if is_weight(p, x)]
  return sum((0.5 * jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves), jnp.zeros(()))


def l1_penalty(params) -> jax.Array:
  """``sum |W|`` over kernels."""
  leaves = [x for p, x in jax.tree_util.tree_leaves_with_path(params) if is_weight(p, x)]
  return sum((jnp.sum(jnp.abs(x.astype(jnp.float32))) for x in leaves), jnp.zeros(()))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1.0 where the arg-max class is the label."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
