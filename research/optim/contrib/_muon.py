"""Muon: momentum orthogonalized by a Newton-Schulz iteration.

Each matrix's (Nesterov) momentum ``M = U S V^T`` is replaced by an
approximation of ``U V^T``, the steepest-descent direction under the spectral
norm. Leaves that are not matrices go to AdamW.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from research.optim import adding
from research.optim import alias
from research.optim import base
from research.optim import checks
from research.optim import combine
from research.optim import transform
from research.optim import tree as otu

__all__ = [
    'MuonDimensionNumbers',
    'MuonState',
    'muon',
    'scale_by_muon',
]

_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# One (a, b, c) per step, from Ahn et al. (Dion), 2025.
_DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {'standard': _DEFAULT_NS_COEFFS, 'dion': _DION_NS_COEFFS}
PRECONDITIONINGS = ('frobenius', 'spectral', 'aol', 'schatten')


class MuonDimensionNumbers(NamedTuple):
  """Which axes of a weight form the matrix that Muon orthogonalizes.

  The weight acts as ``y = x W`` with ``reduction_axis`` (the input, fan-in)
  and ``output_axis`` (fan-out); several axes on either side are flattened
  into one. Every other axis is a batch axis: each slice along it is
  orthogonalized on its own.
  """

  reduction_axis: Union[Sequence[int], int] = 0
  output_axis: Union[Sequence[int], int] = 1


WeightDimNumOrFn = Union[
    MuonDimensionNumbers, base.Params, Callable[[base.Params], Any]
]


class MuonState(NamedTuple):
  count: jax.Array  # int32, updates so far
  mu: base.Updates  # the momentum
  ns_coeffs: jax.Array  # (3,) or (steps, 3) Newton-Schulz coefficients


def _is_dims(x) -> bool:
  return isinstance(x, MuonDimensionNumbers)


def _is_dims_or_none(x) -> bool:
  return x is None or _is_dims(x)


def _axes(axis, ndim) -> tuple[int, ...]:
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  return tuple(a % ndim for a in axis)


def _fans(shape, dims: MuonDimensionNumbers) -> tuple[int, int]:
  """``(fan_in, fan_out)``: the sizes of the reduction and output axes."""
  ndim = len(shape)
  fan_in = math.prod(shape[a] for a in _axes(dims.reduction_axis, ndim))
  fan_out = math.prod(shape[a] for a in _axes(dims.output_axis, ndim))
  return fan_in, fan_out


def _as_matrices(x: jax.Array, dims: MuonDimensionNumbers):
  """``x`` as a stack ``(batch, fan_in, fan_out)`` and the inverse map."""
  if x.ndim < 2:
    raise ValueError(
        f'muon: a leaf of shape {x.shape} has rank {x.ndim}; allowed: rank >= 2 '
        '(give it no MuonDimensionNumbers to send it to AdamW).'
    )
  reduction = _axes(dims.reduction_axis, x.ndim)
  output = _axes(dims.output_axis, x.ndim)
  if set(reduction) & set(output):
    raise ValueError(
        f'muon: {dims} for shape {x.shape} shares axes between reduction and '
        'output; allowed: disjoint axes.'
    )
  batch = tuple(a for a in range(x.ndim) if a not in reduction + output)
  order = batch + reduction + output
  sizes = [math.prod(x.shape[a] for a in axes) for axes in (batch, reduction, output)]
  permuted_shape = tuple(x.shape[a] for a in order)
  inverse_order = tuple(sorted(range(x.ndim), key=order.__getitem__))

  def unflatten(m):
    return m.reshape(permuted_shape).transpose(inverse_order)

  return x.transpose(order).reshape(sizes), unflatten


def _quintic(x, coeffs, a):
  """``c0 X + (c1 A + c2 A^2) X`` with ``A = X X^H`` given."""
  return coeffs[0] * x + (coeffs[1] * a + coeffs[2] * a @ a) @ x


def _gram(x):
  return x @ x.T.conj()


def _plain_step(x, coeffs, eps):
  del eps
  return _quintic(x, coeffs, _gram(x))


def _aol_step(x, coeffs, eps):
  """First step with AOL rescaling: row ``i`` by ``1 / sqrt(sum_j |A_ij|)``."""
  a = _gram(x)
  s = jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps))[:, None]
  return _quintic(x * s, coeffs, a * s * s.T)


def _schatten_step(x, coeffs, eps):
  """First step with Schatten-4 rescaling: ``X / ||X X^T||_F^(1/2)``."""
  a = x @ x.T
  s = jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(a, ord='fro'), min=eps))
  return _quintic(x * s, coeffs, a * s**2)


# preconditioning -> (norm to divide by first, or None; the first step)
_PRECONDITIONING = {
    'frobenius': ('fro', _plain_step),
    'spectral': (2, _plain_step),
    'aol': (None, _aol_step),
    'schatten': (None, _schatten_step),
}


def _orthogonalize_matrix(x, coeffs, ns_steps, preconditioning, eps):
  transposed = x.shape[0] > x.shape[1]  # iterate on the smaller Gram matrix
  if transposed:
    x = x.T
  norm, first_step = _PRECONDITIONING[preconditioning]
  if norm is not None:
    x = x / (jnp.linalg.norm(x, ord=norm) + eps)
  coeffs = coeffs.astype(x.dtype)
  rows = [coeffs] * ns_steps if coeffs.ndim == 1 else list(coeffs)
  for i, c in enumerate(rows):
    x = (first_step if i == 0 else _plain_step)(x, c, eps)
  return x.T if transposed else x


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: jax.Array,
    ns_steps: int = 5,
    preconditioning: Literal['frobenius', 'spectral', 'aol', 'schatten'] = 'frobenius',
    eps: jax.typing.ArrayLike = 1e-8,
    dimension_numbers: Optional[MuonDimensionNumbers] = None,
) -> jax.Array:
  r"""An approximation of the polar factor :math:`U V^H` of :math:`X = U S V^H`.

  After a normalization that puts the singular values in :math:`[0, 1]`, each
  step maps :math:`X \to c_0 X + (c_1 A + c_2 A^2) X` with :math:`A = X X^H`,
  which pushes every singular value towards (about) 1. The default
  coefficients trade exactness (values end near :math:`[0.7, 1.2]`) for speed.

  Args:
    x: a matrix, or an array with ``dimension_numbers``.
    ns_coeffs: ``(3,)`` coefficients for every step, or ``(n, 3)``: one row
      per step (then ``ns_steps`` is ignored).
    ns_steps: the number of steps with ``(3,)`` coefficients.
    preconditioning: ``'frobenius'`` or ``'spectral'`` (divide by that norm
      first), ``'aol'`` or ``'schatten'`` (a rescaled first step).
    eps: added to the norms.
    dimension_numbers: the matrix axes of a higher-rank ``x``.

  Returns:
    The orthogonalized array, of the shape of ``x``.

  References:
    Jordan, Muon: An optimizer for hidden layers in neural networks, 2024;
    Boissin et al., Turbo-Muon, 2025 (AOL); Grishina et al., Accelerating
    Newton-Schulz Iteration for Orthogonalization via Chebyshev-type
    Polynomials, 2025 (Schatten-4).
  """
  if dimension_numbers is None:
    if x.ndim != 2:
      raise ValueError(
          f'orthogonalize_via_newton_schulz: x has shape {x.shape}; allowed: '
          'a matrix, or any rank >= 2 with dimension_numbers.'
      )
    dimension_numbers = MuonDimensionNumbers()
  checks.check_choice('preconditioning', preconditioning, PRECONDITIONINGS,
                      'orthogonalize_via_newton_schulz')
  if ns_coeffs.ndim not in (1, 2) or ns_coeffs.shape[-1] != 3:
    raise ValueError(
        f'orthogonalize_via_newton_schulz: ns_coeffs has shape '
        f'{ns_coeffs.shape}; allowed: (3,) or (n, 3).'
    )
  matrices, unflatten = _as_matrices(x, dimension_numbers)
  orthogonalize = lambda m: _orthogonalize_matrix(  # noqa: E731
      m, ns_coeffs, ns_steps, preconditioning, eps)
  return unflatten(jax.vmap(orthogonalize)(matrices))


def _resolve(dims_or_fn, tree):
  return dims_or_fn(tree) if callable(dims_or_fn) else dims_or_fn


def _shape_scale(x, dims, consistent_rms):
  fan_in, fan_out = _fans(x.shape, dims)
  if consistent_rms is None:
    return jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * x
  return jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms * x


def scale_by_shape(
    weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
    consistent_rms: Optional[jax.typing.ArrayLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Scales each matrix update by a factor of its shape.

  .. math::
    u \leftarrow \sqrt{\max(1, n_\text{out} / n_\text{in})}\, u \quad
    \text{or, with } \rho = \text{consistent\_rms}, \quad
    u \leftarrow \rho \sqrt{\max(n_\text{in}, n_\text{out})}\, u

  The first keeps the update's spectral norm right for width transfer; the
  second gives every matrix an update RMS of about :math:`\rho`, like AdamW.

  Args:
    weight_dimension_numbers: a tree of :class:`MuonDimensionNumbers` (or a
      function of the updates returning one); ``None`` for matrices.
    consistent_rms: :math:`\rho`, or ``None`` for the width scaling.

  References:
    Jordan, Muon: An optimizer for hidden layers in neural networks, 2024;
    Liu et al., Muon is Scalable for LLM Training, 2025.
  """

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    dims = _resolve(weight_dimension_numbers, updates)
    updates = jax.tree.map(
        lambda u, d: _shape_scale(u, d, consistent_rms), updates, dims,
        is_leaf=_is_dims)
    return updates, state

  return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def _check_ns_coeffs(fn, ns_coeffs, ns_steps):
  shape = jnp.shape(jnp.asarray(ns_coeffs))
  if len(shape) not in (1, 2) or shape[-1] != 3:
    raise ValueError(
        f'{fn}: ns_coeffs has shape {shape}; allowed: (3,) or (n, 3), or a '
        f'preset name in {sorted(NS_COEFFS_PRESETS)}.'
    )
  if len(shape) == 2 and checks.is_concrete_number(ns_steps) and shape[0] > ns_steps:
    raise ValueError(
        f'{fn}: ns_coeffs has {shape[0]} rows but ns_steps={ns_steps!r}; '
        'allowed: at most ns_steps rows.'
    )


