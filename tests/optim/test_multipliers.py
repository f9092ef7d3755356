"""Per-parameter factors and freezing by path rules (big_vision's lr_mults,
wd_mults and frozen): first match wins, strict mode names unmatched paths."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from research import optim

PARAMS = {
    'Dense_0': {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.full(3, 2.0)},
    'head': {'kernel': jnp.full((3, 1), 2.0), 'bias': jnp.full(1, 2.0)},
    'layers': [jnp.full(2, 2.0), jnp.full(2, 2.0)],
}
GRADS = jax.tree.map(jnp.ones_like, PARAMS)


def test_path_names_and_multipliers():
  names = optim.path_names(PARAMS)
  assert names['Dense_0']['kernel'] == 'Dense_0/kernel'
  assert names['layers'] == ['layers/0', 'layers/1']
  rules = [('head/.*', 10.0), ('.*/bias', 0.5), ('layers/1', 3.0)]
  factors = optim.path_multipliers(rules, PARAMS, default=1.0)
  # First match wins: head/bias is 10, not 0.5; fullmatch: 'layers/1' only.
  assert factors == {'Dense_0': {'kernel': 1.0, 'bias': 0.5},
                     'head': {'kernel': 10.0, 'bias': 10.0},
                     'layers': [1.0, 3.0]}


def test_strict_names_every_unmatched_path():
  with pytest.raises(ValueError, match=r"Dense_0/kernel', 'layers/0', 'layers/1'"):
    optim.path_multipliers([('.*/bias', 0.5), ('head/.*', 1.0)], PARAMS, strict=True)
  tx = optim.scale_by_path([('.*/bias', 0.5)], strict=True)
  with pytest.raises(ValueError, match='scale_by_path: strict=True .*Dense_0/kernel'):
    tx.init(PARAMS)


def test_scale_by_path_is_a_learning_rate_multiplier():
  rules = [('head/.*', 10.0), ('.*/bias', 0.0)]
  tx = optim.chain(optim.sgd(0.1), optim.scale_by_path(rules))
  updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
  expected = {'Dense_0': {'kernel': jnp.full((2, 3), -0.1), 'bias': jnp.zeros(3)},
              'head': {'kernel': jnp.full((3, 1), -1.0), 'bias': jnp.full(1, -1.0)},
              'layers': [jnp.full(2, -0.1), jnp.full(2, -0.1)]}
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  # It mixes with Optax's transformations.
  tx = optax.chain(optax.sgd(0.1), optim.scale_by_path(rules))
  chex.assert_trees_all_close(tx.update(GRADS, tx.init(PARAMS))[0], expected,
                              rtol=1e-6)


def test_freeze_by_path():
  tx = optim.chain(optim.adam(0.1), optim.freeze_by_path(['Dense_0/.*', 'layers/0']))
  updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
  assert float(jnp.abs(updates['Dense_0']['kernel']).max()) == 0.0
  assert float(jnp.abs(updates['layers'][0]).max()) == 0.0
  assert float(jnp.abs(updates['head']['kernel']).min()) > 0.0
  assert float(jnp.abs(updates['layers'][1]).min()) > 0.0
  single = optim.freeze_by_path('head/.*')
  assert float(jnp.abs(single.update(GRADS, single.init(PARAMS))[0]['head']['bias'])
               .max()) == 0.0
  with pytest.raises(ValueError, match='freeze_by_path: strict=True'):
    optim.freeze_by_path(['head/.*'], strict=True).init(PARAMS)


def test_add_decayed_weights_by_path():
  rules = [('.*/kernel', 1.0), ('head/bias', 2.0)]
  tx = optim.add_decayed_weights_by_path(0.1, rules)
  updates, _ = jax.jit(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
  # u + lambda c p with p = 2: kernels 1.2, head bias 1.4, the rest untouched.
  expected = {'Dense_0': {'kernel': jnp.full((2, 3), 1.2), 'bias': jnp.ones(3)},
              'head': {'kernel': jnp.full((3, 1), 1.2), 'bias': jnp.full(1, 1.4)},
              'layers': [jnp.ones(2), jnp.ones(2)]}
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  # Factor 1 everywhere is Optax's add_decayed_weights; a schedule works.
  sched = optax.linear_schedule(0.1, 0.0, 4)
  ours = optim.add_decayed_weights_by_path(sched, [], default=1.0)
  ref = optax.add_decayed_weights(sched)
  s, rs = ours.init(PARAMS), ref.init(PARAMS)
  for _ in range(2):
    (u, s), (ru, rs) = ours.update(GRADS, s, PARAMS), ref.update(GRADS, rs, PARAMS)
    chex.assert_trees_all_close(u, ru, rtol=1e-6)
  with pytest.raises(ValueError, match='needs the current params'):
    tx.update(GRADS, tx.init(PARAMS))


@pytest.mark.parametrize('make,error,match', [
    (lambda: optim.scale_by_path([('(', 1.0)]), ValueError, "pattern '\\(' is not a regex"),
    (lambda: optim.scale_by_path([('.*', '2')]), TypeError, "value of rule '.\\*'='2'"),
    (lambda: optim.scale_by_path('.*'), TypeError, 'list of \\(regex, value\\) pairs'),
    (lambda: optim.scale_by_path([('.*',)]), TypeError, 'rule .* is not allowed'),
    (lambda: optim.scale_by_path([], default='x'), TypeError, "default='x'"),
    (lambda: optim.add_decayed_weights_by_path('1e-4', []), TypeError, 'weight_decay'),
], ids=['regex', 'value', 'not-a-list', 'not-a-pair', 'default', 'weight_decay'])
def test_bad_rules(make, error, match):
  with pytest.raises(error, match=match):
    make()
