"""The train state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from research.optim import factory as optim_factory


class TrainState(flax.struct.PyTreeNode):
  """Params, BatchNorm statistics, optimizer state, step and PRNG key (and,
  under float16, the dynamic loss scale: ``research.train.precision``).

  ``rng`` is a raw ``uint32[2]`` key (``jax.random.key_data``) so that the state
  checkpoints as plain arrays; :meth:`step_key` turns it into a typed key.
  ``apply_fn`` and ``tx`` are static: they are not saved and not traced.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: Any = flax.struct.field(pytree_node=False)
  loss_scale: Any = None  # a precision.LossScale when the policy scales the loss

  @classmethod
  def create(cls, *, apply_fn, variables, tx, rng) -> 'TrainState':
    params = variables['params']
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng,
        apply_fn=apply_fn,
        tx=tx,
    )

  def step_key(self, purpose: int = 0) -> jax.Array:
    """A key for this step: the run's key folded with the step and a purpose."""
    key = jax.random.wrap_key_data(self.rng)
    return jax.random.fold_in(jax.random.fold_in(key, self.step), purpose)

  @property
  def variables(self) -> dict:
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}


def create_replicas(*, apply_fn, init_fn: Callable, tx, keys: jax.Array,
                    hyperparams: Optional[dict] = None) -> TrainState:
  """N TrainStates stacked on a leading axis: a grid trained as one program.

  Replica ``i`` starts from ``init_fn(split(keys[i])[0]) -> variables`` with
  run key ``split(keys[i])[1]`` (dropout), and, if given, the injected
  hyperparameters ``{name: hyperparams[name][i]}`` (``tx`` must hold them
  in its state: ``research.optim.make`` or ``inject_hyperparams``). Seeds x
  learning rates, say, is ``keys`` repeated per rate and ``hyperparams =
  {'learning_rate': rates repeated per seed}``. Initialisation is vmapped,
  so each replica's optimizer state is its own (a global-norm transform sees
  one replica only). The Trainer sees the replica axis and vmaps its steps.
  """
  def one(key):
    init_key, run_key = jax.random.split(key)
    return TrainState.create(apply_fn=apply_fn, variables=init_fn(init_key), tx=tx,
                             rng=run_key)
  state = jax.vmap(one)(keys)
  if hyperparams:
    n = len(keys)
    values = {}
    for name, v in hyperparams.items():
      v = jnp.asarray(v)
      if v.shape != (n,):
        raise ValueError(f'create_replicas: hyperparams[{name!r}] has shape {v.shape}; '
                         f'allowed: ({n},), one value per key.')
      values[name] = v
    state = state.replace(opt_state=optim_factory.set_hyperparams_in(state.opt_state,
                                                                     **values))
  return state
