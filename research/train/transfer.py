"""Reuse and freezing: params from another run, frozen layers, cached features.

Paths are the names of :func:`research.train.steps.path_name`
(``'Dense_0/kernel'``, ``'bottom/hidden_1/bias'``); a pattern is a regular
expression that must match the whole name (``re.fullmatch``), so
``'Dense_1/.*'`` does not catch ``'Dense_10/kernel'``.

Transfer in three steps:

    params = restore_params_from_run('runs/pretrain/20250101-000000', params,
                                     r'bottom/.*')
    tx = freeze_optimizer(optim.adam(1e-3), params, r'bottom/.*')
    state = TrainState.create(apply_fn=model.apply,
                              variables={'params': params}, tx=tx, rng=key)

Cached features. When the frozen layers form the bottom of the network, their
outputs do not change during training, so they can be computed once per split
and later epochs can run only the top. Split a model into a bottom and a top
either as two submodules of one module::

    class Net(nn.Module):
      def setup(self):
        self.bottom = Bottom()
        self.top = Top()
      def __call__(self, x, train=False):
        return self.top(self.bottom(x), train=train)
      def features(self, x):             # the frozen part alone
        return self.bottom(x)

    feats = compute_features(
        lambda xb: net.apply(variables, xb, method=Net.features), x, 1000)
    top_state = TrainState.create(apply_fn=Top().apply,
        variables={'params': variables['params']['top']}, tx=tx, rng=key)

or as two separate modules, the top's params then being a subtree of the
whole model's. The top trained on ``feats`` with the same batches follows the
same trajectory as the whole model with the bottom frozen, provided the bottom
behaves the same in training and evaluation (no dropout; BatchNorm in
inference mode), which is what freezing it should mean anyway.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp

from research import optim
from research.train import checkpoints as ckpt_lib
from research.analysis import ensemble
from research.train import steps

__all__ = [
    'FROZEN',
    'TRAINABLE',
    'compute_features',
    'freeze_labels',
    'freeze_optimizer',
    'latest_checkpoint',
    'load_params_subset',
    'matching_paths',
    'restore_params_from_run',
]

FROZEN = 'frozen'
TRAINABLE = 'trainable'
Pattern = Union[str, re.Pattern]


def _compile(pattern: Pattern) -> re.Pattern:
  if isinstance(pattern, re.Pattern):
    return pattern
  if not isinstance(pattern, str):
    raise TypeError(f'pattern={pattern!r} must be a regular expression (str).')
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(
        f'pattern={pattern!r} is not a valid regular expression: {e}.') from e


def _named_leaves(tree) -> dict:
  return {steps.path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def matching_paths(tree: Any, pattern: Pattern) -> list[str]:
  """The leaf paths of ``tree`` that ``pattern`` matches in full, in tree order."""
  regex = _compile(pattern)
  return [name for name in _named_leaves(tree) if regex.fullmatch(name)]


def _no_match(pattern, tree, what) -> ValueError:
  names = list(_named_leaves(tree))
  shown = ', '.join(names[:12]) + (', ...' if len(names) > 12 else '')
  return ValueError(
      f'pattern={getattr(pattern, "pattern", pattern)!r} matches no path of the '
      f'{what}; its paths are: {shown}.')


def load_params_subset(source_params: Any, target_params: Any, pattern: Pattern) -> Any:
  """``target_params`` with every source leaf whose path matches copied in.

  Args:
    source_params: params of another model or run (e.g. from
      :func:`restore_params_from_run` or ``checkpoints.load_params``).
    target_params: the params to fill; their structure is kept.
    pattern: a regular expression matched against the whole path name.

  Returns:
    A pytree with the structure of ``target_params``: matched leaves from the
    source (as jax arrays), the others unchanged.

  Raises:
    ValueError: if the pattern matches no source path, or a matched path is
      missing from the target or differs in shape or dtype (the message names
      the path).
  """
  regex = _compile(pattern)
  source = _named_leaves(source_params)
  target = _named_leaves(target_params)
  chosen = [name for name in source if regex.fullmatch(name)]
  if not chosen:
    raise _no_match(pattern, source_params, 'source params')
  for name in chosen:
    if name not in target:
      raise ValueError(
          f'load_params_subset: source path {name!r} is not in the target params.')
    s, t = source[name], target[name]
    if jnp.shape(s) != jnp.shape(t) or jnp.result_type(s) != jnp.result_type(t):
      raise ValueError(
          f'load_params_subset: {name!r} is {jnp.result_type(s)}{list(jnp.shape(s))} '
          f'in the source but {jnp.result_type(t)}{list(jnp.shape(t))} in the target.')
  chosen = set(chosen)

  def pick(path, leaf):
    name = steps.path_name(path)
    return jnp.asarray(source[name]) if name in chosen else leaf

  return jax.tree_util.tree_map_with_path(pick, target_params)


def latest_checkpoint(run_dir: str) -> tuple[str, int]:
  """``(path of the 'state' item, step)`` of the newest finished checkpoint.

  Reads ``run_dir/checkpoints/<step>/state`` as the Trainer writes it; an
  unfinished save (orbax's temporary directory) never has a plain numeric
  name, so it is never picked. Nothing is created or cleaned up in
  ``run_dir``: another process may still be writing to it.
  """
  directory = os.path.join(os.path.abspath(run_dir), 'checkpoints')
  if not os.path.isdir(directory):
    raise ValueError(f'run_dir={run_dir!r} has no checkpoints/ directory.')
  found = [int(name) for name in os.listdir(directory)
           if name.isdigit() and os.path.isdir(os.path.join(directory, name, 'state'))]
  if not found:
    raise ValueError(f'run_dir={run_dir!r}: {directory} holds no finished checkpoint.')
  step = max(found)
  return os.path.join(directory, str(step), 'state'), step


def restore_params_from_run(run_dir: str, target_params: Any, pattern: Pattern,
                            step: Optional[int] = None) -> Any:
  """:func:`load_params_subset` from a Trainer run's checkpoint.

  Args:
    run_dir: a run directory (``runs/<study>/<timestamp>``) with
      ``checkpoints/<step>/state``.
    target_params: the params to fill.
    pattern: a regular expression matched against whole path names.
    step: the checkpoint to read; the latest one if None.
  """
  path, latest = latest_checkpoint(run_dir)
  if step is not None and step != latest:
    path = os.path.join(os.path.dirname(os.path.dirname(path)), str(int(step)), 'state')
    if not os.path.isdir(path):
      raise ValueError(f'run_dir={run_dir!r} has no checkpoint at step={step}.')
  state = ckpt_lib.load_params(path)
  return load_params_subset(state['params'], target_params, pattern)


def freeze_labels(params: Any, pattern: Pattern) -> Any:
  """A pytree of ``'frozen'`` (path matches) or ``'trainable'`` labels."""
  regex = _compile(pattern)
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: FROZEN if regex.fullmatch(steps.path_name(p)) else TRAINABLE, params)
  if FROZEN not in jax.tree.leaves(labels):
    raise _no_match(pattern, params, 'params')
  return labels


def freeze_optimizer(tx: optim.GradientTransformation, params: Any,
                     pattern: Pattern) -> optim.GradientTransformation:
  r"""``tx`` on the trainable params; zero updates for those ``pattern`` matches.

  .. math::
    u_i \leftarrow \begin{cases} 0 & \text{path}_i \text{ matches} \\
      \mathrm{tx}(g)_i & \text{otherwise} \end{cases}

  Built with ``optim.partition``, so ``tx`` keeps state (moments, ...) only
  for the trainable params, and the frozen ones stay bit-identical.

  References:
    Yosinski et al., How transferable are features in deep neural networks?,
    2014.
  """
  return optim.partition(
      {TRAINABLE: tx, FROZEN: optim.set_to_zero()}, freeze_labels(params, pattern))


def compute_features(feature_fn: Callable, x: Any,
                     batch_size: Optional[int] = None) -> Any:
  """``feature_fn`` over a whole split, once, compiled, in batches.

  Args:
    feature_fn: the frozen bottom, ``x_batch -> features`` (a closure over its
      variables, in inference mode).
    x: inputs ``(N, ...)`` (or a pytree of them).
    batch_size: examples per batch, or None for all at once.

  Returns:
    Features with leading size N, to train the top on in place of ``x``.
  """
  return jax.jit(lambda a: ensemble.map_in_batches(feature_fn, a, batch_size))(x)
