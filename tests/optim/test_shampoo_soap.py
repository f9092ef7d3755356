"""Shampoo and SOAP (not in Optax): the papers' update equations written out
in NumPy are the reference.

The by-hand checks run in float64 (``jax.enable_x64``), so the only
differences are those between LAPACK's and SciPy's ways of computing the
same eigenvectors, QR factors and matrix roots; they are compared at
``rtol = 1e-8``. Eigenvectors are defined up to sign, and both updates are
invariant to the signs, so the comparison is of updates, never of bases.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from research import data
from research import models
from research import optim
from tests.optim import harness

RTOL, ATOL = 1e-8, 1e-10  # float64 (see the module docstring)
# A 4x3 matrix, a conv kernel seen as the 4x3 matrix (2*1*2, 3), a vector.
SHAPES = {'w': (4, 3), 'k': (2, 1, 2, 3), 'v': (3,)}


def _grads(steps, seed=0):
  rng = np.random.default_rng(seed)
  return [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(steps)]


def _run(opt, grads):
  """Our updates for a list of gradient dicts, under jit, in float64."""
  with jax.enable_x64(True):
    params = {k: jnp.zeros(s, jnp.float64) for k, s in SHAPES.items()}
    state = opt.init(params)
    update = jax.jit(opt.update)
    out = []
    for g in grads:
      # An unknown keyword, as a chain may pass one, is accepted.
      u, state = update(jax.tree.map(jnp.asarray, g), state, params, unknown=1.0)
      out.append(jax.device_get(u))
  return out, state


def _assert_updates_equal(ours, reference):
  for t, (a, b) in enumerate(zip(ours, reference), 1):
    for k in b:
      np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL,
                                 err_msg=f'step {t}, leaf {k!r}')


# --- Shampoo written out ------------------------------------------------------


def _np_inverse_root(a, p, matrix_eps):
  """``(A + eps lambda_max I)^{-1/p}`` by SciPy's fractional matrix power."""
  top = np.linalg.eigvalsh(a).max()
  ridge = matrix_eps * top * np.eye(len(a))
  return np.real(scipy.linalg.fractional_matrix_power(a + ridge, -1.0 / p))


def _np_graft(kind, g, acc, b2, eps):
  if kind == 'sgd':
    return g, acc
  acc = acc + g * g if kind == 'adagrad' else b2 * acc + (1 - b2) * g * g
  return g / (np.sqrt(acc) + eps), acc


def _np_shampoo(grads, *, b1, b2, eps, matrix_eps, graft, block, max_dim,
                freq, start, nesterov, p):
  """Gupta et al.'s statistics and roots with Anil et al.'s EMA, blocks,
  cached roots, grafting D = S ||A|| / ||S|| and heavy-ball momentum."""
  kind = 'adagrad' if graft == 'none' else graft
  weight = 1.0 if b2 == 1.0 else 1.0 - b2
  mom = {k: np.zeros(s) for k, s in SHAPES.items()}
  acc = {k: np.zeros(s) for k, s in SHAPES.items()}
  stat_l, stat_r, root_l, root_r = {}, {}, {}, {}
  out = []
  for t, g in enumerate(grads, 1):
    u = {}
    for k, gk in g.items():
      graft_dir, acc[k] = _np_graft(kind, gk, acc[k], b2, eps)
      mat = gk.reshape(-1, gk.shape[-1]) if gk.ndim >= 2 else None
      if mat is None or max(mat.shape) > max_dim:
        d = graft_dir
      else:
        s = np.zeros_like(mat)
        for r in range(0, mat.shape[0], block):
          for c in range(0, mat.shape[1], block):
            key, b = (k, r, c), mat[r:r + block, c:c + block]
            stat_l[key] = b2 * stat_l.get(key, 0.0) + weight * b @ b.T
            stat_r[key] = b2 * stat_r.get(key, 0.0) + weight * b.T @ b
            if (t - 1) % freq == 0:
              root_l[key] = _np_inverse_root(stat_l[key], p, matrix_eps)
              root_r[key] = _np_inverse_root(stat_r[key], p, matrix_eps)
            s[r:r + block, c:c + block] = root_l[key] @ b @ root_r[key]
        s = s.reshape(gk.shape)
        if graft != 'none':
          s = s * np.linalg.norm(graft_dir) / np.linalg.norm(s)
        d = s if t >= start else graft_dir
      mom[k] = b1 * mom[k] + d
      u[k] = b1 * mom[k] + d if nesterov else mom[k]
    out.append(u)
  return out


