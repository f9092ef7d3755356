"""Which kernels the max-norm constraint applies to.

The projection itself is an optimizer transform,
``research.optim.max_norm(max_value, axis, mask)``; a model's config says
where it applies with two fields:

* ``max_norm``: the bound ``c`` on the norm of each unit's incoming weights
  (0 turns the constraint off);
* ``max_norm_layers``: ``'all'`` (every kernel), ``'hidden'`` (every kernel
  but the head's), or comma-separated layer names or path prefixes
  (``'hidden_0,hidden_1'``, ``'stage1_block0/conv_0'``).

The incoming weights of output unit ``j`` of a kernel of shape
``(..., fan_in, fan_out)`` are ``kernel[..., j]``, so the norm is taken over
every axis but the last.

References:
  Srebro & Shraibman, Rank, trace-norm and max-norm, 2005; Srivastava et al.,
  Dropout: a simple way to prevent neural networks from overfitting, 2014.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ['max_norm_groups', 'max_norm_mask', 'max_norm_paths']

HEAD = 'head'


def _path(key_path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in key_path)


def _kernels(params) -> dict[str, int]:
  """Path of each kernel (``'.../kernel'`` leaf) -> its number of axes."""
  found = {}
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(params):
    path = _path(key_path)
    if path.rsplit('/', 1)[-1] == 'kernel':
      found[path] = len(leaf.shape)
  return found


def _matches(path: str, prefix: str) -> bool:
  return path == prefix or path.startswith(prefix + '/')


def max_norm_paths(config: Any, params) -> tuple[str, ...]:
  """Paths (``'hidden_0/kernel'``) of the kernels the constraint covers."""
  if not config.get('max_norm'):
    return ()
  kernels = tuple(_kernels(params))
  spec = config.get('max_norm_layers', 'hidden')
  if spec == 'all':
    return kernels
  if spec == 'hidden':
    return tuple(p for p in kernels if not _matches(p, HEAD))
  names = [n.strip() for n in spec.split(',') if n.strip()]
  for name in names:
    if not any(_matches(p, name) for p in kernels):
      layers = sorted({p.rsplit('/', 1)[0] for p in kernels})
      raise ValueError(
          f'max_norm_layers: layer {name!r} has no kernel; allowed: '
          f"'all', 'hidden', or names among {', '.join(layers)}."
      )
  return tuple(p for p in kernels if any(_matches(p, n) for n in names))


def _mask(params, selected) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda kp, _: _path(kp) in selected, params
  )


def max_norm_groups(config: Any, params) -> list[tuple[Any, tuple[int, ...]]]:
  """``[(mask, axis), ...]``, one per kernel rank among the covered kernels.

  Chain one ``research.optim.max_norm(config.max_norm, axis, mask)`` per
  group. Empty when the constraint is off.
  """
  ranks = _kernels(params)
  paths = max_norm_paths(config, params)
  groups = []
  for rank in sorted({ranks[p] for p in paths}):
    selected = {p for p in paths if ranks[p] == rank}
    groups.append((_mask(params, selected), tuple(range(rank - 1))))
  return groups


def max_norm_mask(config: Any, params) -> tuple[Any, tuple[int, ...]]:
  """``(mask, axis)`` for ``research.optim.max_norm(max_value, axis, mask)``.

  ``mask`` has the structure of ``params`` with a bool per leaf, True on the
  covered kernels; ``axis`` holds the fan-in axes. All False (and
  ``axis=(0,)``) when the constraint is off.

  Raises:
    ValueError: covered kernels of different ranks (dense and conv): use
      ``max_norm_groups``; or a layer name with no kernel.
  """
  groups = max_norm_groups(config, params)
  if not groups:
    return _mask(params, set()), (0,)
  if len(groups) > 1:
    raise ValueError(
        f"max_norm_layers={config.get('max_norm_layers')!r} covers kernels of "
        'different ranks, which need different axes; use max_norm_groups, '
        'or name the layers of one kind.'
    )
  return groups[0]
