"""Per-example gradient clipping, the step of differentially private SGD.

The gradients carry a leading batch axis (one gradient per example, from
``jax.vmap(jax.grad(loss))``); each example is clipped, then the clipped
gradients are summed. Names follow Optax 0.2.8.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from research.optim import tree as otu

__all__ = ['per_example_global_norm_clip', 'per_example_layer_norm_clip']


def _check_batch_axis(grads, fn):
  leaves = jax.tree.leaves(grads)
  batch = leaves[0].shape[0] if leaves and leaves[0].ndim else None
  if batch is None or any(g.ndim < 1 or g.shape[0] != batch for g in leaves):
    raise ValueError(
        f'{fn}: expects every leaf of grads to have the same batch size on '
        f'axis 0 (one gradient per example); got shapes '
        f'{jax.tree.map(jnp.shape, grads)}.'
    )


def per_example_global_norm_clip(grads: Any, l2_norm_clip) -> tuple[Any, jax.Array]:
  r"""Clips each example's gradient to global L2 norm ``C``, then sums them.

  .. math::
    g \leftarrow \sum_i \min(1, C / \|g_i\|)\, g_i

  (an example with a zero gradient counts as unclipped).

  Args:
    grads: per-example gradients, each leaf with the batch on axis 0.
    l2_norm_clip: ``C``.

  Returns:
    ``(sum of the clipped gradients, number of examples clipped)``.

  References:
    Abadi et al., Deep learning with differential privacy, 2016.
  """
  _check_batch_axis(grads, 'per_example_global_norm_clip')
  norms = jax.vmap(otu.tree_norm)(grads)
  factors = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
  clipped = jax.tree.map(lambda g: jnp.tensordot(factors, g, axes=1), grads)
  return clipped, jnp.sum(factors < 1.0)


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip, uniform: bool = True
) -> tuple[Any, Any]:
  r"""Clips each example's gradient leaf by leaf, then sums them.

  Leaf ``k`` of ``K`` gets the clip norm ``C_k = C / sqrt(K)`` (``uniform``) or
  ``C sqrt(D_k / D)`` with ``D_k`` its size per example and ``D`` the total;
  since ``sum_k C_k^2 = C^2`` the whole gradient stays within ``C``.

  Args:
    grads: per-example gradients, each leaf with the batch on axis 0.
    global_l2_norm_clip: ``C``.
    uniform: the same clip norm for every leaf, else proportional to the root
      of its size.

  Returns:
    ``(sum of the clipped gradients, number clipped per leaf)``, both trees
    with the structure of ``grads``.

  References:
    McMahan et al., Learning differentially private recurrent language
    models, 2018.
  """
  _check_batch_axis(grads, 'per_example_layer_norm_clip')
  if uniform:
    share = lambda g: 1.0 / len(jax.tree.leaves(grads))  # noqa: E731
  else:
    total = sum(g[0].size for g in jax.tree.leaves(grads))
    share = lambda g: g[0].size / total  # noqa: E731
  pairs = jax.tree.map(
      lambda g: per_example_global_norm_clip(g, global_l2_norm_clip * share(g) ** 0.5),
      grads,
  )
  return jax.tree.transpose(
      jax.tree.structure(grads), jax.tree.structure((0, 0)), pairs
  )
