"""Precision policies on CPU: float32, bfloat16 and float16 (loss scaling).

Measured on this machine (MNIST-1D, 1000 training examples, Adam 3e-3, batch
100, 200 steps; loss over the 1000 examples): see ``REL_TOL``.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import models
from research import optim
from research.data import pipeline
from research.train import checkpoints as ckpt_lib
from research.train import precision
from research.train import state as state_lib
from research.train import steps as steps_lib
from research.train import trainer as trainer_lib
from tests.train import helpers

POLICIES = ('float32', 'bfloat16', 'float16')
COMPUTE = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
STEPS, DISPATCH = 200, 50
# |loss(policy) - loss(float32)| / loss(float32) after STEPS steps. Measured:
# MLP 0.4% (bfloat16), 0.4% (float16); CNN 1.5% (bfloat16), 1.9% (float16)
# (5.4% for the CNN in bfloat16 after 300 steps).
REL_TOL = 0.10
TX = optim.make('adam', 3e-3)  # one object: a static part of every state below


def _state(name='mnist1d_mlp', tx=TX, **overrides):
  return helpers.mnist1d_state(name, tx, **overrides)


def _abstract_state(**overrides):
  """Shapes and dtypes only: for checks that refuse before any step."""
  config = models.default_config('mnist1d_mlp')
  config.update(overrides)
  model = models.build_model(config)
  return jax.eval_shape(lambda: state_lib.TrainState.create(
      apply_fn=model.apply, variables=model.init(jax.random.key(0), jnp.zeros((1, 40))),
      tx=TX, rng=jax.random.key(1)))


def _config(**kw):
  c = trainer_lib.default_config()
  c.update(dict(num_steps=STEPS, log_every=STEPS, steps_per_dispatch=DISPATCH,
                data_on_device=True, progress=False, tensorboard=False,
                checkpoints=False, eval_batch_size=1000))
  c.update(kw)
  return c


def _loader():
  x, y = helpers.mnist1d(1000)
  return pipeline.TrainLoader(pipeline.ArraySource(x, y), 100)


def _fit(policy, state=None, workdir=None, **kw):
  x, y = helpers.mnist1d(1000)
  return trainer_lib.Trainer(_config(precision=policy, **kw), workdir).fit(
      state or _state(), _loader(), eval_sets=dict(train=dict(x=x, y=y)))


@pytest.mark.parametrize('name', ['mnist1d_mlp', 'mnist1d_cnn'])
def test_each_policy_trains_close_to_float32(name):
  losses = {}
  for policy in POLICIES:
    result = _fit(policy, _state(name))
    losses[policy] = result.evals[-1]['train']['loss']
    chex.assert_type(jax.tree.leaves(result.state.params), jnp.float32)
    assert result.nonfinite_steps == 0
  assert losses['float32'] < 0.6  # it learned (chance is log 10 = 2.3)
  for policy in ('bfloat16', 'float16'):
    rel = abs(losses[policy] - losses['float32']) / losses['float32']
    assert rel < REL_TOL, (policy, losses)
  # The policy is part of the compiled step: another policy is another program.
  assert losses['bfloat16'] != losses['float32']


def _eqns(jaxpr):
  """Every equation of a jaxpr and of the jaxprs inside it (cond, pjit, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _eqns(inner)


@pytest.mark.parametrize('policy', POLICIES)
def test_dtypes_of_params_state_activations_and_gradients(policy):
  # The BatchNorm CNN; optimizer moments in bfloat16 by optim.make's kwargs.
  tx = optim.make('adam', 1e-3, mu_dtype='bfloat16', nu_dtype='bfloat16')
  scaling = policy == 'float16'
  state = precision.prepare_state(_state('mnist1d_cnn', tx, batch_norm=True), scaling)
  spec = steps_lib.StepSpec(precision=policy, loss_scaling=scaling)
  x, y = helpers.mnist1d(1000)
  batch = dict(x=x[:8], y=y[:8])
  compute = COMPUTE[policy]

  total, aux, grads = jax.eval_shape(
      lambda s, b: steps_lib.loss_and_grads(s, b, jax.random.key(0), spec), state, batch)
  chex.assert_type(jax.tree.leaves(grads), jnp.float32)
  chex.assert_type([total, aux['loss']], jnp.float32)  # the loss is float32
  chex.assert_type(aux['outputs'], compute)

  new, metrics = jax.eval_shape(
      lambda s, b: steps_lib.train_step(s, b, True, spec), state, batch)
  chex.assert_type(jax.tree.leaves(new.params), jnp.float32)
  chex.assert_type(jax.tree.leaves(new.batch_stats), jnp.float32)
  moments = [new.opt_state.inner_state[0].mu, new.opt_state.inner_state[0].nu]
  chex.assert_type(jax.tree.leaves(moments), jnp.bfloat16)
  assert (new.loss_scale is not None) == scaling
  if scaling:
    chex.assert_type([new.loss_scale.scale, metrics['loss_scale']], jnp.float32)

  # Every matmul and convolution of the step, forward and backward, runs in
  # the compute dtype.
  jaxpr = jax.make_jaxpr(lambda s, b: steps_lib.train_step(s, b, True, spec))(state, batch)
  ops = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name in ('dot_general',
                                                                'conv_general_dilated')]
  assert len(ops) >= 8
  chex.assert_type([v.aval for e in ops for v in e.invars], compute)

  # The activations the model sows, and the BatchNorm statistics it updates.
  cast = precision.get_policy(policy).cast_to_compute
  _, sown = jax.eval_shape(lambda s, xb: s.apply_fn(
      {'params': cast(s.params), 'batch_stats': s.batch_stats}, cast(xb), train=True,
      mutable=['activations', 'batch_stats']), state, batch['x'])
  chex.assert_type(jax.tree.leaves(sown['activations']), compute)
  chex.assert_type(jax.tree.leaves(sown['batch_stats']), jnp.float32)


