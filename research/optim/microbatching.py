"""Microbatching: evaluate a function on a batch in sequential slices.

``microbatch(fun, ...)`` splits the batch arguments into slices of
``microbatch_size`` rows, runs ``fun`` on each inside a ``lax.fori_loop`` (so
peak memory is that of one slice) and combines the results with an
:class:`Accumulator` (sum, mean, running mean or concatenation).
``micro_vmap`` is ``jax.vmap`` with that memory bound and ``micro_grad`` gives
per-example gradients, transformed (e.g. clipped) before they are combined.
Names and semantics follow Optax 0.2.8's ``optax.microbatching``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp

__all__ = [
    'AccumulationType',
    'Accumulator',
    'micro_grad',
    'micro_vmap',
    'microbatch',
    'reshape_batch_axis',
]

Function = Callable[..., Any]
# What micro_grad returns next to the gradient: one row per example.
IndividualOutputs = collections.namedtuple('Aux', ['values', 'metrics', 'aux'])


@dataclasses.dataclass(frozen=True)
class Accumulator:
  """How the results of the microbatches combine into one.

  The loop is ``carry = init(shape of one result); carry = update(carry,
  result_i, i) for each i; return finalize(carry)``. ``aggregate`` reduces a
  stacked batch of results at once (what :func:`micro_vmap` does inside a
  microbatch).
  """

  init: Callable[[Any], Any]
  update: Callable[[Any, Any, int], Any]
  finalize: Callable[[Any], Any]
  aggregate: Callable[[Any], Any]


class AccumulationType(enum.Enum):
  """The built-in accumulators."""

  MEAN = enum.auto()  # The mean of the microbatch results.
  SUM = enum.auto()  # Their sum.
  RUNNING_MEAN = enum.auto()  # The mean over the microbatches actually run.
  CONCAT = enum.auto()  # Their concatenation along axis 0.


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
  """Splits the batch axis of every leaf into ``(num_microbatches, microbatch_size)``.

  The split is column-major: microbatch ``j`` holds rows ``j, j + n, j + 2n,
  ...`` (``n`` microbatches), so a sharding of the batch axis carries over to
  the ``microbatch_size`` axis.
  """

  def split(x):
    shape = x.shape[:axis] + (-1, microbatch_size) + x.shape[axis + 1:]
    return x.reshape(shape, order='F')

  return jax.tree.map(split, tree)


def _require_floats(fn):
  def wrapped(*args, **kwargs):
    leaves = jax.tree.leaves((args, kwargs))
    if not all(jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
      raise ValueError(
          'MEAN and RUNNING_MEAN Accumulators require floating-point values.'
      )
    return fn(*args, **kwargs)

  return wrapped


def _per_leaf(acc: Accumulator) -> Accumulator:
  """An accumulator of arrays applied leaf by leaf to pytrees."""
  return Accumulator(
      init=lambda value: jax.tree.map(acc.init, value),
      update=lambda carry, value, i: jax.tree.map(
          lambda c, v: acc.update(c, v, i), carry, value
      ),
      finalize=lambda carry: jax.tree.map(acc.finalize, carry),
      aggregate=lambda values: jax.tree.map(acc.aggregate, values),
  )


def _check_count(num_microbatches):
  if num_microbatches <= 0:
    raise ValueError(f'num_microbatches={num_microbatches} must be positive.')


def _sum(num_microbatches) -> Accumulator:
  del num_microbatches
  return Accumulator(
      init=jnp.zeros_like,
      update=lambda carry, value, _: carry + value,
      finalize=lambda carry: carry,
      aggregate=functools.partial(jnp.sum, axis=0),
  )


def _mean(num_microbatches) -> Accumulator:
  _check_count(num_microbatches)
  return Accumulator(
      init=_require_floats(jnp.zeros_like),
      update=lambda carry, value, _: carry + value,
      finalize=lambda carry: carry / num_microbatches,
      aggregate=functools.partial(jnp.mean, axis=0),
  )


def _running_mean(num_microbatches) -> Accumulator:
  del num_microbatches

  def update(carry, value, index):
    # After index + 1 results: mean_{i+1} = mean_i * i/(i+1) + value/(i+1).
    weight = index / (index + 1)
    return carry * weight + value * (1 - weight)

  return Accumulator(
      init=_require_floats(jnp.zeros_like),
      update=update,
      finalize=lambda carry: carry,
      aggregate=functools.partial(jnp.mean, axis=0),
  )


def _concat(num_microbatches) -> Accumulator:
  _check_count(num_microbatches)
  return Accumulator(
      init=lambda value: jnp.zeros((num_microbatches,) + value.shape, value.dtype),
      update=lambda carry, value, index: carry.at[index].set(value),
      # Undo reshape_batch_axis's column-major split.
      finalize=lambda carry: carry.reshape(-1, *carry.shape[2:], order='F'),
      aggregate=lambda values: values,
  )


_BUILT_IN = {
    AccumulationType.SUM: _sum,
    AccumulationType.MEAN: _mean,
    AccumulationType.RUNNING_MEAN: _running_mean,
    AccumulationType.CONCAT: _concat,
}


def _canonicalize(tree, num_microbatches) -> Accumulator:
  """One accumulator from a pytree (a prefix of the outputs) of accumulators."""

  def resolve(acc):
    if isinstance(acc, Accumulator):
      return acc
    if acc not in _BUILT_IN:
      raise ValueError(f'Unknown accumulator: {acc}')
    return _per_leaf(_BUILT_IN[acc](num_microbatches))

  accs = jax.tree.map(resolve, tree)
  over = lambda method: lambda *trees: jax.tree.map(  # noqa: E731
      lambda acc, *xs: getattr(acc, method)(*xs), accs, *trees
  )
  return Accumulator(
      init=over('init'),
      update=lambda carry, value, index: jax.tree.map(
          lambda acc, c, v: acc.update(c, v, index), accs, carry, value
      ),
      finalize=over('finalize'),
      aggregate=over('aggregate'),
  )


def _as_tuple(x):
  return (x,) if isinstance(x, (int, str)) else tuple(x)


def microbatch(
    fun: Function,
    argnums: Union[int, Sequence[int]],
    microbatch_size: Union[int, None],
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: Union[str, Sequence[str]] = (),
    in_axes: Union[int, Sequence[int]] = 0,
    num_real_microbatches: Union[int, jax.Array, None] = None,
) -> Function:
  """``fun`` evaluated one microbatch at a time, results combined.

  For the default SUM: ``sum_j fun(batch_j)`` over the microbatches, run in a
  ``lax.fori_loop``. ``microbatch_size=None`` returns ``fun`` itself.

  Args:
    fun: any function.
    argnums: positions of the arguments with a batch axis.
    microbatch_size: rows per microbatch; must divide the batch size.
    accumulator: an :class:`Accumulator` or :class:`AccumulationType`, or a
      pytree of them that is a prefix of ``fun``'s output.
    argnames: names of keyword arguments with a batch axis.
    in_axes: the batch axis of each of ``argnums + argnames`` (one int for
      all).
    num_real_microbatches: stop after this many microbatches (handles a
      smaller final batch without recompiling).

  Returns:
    A function with ``fun``'s arguments.

  References:
    Huang et al., GPipe: efficient training of giant neural networks using
    pipeline parallelism, 2019 (micro-batches to bound activation memory).
  """
  if microbatch_size is None:
    return fun
  argnums = _as_tuple(argnums)
  argnames = _as_tuple(argnames)
  if isinstance(in_axes, int):
    in_axes = (in_axes,) * (len(argnums) + len(argnames))
  pos_axes = tuple(zip(argnums, in_axes))
  kw_axes = tuple(zip(argnames, in_axes[len(argnums):]))

  def batch_size_of(args, kwargs):
    batched = [(args[i], ax) for i, ax in pos_axes]
    batched += [(kwargs[k], ax) for k, ax in kw_axes]
    sizes = [
        x.shape[ax] for tree, ax in batched for x in jax.tree.leaves(tree)
    ]
    if len(set(sizes)) > 1:
      raise ValueError(
          f'Batch Arguments must have equal-size batch axes, found {sizes}.'
      )
    if sizes[0] % microbatch_size:
      raise ValueError(
          f'batch_size={sizes[0]} must be divisible by '
          f'microbatch_size={microbatch_size}.'
      )
    return sizes[0]

  def microbatched(*args, **kwargs):
    num = batch_size_of(args, kwargs) // microbatch_size
    args, kwargs = list(args), dict(kwargs)
    for i, ax in pos_axes:
      args[i] = reshape_batch_axis(args[i], microbatch_size, ax)
    for k, ax in kw_axes:
      kwargs[k] = reshape_batch_axis(kwargs[k], microbatch_size, ax)
    acc = _canonicalize(accumulator, num)

    def on_slice(index):
      take = lambda tree, ax: jax.tree.map(  # noqa: E731
          lambda x: jnp.take(x, index, axis=ax), tree
      )
      a, kw = list(args), dict(kwargs)
      for i, ax in pos_axes:
        a[i] = take(a[i], ax)
      for k, ax in kw_axes:
        kw[k] = take(kw[k], ax)
      return fun(*a, **kw)

    steps = num if num_real_microbatches is None else num_real_microbatches
    carry = acc.init(jax.eval_shape(on_slice, 0))
    carry = jax.lax.fori_loop(
        0, steps, lambda i, c: acc.update(c, on_slice(i), i), carry
    )
    return acc.finalize(carry)

  return microbatched


def micro_vmap(
    fun: Function,
    in_axes: Union[int, Sequence[int]] = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: Union[int, None] = None,
    vmap_fn: Callable[..., Function] = jax.vmap,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: Union[int, jax.Array, None] = None,
) -> Function:
  """``jax.vmap`` run one microbatch at a time.

  With the default CONCAT the result equals ``vmap_fn(fun, in_axes)(...)``;
  SUM or MEAN reduce over the batch without holding all of it. Keyword
  arguments are mapped over their leading axis, as ``jax.vmap`` does.

  Args:
    fun: the function to map.
    in_axes: the mapped axis of each positional argument (``None``: not
      mapped).
    out_axes: must be 0 (ValueError otherwise; Optax raises NotImplementedError).
    microbatch_size: rows per microbatch (``None``: one microbatch).
    vmap_fn: a function with ``jax.vmap``'s signature.
    accumulator: as in :func:`microbatch`.
    num_real_microbatches: as in :func:`microbatch`.

  References:
    Huang et al., GPipe: efficient training of giant neural networks using
    pipeline parallelism, 2019.
  """
  if out_axes != 0:
    # Optax 0.2.8 refuses it too (with NotImplementedError): the outputs are
    # reduced over the mapped axis, so there is no other place to put it.
    raise ValueError(f'micro_vmap: out_axes={out_axes!r} is invalid; allowed: 0.')
  in_axes = (in_axes,) if isinstance(in_axes, int) else tuple(in_axes)

  def vmapped_and_reduced(*args, kwargs):
    out = vmap_fn(fun, in_axes, out_axes)(*args, **kwargs)
    rows = jax.tree.leaves(out)[0].shape[0]
    return _canonicalize(accumulator, rows).aggregate(out)

  mapped = [i for i, ax in enumerate(in_axes) if ax is not None]
  run = microbatch(
      vmapped_and_reduced,
      argnums=tuple(mapped),
      argnames='kwargs',
      microbatch_size=microbatch_size,
      accumulator=accumulator,
      in_axes=tuple(in_axes[i] for i in mapped) + (0,),
      num_real_microbatches=num_real_microbatches,
  )
  return lambda *args, **kwargs: run(*args, kwargs=kwargs)


def micro_grad(
    fun: Function,
    has_aux: bool = False,
    argnums: Union[int, Sequence[int]] = 0,
    *,
    batch_argnums: Union[int, Sequence[int]] = 1,
    keep_batch_dim: bool = True,
    microbatch_size: Union[int, None] = None,
    accumulator: Any = AccumulationType.SUM,
    transform_fn: Callable[[Any], Any] = lambda x: x,
    metrics_fn: Callable[[Any], Any] = lambda x: None,
    num_real_microbatches: Union[int, jax.Array, None] = None,
) -> Function:
  r"""Per-example gradients, transformed then combined, with per-example aux.

  .. math::
    G = \mathrm{acc}_i\, T(\nabla f(\theta; x_i)), \qquad
    \text{aux} = (f(\theta; x_i), \mathrm{metrics}(\nabla f(\theta; x_i)),
    \text{aux}_i)_i

  Args:
    fun: ``fun(params, batch, ...)``, the loss of a batch.
    has_aux: ``fun`` returns ``(value, aux)``.
    argnums: the arguments to differentiate.
    batch_argnums: the arguments with a batch axis (axis 0).
    keep_batch_dim: give ``fun`` each example with a batch axis of size 1.
    microbatch_size: as in :func:`microbatch`.
    accumulator: how the transformed gradients combine (default SUM).
    transform_fn: ``T``, applied to each example's gradient (e.g. clipping).
    metrics_fn: per-example metrics of the raw gradient (keep them small).
    num_real_microbatches: as in :func:`microbatch`.

  Returns:
    A function with ``fun``'s arguments returning ``(G, aux)``, ``aux`` a
    namedtuple ``(values, metrics, aux)`` with one row per example.

  References:
    Abadi et al., Deep learning with differential privacy, 2016 (transformed
    per-example gradients).
  """
  batch_argnums = _as_tuple(batch_argnums)
  with_aux = fun if has_aux else (lambda *a, **k: (fun(*a, **k), None))
  value_and_grad = jax.value_and_grad(with_aux, argnums, has_aux=True)

  def one_example(*args, **kwargs):
    (value, aux), grad = value_and_grad(*args, **kwargs)
    return transform_fn(grad), IndividualOutputs(value, metrics_fn(grad), aux)

  in_axes = [None] * (max(batch_argnums) + 1)
  for i in batch_argnums:
    in_axes[i] = 0
  run = micro_vmap(
      one_example,
      in_axes=in_axes,
      accumulator=(accumulator, AccumulationType.CONCAT),
      microbatch_size=microbatch_size,
      num_real_microbatches=num_real_microbatches,
  )
  if not keep_batch_dim:
    return run

  def with_unit_batch(*args, **kwargs):
    args = list(args)
    for i in batch_argnums:
      args[i] = jax.tree.map(lambda x: jnp.expand_dims(x, 1), args[i])
    return run(*args, **kwargs)

  return with_unit_batch