def scale_by_muon(
    ns_coeffs: Union[tuple, jax.Array] = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal['frobenius', 'spectral', 'aol', 'schatten'] = 'frobenius',
    weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Orthogonalized momentum: the preconditioner of Muon.

  .. math::
    m_t &= \beta m_{t-1} + (1 - \beta) g_t, \qquad
    \hat m_t = \frac{\beta m_t}{1 - \beta^{t+1}}
      + \frac{(1 - \beta) g_t}{1 - \beta^t}
      \;\; (\text{without Nesterov: } m_t / (1 - \beta^t)) \\
    u_t &= \mathrm{NS}(\hat m_t) \approx U V^H
      \quad\text{for } \hat m_t = U S V^H

  (see :func:`orthogonalize_via_newton_schulz`). With ``adaptive`` the
  result is scaled by the dual norm :math:`\langle \hat m_t, u_t\rangle`.
  Every leaf must be a matrix, or be given :class:`MuonDimensionNumbers`.

  Args:
    ns_coeffs: ``(a, b, c)`` of the quintic step, or one row per step.
    ns_steps: the number of Newton-Schulz steps, ``>= 0`` (ignored with one
      row per step, which must then have at most ``ns_steps`` rows: the last
      ``ns_steps`` are used).
    beta: the momentum rate :math:`\beta`, in ``[0, 1)``.
    eps: added to the normalizing norms.
    mu_dtype: dtype of the momentum.
    nesterov: use Nesterov's look-ahead momentum.
    adaptive: scale by the dual norm of the momentum.
    preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or
      ``'schatten'``.
    weight_dimension_numbers: a tree of :class:`MuonDimensionNumbers` (or a
      function of the updates returning one); ``None`` for matrices.

  Returns:
    A transformation with state :class:`MuonState`.

  References:
    Jordan, Muon: An optimizer for hidden layers in neural networks, 2024;
    Bernstein & Newhouse, Old Optimizer, New Norm: An Anthology, 2024.
  """
  fn = 'scale_by_muon'
  checks.check_non_negative('ns_steps', ns_steps, fn)
  checks.check_decay('beta', beta, fn)
  checks.check_non_negative('eps', eps, fn)
  checks.check_choice('preconditioning', preconditioning, PRECONDITIONINGS, fn)
  _check_ns_coeffs(fn, ns_coeffs, ns_steps)
  mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

  def init_fn(params):
    coeffs = jnp.asarray(ns_coeffs)
    if coeffs.ndim == 2:
      coeffs = coeffs[-ns_steps:]
    return MuonState(
        count=jnp.zeros([], jnp.int32),
        mu=otu.tree_zeros_like(params, dtype=mu_dtype),
        ns_coeffs=coeffs,
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    dims = _resolve(weight_dimension_numbers, updates)
    mu = otu.tree_update_moment(updates, state.mu, beta, 1)
    count = otu.safe_increment(state.count)
    if nesterov:
      # pylint: disable-next=protected-access
      mu_hat = transform._nesterov_mu_hat(mu, updates, beta, count)
    else:
      mu_hat = otu.tree_bias_correction(mu, beta, count)
    new_updates = jax.tree.map(
        lambda m, d: orthogonalize_via_newton_schulz(
            m, state.ns_coeffs, ns_steps, preconditioning, eps, d),
        mu_hat, dims, is_leaf=_is_dims)
    if adaptive:
      new_updates = jax.tree.map(
          lambda m, o: jnp.sum(m.conj() * o) * o, mu_hat, new_updates)
    return new_updates, MuonState(
        count=count, mu=otu.tree_cast(mu, mu_dtype), ns_coeffs=state.ns_coeffs)

  return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _map_dims(dims, tree, leaf_fn):
  """``leaf_fn(d)`` at every leaf of ``tree``, ``d`` its (prefix) dims."""
  return jax.tree.map(
      lambda d, sub: jax.tree.map(lambda _: leaf_fn(d), sub),
      dims, tree, is_leaf=_is_dims_or_none)


def muon(
    learning_rate: base.ScalarOrSchedule,
    ns_coeffs: Union[tuple, jax.Array, str] = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: jax.typing.ArrayLike = 0.95,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal['frobenius', 'spectral', 'aol', 'schatten'] = 'frobenius',
    adam_b1: jax.typing.ArrayLike = 0.9,
    adam_b2: jax.typing.ArrayLike = 0.999,
    adam_eps_root: jax.typing.ArrayLike = 0.0,
    adam_weight_decay: base.ScalarOrSchedule = 0.0,
    adam_learning_rate: Optional[base.ScalarOrSchedule] = None,
    muon_weight_dimension_numbers: Optional[WeightDimNumOrFn] = None,
    consistent_rms: Optional[jax.typing.ArrayLike] = None,
) -> base.GradientTransformationExtraArgs:
  r"""Muon for the matrices, AdamW for every other leaf.

  For a Muon leaf with fan-in :math:`n_\text{in}` and fan-out
  :math:`n_\text{out}`:

  .. math::
    \theta_t = \theta_{t-1} - \eta_t \big(s\, \mathrm{NS}(\hat m_t)
      + \lambda \theta_{t-1}\big), \qquad
    s = \sqrt{\max(1, n_\text{out} / n_\text{in})}
      \;\;\text{or}\;\; \rho \sqrt{\max(n_\text{in}, n_\text{out})}

  with :math:`\hat m_t` and :math:`\mathrm{NS}` of :func:`scale_by_muon` and
  :math:`\rho` = ``consistent_rms``. The other leaves follow
  ``adamw(adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root,
  weight_decay=adam_weight_decay, nesterov=nesterov)``.

  Args:
    learning_rate: :math:`\eta_t`, a scalar or a schedule.
    ns_coeffs: the Newton-Schulz coefficients, or a preset name
      (``'standard'``, ``'dion'``).
    ns_steps: the number of Newton-Schulz steps.
    beta: the momentum rate, in ``[0, 1)``.
    eps: Muon's normalizing ``eps`` and Adam's ``eps``.
    weight_decay: :math:`\lambda` for the Muon leaves (times the learning
      rate, as in PyTorch).
    weight_decay_mask: where that decay applies, among the Muon leaves.
    mu_dtype: dtype of the first moments.
    nesterov: Nesterov momentum, in Muon and in Adam.
    adaptive: scale Muon's update by the dual norm of the momentum.
    preconditioning: see :func:`scale_by_muon`.
    adam_b1, adam_b2, adam_eps_root: Adam's moments rates and root ``eps``.
    adam_weight_decay: AdamW's decay on the other leaves.
    adam_learning_rate: Adam's learning rate; ``None`` for ``learning_rate``.
    muon_weight_dimension_numbers: a tree (a prefix of the params) of
      :class:`MuonDimensionNumbers`, ``None`` marking the Adam leaves, or a
      function of the params returning one; by default every leaf of rank 2
      is a Muon matrix and every other leaf goes to Adam.
    consistent_rms: :math:`\rho \ge 0`, or ``None`` for the width scaling.

  Returns:
    A :func:`partition` of the two optimizers.

  References:
    Jordan, Muon: An optimizer for hidden layers in neural networks, 2024;
    Liu et al., Muon is Scalable for LLM Training, 2025;
    Ahn et al., Dion: Distributed Orthonormalized Updates, 2025.
  """
  fn = 'muon'
  checks.check_learning_rate(learning_rate, fn)
  checks.check_learning_rate(adam_learning_rate, fn, name='adam_learning_rate')
  checks.check_learning_rate(weight_decay, fn, name='weight_decay')
  checks.check_learning_rate(adam_weight_decay, fn, name='adam_weight_decay')
  checks.check_decay('adam_b1', adam_b1, fn)
  checks.check_decay('adam_b2', adam_b2, fn)
  checks.check_non_negative('adam_eps_root', adam_eps_root, fn)
  checks.check_non_negative('consistent_rms', consistent_rms, fn)
  if isinstance(ns_coeffs, str):
    checks.check_choice('ns_coeffs', ns_coeffs, NS_COEFFS_PRESETS, fn)
    ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]

  def dims_of(tree):
    if muon_weight_dimension_numbers is None:
      return jax.tree.map(
          lambda x: MuonDimensionNumbers() if x.ndim == 2 else None, tree)
    return _resolve(muon_weight_dimension_numbers, tree)

  def labels(params):
    return _map_dims(dims_of(params), params,
                     lambda d: 'adam' if d is None else 'muon')

  def muon_dims(tree):
    # Inside the partition the Adam leaves are MaskedNodes, which have no
    # leaves: the result has the structure of the masked tree.
    return _map_dims(dims_of(tree), tree, lambda d: d)

  muon_tx = base.chain(
      scale_by_muon(
          ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov,
          adaptive=adaptive, preconditioning=preconditioning,
          weight_dimension_numbers=muon_dims,
      ),
      scale_by_shape(muon_dims, consistent_rms),
      adding.add_decayed_weights(weight_decay, weight_decay_mask),
      transform.scale_by_learning_rate(learning_rate),
  )
  adam_tx = alias.adamw(
      learning_rate if adam_learning_rate is None else adam_learning_rate,
      b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root,
      weight_decay=adam_weight_decay, mu_dtype=mu_dtype, nesterov=nesterov,
  )
  return combine.partition({'muon': muon_tx, 'adam': adam_tx},
                           param_labels=labels)
