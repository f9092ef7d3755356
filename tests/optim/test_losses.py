"""research.optim.losses against optax.losses, case by case.

Each case calls ours and Optax's function of the same name with the same
arguments and compares the outputs (float32, the harness's rtol 1e-6; atol
the same, for outputs passing near zero). The cases cover the edge cases the
losses are written for: zero and 1e4 logits, -inf logits, masks (``where``),
integer labels, class axes other than the last and tuples of axes. The main
losses are also differentiated and the gradients compared.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp

from research import optim
from research.optim import losses
from tests.optim import batched
from tests.optim import harness

TOL = harness.TOLERANCES[jnp.dtype('float32')]
_rng = np.random.default_rng(0)

# Inputs are built with NumPy and moved to JAX once: eager JAX ops would each
# compile a kernel, which costs more than the tests themselves.


def _np(*shape, scale=1.0):
  return (_rng.normal(size=shape) * scale).astype(np.float32)


def _f32(*shape, scale=1.0):
  return jnp.asarray(_np(*shape, scale=scale))


def _softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _probs(*shape, axis=-1):
  return jnp.asarray(_softmax(_np(*shape), axis=axis))


def _ints_np(high, *shape):
  return _rng.integers(0, high, size=shape).astype(np.int32)


def _ints(high, *shape):
  return jnp.asarray(_ints_np(high, *shape))


def _one_hot(labels, n):
  return jnp.asarray(np.eye(n, dtype=np.float32)[np.asarray(labels)])


def _signs(*shape):
  return jnp.asarray(_rng.choice([-1.0, 1.0], size=shape).astype(np.float32))


def _bits_np(*shape, p=0.5):
  return _rng.random(size=shape) < p


def _bits(*shape, p=0.5):
  return jnp.asarray(_bits_np(*shape, p=p))


# Shared inputs: batch 4, 5 classes.
_LOGITS = _np(4, 5, scale=2.0)
LOGITS = jnp.asarray(_LOGITS)
LARGE = _f32(4, 5, scale=1e4)
ZEROS = jnp.zeros((4, 5), jnp.float32)
_LABELS = _ints_np(5, 4)
LABELS = jnp.asarray(_LABELS)
ONE_HOT = _one_hot(_LABELS, 5)
_SOFT = _softmax(_np(4, 5))
SOFT = jnp.asarray(_SOFT)
_MASK = _bits_np(4, 5, p=0.7)
_MASK[:, 0] = True  # Every row keeps a class.
MASK = jnp.asarray(_MASK)
MASK_ROW_2_OFF = jnp.asarray(np.where(np.arange(4)[:, None] == 2, False, _MASK))
ROW_MASK = jnp.array([True, False, True, True])
NEG_INF = jnp.asarray(np.where(np.arange(5) == 1, -np.inf, _LOGITS).astype(np.float32))
_soft_no_1 = np.where(np.arange(5) == 1, 0.0, _SOFT)
SOFT_NO_1 = jnp.asarray(
    (_soft_no_1 / _soft_no_1.sum(-1, keepdims=True)).astype(np.float32))
LOGITS_3D = _f32(2, 3, 4, scale=2.0)
PROBS_3D = _probs(2, 3, 4, axis=1)
_LOGITS_4D = _np(1, 2, 3, 4, scale=2.0)
LOGITS_4D = jnp.asarray(_LOGITS_4D)
LOGITS_4D_MOVED = jnp.asarray(np.moveaxis(_LOGITS_4D, 1, 3))
LABELS_FLAT = _ints(12, 1, 2)
_PREDS = _np(3, 4)
PREDS = jnp.asarray(_PREDS)
TARGETS = _f32(3, 4)
_log_preds = _np(3, 4)
LOG_PREDS = jnp.asarray(_log_preds - np.log(np.exp(_log_preds).sum(-1, keepdims=True)))
_target_probs = _softmax(_np(3, 4))
_target_probs[0, 2] = 0.0
TARGET_PROBS = jnp.asarray(_target_probs)
LOG_TARGETS = jnp.asarray(np.log(_softmax(_np(3, 4))))
SEG_LOGITS = _f32(2, 4, 4, 3)
SEG_TARGETS = _one_hot(_ints_np(3, 2, 4, 4), 3)
SEG_PROBS = jnp.asarray(_softmax(np.asarray(SEG_LOGITS)))
BIN_LOGITS = _f32(2, 4, 4)
BIN_TARGETS = jnp.asarray(_bits_np(2, 4, 4).astype(np.float32))
EMBEDDINGS = _f32(6, 3)
GROUPS = jnp.array([0, 0, 1, 1, 2, 2])

# CTC: B=2, T=6, K=4 (blank 0), N=3; the second sequence repeats a label and
# has one padded label and two padded frames.
CTC_LOGITS = _f32(2, 6, 4)
CTC_LOGIT_PADS = jnp.array([[0.] * 6, [0.] * 4 + [1.] * 2])
CTC_LABELS = jnp.array([[1, 2, 3], [2, 2, 0]])
CTC_LABEL_PADS = jnp.array([[0., 0., 0.], [0., 0., 1.]])
CTC_ARGS = (CTC_LOGITS, CTC_LOGIT_PADS, CTC_LABELS, CTC_LABEL_PADS)

BITS = _bits(4, 5)
SIGNS = _signs(4, 5)
WEIGHTS = jnp.asarray(np.abs(_np(4, 5)))
LARGE_EMBEDDINGS = _f32(6, 3, scale=1e3)
NEGATIVES = _f32(3, 4)

# (id, name, args, kwargs): ours and Optax's ``name(*args, **kwargs)``.
CASES = [
    # Binary and elementwise classification losses.
    ('sbce', 'sigmoid_binary_cross_entropy', (LOGITS, BITS), {}),
    ('sbce-large', 'sigmoid_binary_cross_entropy', (LARGE, BITS), {}),
    ('sbce-zeros-soft', 'sigmoid_binary_cross_entropy', (ZEROS, SOFT), {}),
    ('focal-soft', 'sigmoid_focal_loss', (LOGITS, SOFT), dict(alpha=0.25, gamma=1.5)),
    ('focal-large', 'sigmoid_focal_loss', (LARGE, BITS), dict(alpha=0.75)),
    ('focal-gamma0', 'sigmoid_focal_loss', (ZEROS, BITS), dict(gamma=0.0)),
    ('hinge', 'hinge_loss', (LOGITS, SIGNS), {}),
    ('perceptron', 'perceptron_loss', (LOGITS, SIGNS), {}),
    ('sparsemax', 'sparsemax_loss', (LOGITS, BITS), {}),
    ('sparsemax-large', 'sparsemax_loss', (LARGE, BITS), {}),
    # Multiclass losses on integer labels.
    ('mc-hinge', 'multiclass_hinge_loss', (LOGITS, LABELS), {}),
    ('mc-hinge-large', 'multiclass_hinge_loss', (LARGE, LABELS), {}),
    ('mc-perceptron', 'multiclass_perceptron_loss', (LOGITS, LABELS), {}),
    ('mc-sparsemax', 'multiclass_sparsemax_loss', (LOGITS, LABELS), {}),
    ('mc-sparsemax-large', 'multiclass_sparsemax_loss', (LARGE, LABELS), {}),
    # Cross entropies.
    ('sce-onehot', 'softmax_cross_entropy', (LOGITS, ONE_HOT), {}),
    ('sce-soft', 'softmax_cross_entropy', (LOGITS, SOFT), {}),
    ('sce-large', 'softmax_cross_entropy', (LARGE, ONE_HOT), {}),
    ('sce-zeros', 'softmax_cross_entropy', (ZEROS, SOFT), {}),
    ('sce-axis1', 'softmax_cross_entropy', (LOGITS_3D, PROBS_3D), dict(axis=1)),
    ('sce-axes', 'softmax_cross_entropy', (LOGITS_3D, PROBS_3D), dict(axis=(1, 2))),
    ('sce-where', 'softmax_cross_entropy', (LOGITS, SOFT), dict(where=MASK)),
    ('sce-where-rows', 'softmax_cross_entropy', (LOGITS, SOFT), dict(where=ROW_MASK)),
    ('int', 'softmax_cross_entropy_with_integer_labels', (LOGITS, LABELS), {}),
    ('int-large', 'softmax_cross_entropy_with_integer_labels', (LARGE, LABELS), {}),
    ('int-zeros', 'softmax_cross_entropy_with_integer_labels', (ZEROS, LABELS), {}),
    ('int-axis0', 'softmax_cross_entropy_with_integer_labels',
     (jnp.asarray(_LOGITS.T), LABELS), dict(axis=0)),
    ('int-axes', 'softmax_cross_entropy_with_integer_labels',
     (LOGITS_4D, LABELS_FLAT), dict(axis=(2, 3))),
    ('int-axes-moved', 'softmax_cross_entropy_with_integer_labels',
     (LOGITS_4D_MOVED, LABELS_FLAT), dict(axis=(1, 2))),
    ('int-where', 'softmax_cross_entropy_with_integer_labels',
     (LOGITS, LABELS), dict(where=MASK_ROW_2_OFF)),
    ('int-where-rows', 'softmax_cross_entropy_with_integer_labels',
     (LOGITS, LABELS), dict(where=ROW_MASK)),
    ('safe', 'safe_softmax_cross_entropy', (LOGITS, SOFT), {}),
    ('safe-neg-inf', 'safe_softmax_cross_entropy', (NEG_INF, SOFT_NO_1), {}),
    ('safe-large', 'safe_softmax_cross_entropy', (LARGE, ONE_HOT), {}),
    ('poly', 'poly_loss_cross_entropy', (LOGITS, ONE_HOT), {}),
    ('poly-eps', 'poly_loss_cross_entropy', (LOGITS, SOFT), dict(epsilon=-1.0)),
    ('poly-where', 'poly_loss_cross_entropy', (LOGITS, SOFT), dict(where=MASK)),
    ('poly-axis1', 'poly_loss_cross_entropy', (LOGITS_3D, PROBS_3D), dict(axis=1)),
    ('smooth', 'smooth_labels', (ONE_HOT, 0.1), {}),
    ('smooth-where', 'smooth_labels', (ONE_HOT, 0.2), dict(where=MASK)),
    ('smooth-axis1', 'smooth_labels', (PROBS_3D, 0.1), dict(axis=1)),
    # Divergences (the targets have a zero).
    ('kl', 'kl_divergence', (LOG_PREDS, TARGET_PROBS), {}),
    ('kl-where', 'kl_divergence', (LOG_PREDS, TARGET_PROBS), dict(where=MASK[:3, :4])),
    ('kl-axis0', 'kl_divergence',
     (jnp.asarray(np.asarray(LOG_PREDS).T), jnp.asarray(_target_probs.T)),
     dict(axis=0)),
    ('kl-log', 'kl_divergence_with_log_targets', (LOG_PREDS, LOG_TARGETS), {}),
    ('kl-log-all', 'kl_divergence_with_log_targets', (LOG_PREDS, LOG_TARGETS),
     dict(axis=None)),
    ('gkl', 'generalized_kl_divergence', (LOG_PREDS, TARGET_PROBS * 2.0), {}),
    ('gkl-where', 'generalized_kl_divergence', (LOG_PREDS, TARGET_PROBS),
     dict(where=MASK[:3, :4])),
    ('convex-kl', 'convex_kl_divergence', (LOG_PREDS, TARGET_PROBS * 2.0), {}),
    # CTC.
    ('ctc-blank3', 'ctc_loss', CTC_ARGS, dict(blank_id=3, log_epsilon=-1e4)),
    ('ctc-forward', 'ctc_loss_with_forward_probs', CTC_ARGS, {}),
    # Regression.
    ('se', 'squared_error', (PREDS, TARGETS), {}),
    ('se-no-targets', 'squared_error', (PREDS,), {}),
    ('l2', 'l2_loss', (PREDS, TARGETS), {}),
    ('l2-no-targets', 'l2_loss', (PREDS,), {}),
    ('huber', 'huber_loss', (jnp.asarray(_PREDS * 3.0), TARGETS), {}),
    ('huber-delta', 'huber_loss', (PREDS, None), dict(delta=0.5)),
    ('log-cosh', 'log_cosh', (PREDS, TARGETS), {}),
    ('log-cosh-large', 'log_cosh', (jnp.asarray(_PREDS * 1e4),), {}),
    ('cos', 'cosine_similarity', (PREDS, TARGETS), {}),
    ('cos-eps-axis0', 'cosine_similarity', (PREDS, TARGETS), dict(epsilon=0.1, axis=0)),
    ('cos-where', 'cosine_similarity', (PREDS, TARGETS), dict(where=MASK[:3, :4])),
    ('cos-zero-row', 'cosine_similarity',
     (jnp.asarray(np.where(np.arange(3)[:, None] == 1, 0.0, _PREDS).astype(np.float32)),
      TARGETS), dict(epsilon=1e-6)),
    ('cos-dist', 'cosine_distance', (PREDS, TARGETS), {}),
    ('cos-dist-all', 'cosine_distance', (PREDS, TARGETS), dict(axis=None)),
    # Ranking.
    ('rank', 'ranking_softmax_loss', (LOGITS, SOFT), {}),
    ('rank-where', 'ranking_softmax_loss', (LOGITS, ONE_HOT), dict(where=MASK)),
    ('rank-weights-sum', 'ranking_softmax_loss', (LOGITS, SOFT),
     dict(weights=WEIGHTS, reduce_fn=jnp.sum)),
    ('rank-none', 'ranking_softmax_loss', (LOGITS, SOFT),
     dict(where=MASK_ROW_2_OFF, reduce_fn=None)),
    ('rank-all-masked', 'ranking_softmax_loss', (LOGITS, SOFT),
     dict(where=jnp.zeros((4, 5), bool))),
    # Segmentation.
    ('dice', 'dice_loss', (SEG_LOGITS, SEG_TARGETS), {}),
    ('dice-tversky-sum', 'dice_loss', (SEG_LOGITS, SEG_TARGETS),
     dict(alpha=0.3, beta=0.7, smooth=0.5, reduction='sum')),
    ('dice-weights-none', 'dice_loss', (SEG_LOGITS, SEG_TARGETS),
     dict(class_weights=jnp.array([0.2, 1.0, 2.0]), ignore_background=True,
          reduction='none')),
    ('dice-binary', 'dice_loss', (BIN_LOGITS, BIN_TARGETS[..., None]), {}),
    ('gdice', 'multiclass_generalized_dice_loss', (SEG_LOGITS, SEG_TARGETS), {}),
    ('gdice-bg', 'multiclass_generalized_dice_loss', (SEG_LOGITS, SEG_TARGETS),
     dict(ignore_background=True, smooth=0.1)),
    ('bdice', 'binary_dice_loss', (BIN_LOGITS, BIN_TARGETS), {}),
    # Self-supervised.
    ('ntxent', 'ntxent', (EMBEDDINGS, GROUPS), {}),
    ('ntxent-large', 'ntxent',
     (LARGE_EMBEDDINGS, jnp.array([0, 1, 0, 1, 2, 2]), 0.5), {}),
    ('triplet', 'triplet_margin_loss', (PREDS, TARGETS, NEGATIVES), {}),
    ('triplet-deg4', 'triplet_margin_loss', (PREDS, TARGETS, NEGATIVES),
     dict(norm_degree=4, margin=0.5, eps=1e-3)),
]
CASE_IDS = [c[0] for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


def _assert_close(ours, ref, what=''):
  assert jax.tree.structure(ours) == jax.tree.structure(ref), what
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=what)
    assert a.dtype == b.dtype, f'{what}: dtype {a.dtype} != {b.dtype}'


@functools.cache
def _outputs(library: str) -> dict:
  """Every case of ``library`` ('ours' or 'optax'), in one compiled program."""
  module = losses if library == 'ours' else optax.losses
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    out = batched.run_calls([(getattr(module, name), args, kwargs)
                             for _, name, args, kwargs in CASES])
  return dict(zip(CASE_IDS, out))


@pytest.mark.parametrize('case_id', CASE_IDS)
def test_equals_optax(case_id):
  _assert_close(_outputs('ours')[case_id], _outputs('optax')[case_id], case_id)


def test_eager_call_with_host_validation_equals_optax():
  """apply_softmax=False validates the probabilities on the host: no jit."""
  kwargs = dict(apply_softmax=False, axis=(0, 1, 2))
  _assert_close(losses.dice_loss(SEG_PROBS, SEG_TARGETS, **kwargs),
                optax.losses.dice_loss(SEG_PROBS, SEG_TARGETS, **kwargs))


def test_every_loss_is_tested_against_optax():
  public = {n for n in dir(optax.losses) if not n.startswith('_')}
  tested = {c[1] for c in CASES} | {'make_fenchel_young_loss'}
  assert public - tested == set()


@pytest.mark.parametrize('module', ['losses', 'top level'])
def test_every_optax_name_resolves(module):
  public = {n for n in dir(optax.losses) if not n.startswith('_')}
  if module == 'losses':
    names, ours = public, optim.losses
  else:
    # The loss names Optax also exports at the top level.
    names, ours = public & set(dir(optax)), optim
  assert len(names) >= 19
  missing = sorted(names - set(dir(ours)))
  assert not missing, f'missing in research.optim ({module}): {missing}'
  for n in names:
    assert getattr(ours, n) is getattr(losses, n), n


# --- Properties, on the outputs above. ------------------------------------------------

def test_safe_cross_entropy_ignores_zero_label_at_minus_inf():
  """0 log 0 = 0: a class with logit -inf and label 0 adds nothing."""
  assert np.all(np.isfinite(_outputs('ours')['safe-neg-inf']))


def test_cross_entropies_agree_with_each_other():
  out = _outputs('ours')
  np.testing.assert_allclose(out['sce-onehot'], out['int'], rtol=TOL, atol=TOL)
  # Large logits: finite, and the gap between the top logit and the label's.
  large = np.asarray(LARGE)
  gap = large.max(-1) - large[np.arange(4), _LABELS]
  np.testing.assert_allclose(out['int-large'], gap, rtol=TOL)
  np.testing.assert_allclose(out['sce-large'], gap, rtol=TOL)


def test_masked_row_has_zero_loss():
  out = np.asarray(_outputs('ours')['int-where'])
  assert out[2] == 0.0 and np.all(out[[0, 1, 3]] > 0)


def test_gamma_zero_focal_loss_is_cross_entropy():
  out = _outputs('ours')
  np.testing.assert_allclose(out['focal-gamma0'], np.full((4, 5), np.log(2.0)),
                             rtol=TOL)


# --- Gradients of the main losses. ---------------------------------------------------

def _grad_of_sum(fn):
  def grad(x, *rest, **kwargs):
    return jax.grad(lambda y: jnp.sum(fn(y, *rest, **kwargs)))(x)
  return grad


GRAD_IDS = [
    'sce-soft', 'sce-large', 'sce-where', 'int', 'int-large', 'int-axes',
    'int-where', 'safe-neg-inf', 'sbce-zeros-soft', 'focal-soft', 'poly',
    'mc-sparsemax', 'kl', 'ctc-blank3', 'cos', 'ntxent', 'dice', 'sparsemax']
GRAD_CASES = [c for c in CASES if c[0] in GRAD_IDS]
assert len(GRAD_CASES) == len(GRAD_IDS)


@functools.cache
def _gradients(library: str) -> dict:
  module = losses if library == 'ours' else optax.losses
  out = batched.run_calls([(_grad_of_sum(getattr(module, name)), args, kwargs)
                           for _, name, args, kwargs in GRAD_CASES])
  return dict(zip([c[0] for c in GRAD_CASES], out))


@pytest.mark.parametrize('case_id', GRAD_IDS)
def test_gradient_equals_optax(case_id):
  ours, ref = _gradients('ours')[case_id], _gradients('optax')[case_id]
  assert np.all(np.isfinite(ours)), f'{case_id}: non-finite gradient'
  assert np.any(np.asarray(ours) != 0), f'{case_id}: a zero gradient proves nothing'
  _assert_close(ours, ref, case_id)


# --- make_fenchel_young_loss. --------------------------------------------------------

def test_fenchel_young_loss_equals_optax_and_cross_entropy():
  ours = losses.make_fenchel_young_loss(logsumexp)
  ref = optax.losses.make_fenchel_young_loss(logsumexp)
  o_val, o_grad, r_val, r_grad, ce = batched.run_fast(lambda s, y: (
      ours(s, y), _grad_of_sum(ours)(s, SOFT), ref(s, y),
      _grad_of_sum(ref)(s, SOFT), losses.softmax_cross_entropy(s, y)),
      LOGITS, ONE_HOT)
  _assert_close(o_val, r_val)
  _assert_close(o_grad, r_grad)
  # With logsumexp and one-hot targets it is the softmax cross entropy.
  np.testing.assert_allclose(o_val, ce, rtol=1e-5)  # Two float32 formulas.


# --- Errors name the argument and its value. ------------------------------------------

ERRORS = {
    'float-logits': (lambda: losses.softmax_cross_entropy(LABELS, ONE_HOT),
                     TypeError, 'logits has dtype int32'),
    'int-labels': (lambda: losses.softmax_cross_entropy_with_integer_labels(
        LOGITS, ONE_HOT), TypeError, 'labels has dtype float32'),
    'axis-type': (lambda: losses.softmax_cross_entropy_with_integer_labels(
        LOGITS, LABELS, axis=[1]), ValueError, r'axis=\[1\]'),
    'axis-range': (lambda: losses.softmax_cross_entropy_with_integer_labels(
        LOGITS, LABELS, axis=2), ValueError, 'axis=2 is out of range'),
    'shapes': (lambda: losses.squared_error(PREDS, TARGETS[:2]), ValueError,
               r'predictions has shape \(3, 4\) and targets has shape \(2, 4\)'),
    'perceptron-shapes': (lambda: losses.perceptron_loss(PREDS, TARGETS.T),
                          ValueError, 'targets'),
    'reduction': (lambda: losses.dice_loss(SEG_LOGITS, SEG_TARGETS, reduction='max'),
                  ValueError, "reduction='max'"),
    'not-probs': (lambda: losses.dice_loss(SEG_LOGITS, SEG_TARGETS,
                                           apply_softmax=False),
                  ValueError, 'must sum to 1'),
    # As in Optax: one channel of probabilities never sums to 1 over classes.
    'binary-not-probs': (lambda: losses.binary_dice_loss(
        SEG_PROBS[..., :1], SEG_TARGETS[..., :1], apply_sigmoid=False),
        ValueError, 'must sum to 1'),
    'ctc-rank': (lambda: losses.ctc_loss(CTC_LOGITS[0], *CTC_ARGS[1:]),
                 ValueError, 'logits has shape'),
    'ntxent-batch': (lambda: losses.ntxent(EMBEDDINGS, jnp.array([0, 1])),
                     ValueError, 'labels has leading dimension 2'),
}


@pytest.mark.parametrize('case_id', list(ERRORS))
def test_errors(case_id):
  call, error, match = ERRORS[case_id]
  with pytest.raises(error, match=match):
    call()


def test_convex_kl_divergence_is_deprecated():
  with pytest.warns(DeprecationWarning, match='generalized_kl_divergence'):
    jax.eval_shape(losses.convex_kl_divergence, LOG_PREDS, TARGET_PROBS)