SHAMPOO_CASES = [
    # Sums, roots at steps 1, 3, 5, one block, Adagrad grafting.
    dict(b1=0.5, b2=1.0, graft='adagrad', block_size=100, max_precond_dim=100,
         precondition_frequency=2, start_preconditioning_step=1,
         nesterov=False, exponent_override=None),
    # EMA statistics, 2x2 blocks (the last ones 2x1), RMSprop grafting,
    # grafted steps before step 2, Nesterov.
    dict(b1=0.9, b2=0.9, graft='rmsprop', block_size=2, max_precond_dim=100,
         precondition_frequency=3, start_preconditioning_step=2,
         nesterov=True, exponent_override=None),
    # SGD grafting, roots every step; rows of 4 > 3 leave the matrices to SGD.
    dict(b1=0.0, b2=0.8, graft='sgd', block_size=2, max_precond_dim=3,
         precondition_frequency=1, start_preconditioning_step=1,
         nesterov=False, exponent_override=None),
    # No grafting (the vector takes Adagrad's direction), p = 2.
    dict(b1=0.5, b2=1.0, graft='none', block_size=None, max_precond_dim=100,
         precondition_frequency=2, start_preconditioning_step=3,
         nesterov=False, exponent_override=2),
]


@pytest.mark.parametrize('case', SHAMPOO_CASES, ids=lambda c: c['graft'])
def test_shampoo_equals_the_equations(case):
  eps, matrix_eps, steps = 1e-3, 1e-4, 5
  grads = _grads(steps)
  opt = optim.scale_by_shampoo(eps=eps, matrix_eps=matrix_eps, **case)
  ours, state = _run(opt, grads)
  block = case['block_size'] or 100
  reference = _np_shampoo(
      grads, b1=case['b1'], b2=case['b2'], eps=eps, matrix_eps=matrix_eps,
      graft=case['graft'], block=block, max_dim=case['max_precond_dim'],
      freq=case['precondition_frequency'],
      start=case['start_preconditioning_step'], nesterov=case['nesterov'],
      p=case['exponent_override'] or 4)
  _assert_updates_equal(ours, reference)
  assert int(state.count) == steps
  if case['block_size'] == 2 and case['max_precond_dim'] == 100:
    # Blocks (0:2, 2:4) x (0:2, 2:3): four pairs of factors, 2x2 and 2x1.
    shapes = [(l.shape, r.shape) for l, r in state.stats['w']]
    assert shapes == [((2, 2), (2, 2)), ((2, 2), (1, 1))] * 2


def test_shampoo_keeps_roots_between_refreshes():
  # With f = 3 the roots of step 1 serve steps 2 and 3: the cached
  # preconditioners change at steps 1 and 4 only.
  opt = optim.scale_by_shampoo(precondition_frequency=3)
  params = {'w': jnp.zeros((4, 3))}
  state = opt.init(params)
  update = jax.jit(opt.update)
  seen = []
  for g in _grads(4):
    _, state = update({'w': jnp.asarray(g['w'], jnp.float32)}, state)
    seen.append(np.asarray(state.preconds['w'][0][0]))
  np.testing.assert_array_equal(seen[0], seen[1])
  np.testing.assert_array_equal(seen[0], seen[2])
  assert not np.allclose(seen[2], seen[3])


# --- SOAP written out ---------------------------------------------------------


def _np_soap(grads, *, b1, b2, eps, freq, max_dim, beta_s):
  """Vyas et al.'s Algorithm with their code's first step (statistics and
  eigh only, no update) and refresh (sort by diag(Q^T S Q), one power
  iteration and QR, v permuted, m rotated into the new basis)."""
  st = {}
  out = []
  for t, g in enumerate(grads, 1):
    u = {}
    for k, gk in g.items():
      mat = gk.reshape(-1, gk.shape[-1]) if gk.ndim >= 2 else gk
      use = [d <= max_dim for d in mat.shape] if gk.ndim >= 2 else [False] * 2
      eye = [np.eye(d) for d in mat.shape] if gk.ndim >= 2 else None
      s = st.setdefault(k, dict(m=np.zeros_like(mat), v=np.zeros_like(mat),
                                S=[None, None], Q=[None, None]))
      grams = [mat @ mat.T, mat.T @ mat] if gk.ndim >= 2 else None
      if t == 1:
        for i in range(2):
          if use[i]:
            s['S'][i] = (1 - beta_s) * grams[i]
            s['Q'][i] = np.linalg.eigh(s['S'][i])[1][:, ::-1]
        u[k] = np.zeros_like(gk)
        continue
      n = t - 1
      q_l, q_r = [s['Q'][i] if use[i] else (eye[i] if eye else None)
                  for i in range(2)]
      rot = (lambda x: q_l.T @ x @ q_r) if eye else (lambda x: x)
      back = (lambda x: q_l @ x @ q_r.T) if eye else (lambda x: x)
      gp = rot(mat)
      s['m'] = b1 * s['m'] + (1 - b1) * gp
      s['v'] = b2 * s['v'] + (1 - b2) * gp**2
      step = (s['m'] / (1 - b1**n)) / (np.sqrt(s['v'] / (1 - b2**n)) + eps)
      u[k] = back(step).reshape(gk.shape)
      for i in range(2):
        if use[i]:
          s['S'][i] = beta_s * s['S'][i] + (1 - beta_s) * grams[i]
      if eye and n % freq == 0:
        m_orig = back(s['m'])
        for i in range(2):
          if use[i]:
            q, sm = s['Q'][i], s['S'][i]
            order = np.argsort(-np.diag(q.T @ sm @ q), kind='stable')
            s['v'] = np.take(s['v'], order, axis=i)
            s['Q'][i] = np.linalg.qr(sm @ q[:, order])[0]
        q_l, q_r = [s['Q'][i] if use[i] else eye[i] for i in range(2)]
        s['m'] = q_l.T @ m_orig @ q_r
    out.append(u)
  return out