def test_loss_scale_halves_on_overflow_and_grows_after_a_run_of_finite_steps():
  ls = precision.initial_loss_scale(8.0)
  ls = precision.update_loss_scale(ls, jnp.asarray(False))
  assert (float(ls.scale), int(ls.good_steps)) == (4.0, 0)
  for _ in range(precision.GROWTH_INTERVAL - 1):
    ls = precision.LossScale(ls.scale, ls.good_steps + 1)
  assert int(ls.good_steps) == precision.GROWTH_INTERVAL - 1
  ls = precision.update_loss_scale(ls, jnp.asarray(True))
  assert (float(ls.scale), int(ls.good_steps)) == (8.0, 0)
  low = precision.update_loss_scale(precision.initial_loss_scale(1.0), jnp.asarray(False))
  assert float(low.scale) == precision.MIN_SCALE


def test_float16_loss_scaling_recovers_from_a_forced_overflow():
  spec = steps_lib.StepSpec(precision='float16', loss_scaling=True)
  forced = _state().replace(loss_scale=precision.initial_loss_scale(2.0**40))
  x, y = helpers.mnist1d(1000)
  # One step: the scaled gradients overflow float16; the guard skips the step
  # and halves the scale; it is not counted as non-finite.
  new, metrics = jax.jit(steps_lib.train_step, static_argnames='spec')(
      forced, dict(x=x[:100], y=y[:100]), True, spec=spec)
  assert float(metrics['overflow']) == 1.0 and float(metrics['nonfinite']) == 0.0
  assert float(new.loss_scale.scale) == 2.0**39 and int(new.step) == 1
  chex.assert_trees_all_equal((new.params, new.opt_state), (forced.params, forced.opt_state))

  # Through the Trainer (max 3 non-finite steps in a row): the scale comes down
  # by halvings until the step fits float16, then training goes on. The
  # scale is state: starting from another one does not recompile.
  _fit('float16', num_steps=DISPATCH, log_every=DISPATCH)
  compiles = helpers.count_compiles()
  result = _fit('float16', forced, num_steps=DISPATCH, log_every=DISPATCH,
                max_nonfinite_in_row=3)
  assert compiles == []
  scale = float(result.state.loss_scale.scale)
  halvings = 40 - int(np.log2(scale))  # 25 here: 2^15 fits
  assert 10 <= halvings < DISPATCH - 10, scale
  assert result.nonfinite_steps == 0
  # Trained after the overflows: the first step's loss is 4.4, chance 2.3.
  assert result.evals[-1]['train']['loss'] < 2.0
  chex.assert_tree_all_finite(result.state.params)


