"""Different transformations for different parts of the params.

``partition`` routes each leaf, by its label, to one of several
transformations; ``selective_transform`` trains some leaves and freezes the
rest without keeping optimizer state for the frozen ones.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, NamedTuple, Union

import jax

from research.optim import base
from research.optim import wrappers

__all__ = [
    'MultiTransformState',
    'PartitionState',
    'multi_transform',
    'partition',
    'selective_transform',
]


class PartitionState(NamedTuple):
  """One :class:`MaskedState` per label, keyed by the label."""

  inner_states: Mapping[Hashable, Any]


MultiTransformState = PartitionState  # The name before optax 0.2.5.


def _labels_of(param_labels, tree):
  return param_labels(tree) if callable(param_labels) else param_labels


def partition(
    transforms: Mapping[Hashable, base.GradientTransformation],
    param_labels: Union[Any, Callable[[base.Params], Any]],
    *,
    mask_compatible_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
  r"""Applies ``transforms[label]`` to the leaves that carry ``label``.

  .. math::
    u_i \leftarrow \mathrm{transforms}[\ell_i](u)_i

  Each transformation is :func:`masked` to its own leaves, so it keeps state
  only for them. Labels with no leaves are allowed (their transformation sees
  an empty tree).

  Args:
    transforms: a mapping ``label -> transformation``.
    param_labels: a pytree of labels with the params' structure (or a prefix
      of it), or a function ``params -> such a pytree``. Every label must be a
      key of ``transforms``.
    mask_compatible_extra_args: also mask extra keyword arguments whose tree
      structure equals that of the updates.

  Returns:
    A :class:`GradientTransformationExtraArgs` with state
    :class:`PartitionState`.

  References:
    Goodfellow et al., Generative adversarial nets, 2014 (one optimizer per
    network, the classic use).
  """
  transforms = {k: base.with_extra_args_support(t) for k, t in transforms.items()}

  def masked_for(labels, group):
    mask = jax.tree.map(lambda label: label == group, labels)
    return wrappers.masked(
        transforms[group], mask,
        mask_compatible_extra_args=mask_compatible_extra_args,
    )

  def init_fn(params):
    labels = _labels_of(param_labels, params)
    unknown = set(jax.tree.leaves(labels)) - set(transforms)
    if unknown:
      raise ValueError(
          f'partition: labels {sorted(map(repr, unknown))} have no '
          f'transformation; allowed labels: {sorted(map(repr, transforms))}.'
      )
    return PartitionState(
        {g: masked_for(labels, g).init(params) for g in transforms}
    )

  def update_fn(updates, state, params=None, **extra_args):
    labels = _labels_of(param_labels, updates)
    inner_states = {}
    for group in transforms:
      updates, inner_states[group] = masked_for(labels, group).update(
          updates, state.inner_states[group], params, **extra_args
      )
    return updates, PartitionState(inner_states)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


multi_transform = partition  # The name before optax 0.2.5.


def selective_transform(
    optimizer: base.GradientTransformation,
    *,
    freeze_mask: Any,
) -> base.GradientTransformationExtraArgs:
  r"""Trains the leaves where ``freeze_mask`` is false; the others get zero updates.

  .. math::
    u_i \leftarrow \begin{cases} 0 & m_i \\ \mathrm{optimizer}(u)_i &
    \neg m_i \end{cases}

  Unlike :func:`freeze` after an optimizer, no optimizer state is kept for the
  frozen leaves.

  Args:
    optimizer: the optimizer of the trainable leaves.
    freeze_mask: a bool, or a pytree of bools (a prefix of the params), true
      for the leaves to freeze. It must be static.

  References:
    Yosinski et al., How transferable are features in deep neural networks?,
    2014.
  """

  def labels(params):
    del params
    return jax.tree.map(lambda m: 'freeze' if m else 'train', freeze_mask)

  return partition(
      {'train': optimizer, 'freeze': base.set_to_zero()}, param_labels=labels
  )