SOAP_CASES = [
    dict(b1=0.9, b2=0.95, precondition_frequency=2, max_precond_dim=100,
         shampoo_beta=None),
    # Rows of 4 > 3: only the right side is rotated. Refresh every step.
    dict(b1=0.8, b2=0.9, precondition_frequency=1, max_precond_dim=3,
         shampoo_beta=0.7),
]


@pytest.mark.parametrize('case', SOAP_CASES, ids=['both-sides', 'right-side'])
def test_soap_equals_the_equations(case):
  eps, steps = 1e-3, 6
  grads = _grads(steps, seed=1)
  ours, state = _run(optim.scale_by_soap(eps=eps, **case), grads)
  beta_s = case['shampoo_beta'] or case['b2']
  reference = _np_soap(grads, b1=case['b1'], b2=case['b2'], eps=eps,
                       freq=case['precondition_frequency'],
                       max_dim=case['max_precond_dim'], beta_s=beta_s)
  _assert_updates_equal(ours, reference)
  rotated = [q is not None for q in state.eigvecs['w']]
  assert rotated == [case['max_precond_dim'] >= 4, True]
  assert state.eigvecs['v'] == (None, None)


def test_soap_on_vectors_is_adam_after_a_silent_first_step():
  g = jnp.array([0.5, -1.0, 2.0])
  opt = optim.scale_by_soap(b1=0.9, b2=0.99, eps=1e-8)
  adam = optim.scale_by_adam(b1=0.9, b2=0.99, eps=1e-8)
  u, state = opt.update(g, opt.init(g))
  np.testing.assert_array_equal(u, jnp.zeros(3))
  adam_state = adam.init(g)
  for scale in (1.0, -0.5, 2.0):
    u, state = opt.update(scale * g, state)
    want, adam_state = adam.update(scale * g, adam_state)
    np.testing.assert_allclose(u, want, rtol=1e-6)


# --- contracts: jit, cond, dtypes, convergence ------------------------------

CONTRACT_OPTS = {
    'shampoo': lambda: optim.shampoo(0.1, precondition_frequency=2,
                                     weight_decay=1e-3),
    'soap': lambda: optim.soap(0.01, precondition_frequency=2),
}


@pytest.mark.parametrize('name', list(CONTRACT_OPTS))
def test_state_is_stable_under_cond_and_keeps_bfloat16(name):
  opt = CONTRACT_OPTS[name]()
  harness.assert_state_stable_under_cond(opt)
  # The same check jitted (eager lax.cond recompiles at every call).
  jitted = optim.GradientTransformation(opt.init, jax.jit(opt.update))
  harness.assert_dtypes_preserved(jitted, jnp.bfloat16)


@pytest.mark.parametrize('name,opt,ratio', [
    ('shampoo', optim.shampoo(0.3, precondition_frequency=5), 0.05),
    ('soap', optim.soap(0.1, weight_decay=0.0, precondition_frequency=5), 0.05),
])
def test_converges_on_the_reference_quadratic(name, opt, ratio):
  # The harness's quadratic (scalar, vector, matrix, conv kernel): the
  # distance to the target must shrink to a small fraction of the start.
  steps = 100
  problem = harness.make_problem(jnp.float32, steps=steps)
  traj, _ = harness.run_trajectory(opt, problem, steps, variant=jax.jit)
  def dist(p):
    return sum(float(np.sum((np.asarray(p[k]) - problem.target[k])**2)) for k in p)
  final = {k: v[-1] for k, v in traj.items()}
  assert dist(final) < ratio * dist(problem.params), (
      f'{name}: squared distance {dist(final):.3g} from {dist(problem.params):.3g}')