def test_checkpoints_record_the_policy_and_the_loss_scale(tmp_path):
  first = _fit('float16', workdir=str(tmp_path), num_steps=DISPATCH, log_every=DISPATCH,
               checkpoints=True)
  ck = ckpt_lib.Checkpoints(str(tmp_path / 'checkpoints'))
  meta = ck.read_meta(DISPATCH)
  ck.close()
  assert meta['trainer']['precision'] == 'float16'
  assert meta['trainer']['loss_scaling'] == 'auto'
  resumed = _fit('float16', workdir=str(tmp_path), num_steps=2 * DISPATCH,
                 log_every=DISPATCH, checkpoints=True)
  whole = _fit('float16', num_steps=2 * DISPATCH, log_every=DISPATCH)
  chex.assert_trees_all_close(resumed.state.params, whole.state.params, rtol=1e-6)
  assert isinstance(resumed.state.loss_scale, precision.LossScale)
  assert float(first.state.loss_scale.scale) == precision.INITIAL_SCALE
  with pytest.raises(ValueError, match=r"precision \('float16' there, 'bfloat16' now\)"):
    _fit('bfloat16', workdir=str(tmp_path), num_steps=3 * DISPATCH, checkpoints=True)


def test_profile_steps_write_a_trace_into_the_run_folder(tmp_path):
  _fit('float32', workdir=str(tmp_path), num_steps=2 * DISPATCH, log_every=DISPATCH,
       profile_steps=f'{DISPATCH + 1},{2 * DISPATCH}')
  traces = [f for _, _, files in os.walk(tmp_path / 'profile') for f in files
            if f.endswith('.xplane.pb')]
  assert traces


@pytest.mark.parametrize('field,value,match', [
    ('precision', 'bf16', r"precision='bf16' is invalid; allowed: 'float32', 'bfloat16', "
                          r"'float16'"),
    ('loss_scaling', 'sometimes', r"loss_scaling='sometimes' is invalid; allowed: 'auto'"),
    ('profile_steps', '5,2', r"profile_steps='5,2' is invalid; allowed: .*1 <= a <= b"),
])
def test_bad_train_config_fails_before_work_starts(field, value, match):
  with pytest.raises(ValueError, match=match):
    trainer_lib.Trainer(_config(**{field: value}))


def test_float16_without_loss_scaling_is_refused(tmp_path):
  with pytest.raises(ValueError, match="loss_scaling='none' is refused"):
    trainer_lib.Trainer(_config(precision='float16', loss_scaling='none'))
  with pytest.raises(ValueError, match="loss_scaling='none' is refused"):
    steps_lib.StepSpec(precision='float16')
  # Pure float16 params (or a float16 model) under a policy without scaling.
  with pytest.raises(ValueError, match='float16 without loss scaling is refused'):
    _fit('float32', _abstract_state(param_dtype='float16'), workdir=str(tmp_path))
  with pytest.raises(ValueError, match='float16 without loss scaling is refused'):
    _fit('bfloat16', _abstract_state(dtype='float16'), workdir=str(tmp_path))
  assert not os.listdir(tmp_path)  # refused before anything was written


def test_a_model_or_state_against_the_policy_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"model has dtype=float32 \(config.model.dtype\); "
                                       r"allowed: model.dtype='auto'"):
    _fit('bfloat16', _abstract_state(dtype='float32'), workdir=str(tmp_path))
  with pytest.raises(ValueError, match='keeps float32 master params, but the params hold '
                                       'bfloat16'):
    _fit('bfloat16', _abstract_state(param_dtype='bfloat16'), workdir=str(tmp_path))
  with pytest.raises(ValueError, match='profile_steps.*allowed only with a workdir'):
    trainer_lib.Trainer(_config(profile_steps='1,2'))
  assert not os.listdir(tmp_path)


def test_optimizer_moment_dtypes_by_name():
  with pytest.raises(ValueError, match=r"adam: mu_dtype='bf16' is unknown; allowed: None"):
    optim.make('adam', 1e-3, mu_dtype='bf16')
  with pytest.raises(ValueError, match=r"nu_dtype='int8' is unknown"):
    optim.make('adamw', 1e-3, nu_dtype='int8')
  state = optim.make('adam', 1e-3, nu_dtype='float16').init(dict(w=jnp.ones(3)))
  chex.assert_type([state.inner_state[0].mu['w'], state.inner_state[0].nu['w']],
                   [jnp.float32, jnp.float16])