# --- MNIST-1D -----------------------------------------------------------------


@pytest.fixture(scope='module')
def mnist1d_batches():
  arrays = data.load_mnist1d()
  rng = np.random.default_rng(0)
  idx = rng.integers(0, len(arrays['x_train']), size=(300, 64))
  return (jnp.asarray(arrays['x_train'][idx], jnp.float32),
          jnp.asarray(arrays['y_train'][idx], jnp.int32))


@pytest.mark.parametrize('name,opt', [
    ('shampoo', optim.shampoo(0.02, precondition_frequency=10)),
    ('soap', optim.soap(3e-3, precondition_frequency=10)),
])
def test_reduces_mnist1d_mlp_loss(name, opt, mnist1d_batches):
  config = models.default_config('mnist1d_mlp')
  config.width = 32
  model, variables = models.init_model(config, jax.random.key(0))
  xs, ys = mnist1d_batches

  def loss_fn(params, x, y):
    logits = model.apply({'params': params}, x)
    return jnp.mean(-jnp.take_along_axis(
        jax.nn.log_softmax(logits), y[:, None], axis=1))

  def body(carry, batch):
    params, state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, state = opt.update(grads, state, params)
    return (optim.apply_updates(params, updates), state), loss

  @jax.jit
  def train(params):
    return jax.lax.scan(body, (params, opt.init(params)), (xs, ys))[1]

  losses = np.asarray(train(variables['params']))
  first, last = losses[:10].mean(), losses[-20:].mean()
  assert np.isfinite(losses).all()
  assert last < 0.6 * first, f'{name}: loss {first:.3f} -> {last:.3f}'


# --- bad inputs ---------------------------------------------------------------


@pytest.mark.parametrize('factory,kwargs,match', [
    (optim.scale_by_shampoo, dict(b1=1.0), 'b1=1.0'),
    (optim.scale_by_shampoo, dict(b2=0.0), 'b2=0.0'),
    (optim.scale_by_shampoo, dict(b2=1.5), 'b2=1.5'),
    (optim.scale_by_shampoo, dict(eps=-1.0), 'eps=-1.0'),
    (optim.scale_by_shampoo, dict(matrix_eps=0.0), 'matrix_eps=0.0'),
    (optim.scale_by_shampoo, dict(graft='adam'), "graft='adam'"),
    (optim.scale_by_shampoo, dict(graft='rmsprop'), 'b2=1.0'),
    (optim.scale_by_shampoo, dict(block_size=0), 'block_size=0'),
    (optim.scale_by_shampoo, dict(block_size=2.5), 'block_size=2.5'),
    (optim.scale_by_shampoo, dict(max_precond_dim=0), 'max_precond_dim=0'),
    (optim.scale_by_shampoo, dict(precondition_frequency=0),
     'precondition_frequency=0'),
    (optim.scale_by_shampoo, dict(start_preconditioning_step=0),
     'start_preconditioning_step=0'),
    (optim.scale_by_shampoo, dict(exponent_override=0), 'exponent_override=0'),
    (optim.shampoo, dict(learning_rate=-0.1), 'learning_rate=-0.1'),
    (optim.shampoo, dict(learning_rate=0.1, weight_decay=-1.0), 'weight_decay=-1.0'),
    (optim.scale_by_soap, dict(b1=1.0), 'b1=1.0'),
    (optim.scale_by_soap, dict(b2=-0.1), 'b2=-0.1'),
    (optim.scale_by_soap, dict(eps=-1.0), 'eps=-1.0'),
    (optim.scale_by_soap, dict(shampoo_beta=1.0), 'shampoo_beta=1.0'),
    (optim.scale_by_soap, dict(precondition_frequency=True),
     'precondition_frequency=True'),
    (optim.scale_by_soap, dict(max_precond_dim=-1), 'max_precond_dim=-1'),
    (optim.soap, dict(learning_rate=-1.0), 'learning_rate=-1.0'),
])
def test_rejects_bad_hyperparameters(factory, kwargs, match):
  with pytest.raises(ValueError, match=match):
    factory(**kwargs)


@pytest.mark.parametrize('factory', [optim.scale_by_shampoo, optim.scale_by_soap])
def test_rejects_complex_params(factory):
  with pytest.raises(ValueError, match='complex'):
    factory().init({'w': jnp.ones((2, 2), jnp.complex64)})
