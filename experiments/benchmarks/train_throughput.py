"""Training throughput: our Trainer against a hand-written loop and PyTorch.

The MNIST-1D MLP 40-256-256-10, batch 100, Adam (lr 1e-3), ``--steps`` steps,
on the generated MNIST-1D training split (4000 examples), three ways:

  (a) ``ours``: research.train.Trainer with research.optim.adam, the split on
      the device and ``--dispatch`` steps per call (lax.scan); once with the
      default non-finite guard (loss and every gradient checked at every step)
      and once with ``nonfinite_check='loss'``;
  (b) ``jax_loop``: a minimal hand-written jit + lax.scan loop with Flax and
      Optax, the same data order and dispatch size;
  (c) ``torch``: the same model and loop in PyTorch eager on the CPU (skipped
      with a note if torch is not installed: ``pip install torch==2.13.0``).

And on the many-leaf model (``deep_mlp``: ``--deep_depth`` Dense(``--deep_width``)
layers and a Dense(10) head, by default 50 x 64, 102 leaves; ``--deep_steps``
steps): the Trainer per leaf and with ``flat_params`` (each with the default
gradient check and with ``nonfinite_check='loss'``, which separates what the
check costs from what the layout gains), the hand-written loop, and that
loop with plain SGD: the bound, since no Adam (flat or per leaf) costs less
than SGD's ``p - lr g``. The ratio
``deep_mlp_sgd_bound_over_jax_loop`` is then the most that any optimizer
change can gain over the hand-written Adam loop, and
``deep_mlp_aa_control_over_jax_loop`` (a second copy of the hand loop against
the first) is the A/A control: how far apart two equal programs come out in
the same run. Two more rows time the
Adam update alone on deep_mlp's params (per leaf with Optax, and
``optim.flat``), in the same jit + scan with the same dispatch, with a stand-in
gradient (one elementwise pass over the params): their time over the hand
loop's is the update's share of a training step, so
``deep_mlp_flat_ceiling = 1 / (1 - share_per_leaf + share_flat)`` is what the
flat optimizer can give the hand loop if nothing else changed. ``--deep_batch``
sets the deep model's batch size (a smaller batch makes the update a larger
share of the step), and a smaller ``--deep_width`` makes every leaf smaller
(the update's cost per leaf then dominates it, which is where a flat update
gains most).

``--rounds`` rounds run (a), (b), (c) in turn (the first order rotates each
round); each contender's first run, which compiles, is reported as compile
time and left out of the medians (a short throwaway run before it takes the
process's one-time start-up). A ratio such as (a)/(b) is the median over
rounds of the two speeds' ratio within a round. Peak memory is the growth of
the process's maximum resident set over each contender's first run (one
process, so later contenders only show what they add). Results go to
``runs/benchmarks/train_throughput/<timestamp>/results.json``.
"""

from __future__ import annotations

import resource
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax  # the reference loop (benchmarks may import optax)
from absl import app
from absl import flags

from experiments import common
from research import optim
from research.data import mnist1d_data
from research.data import pipeline
from research.train import state as state_lib
from research.train import trainer as trainer_lib

_STEPS = flags.DEFINE_integer('steps', 2000, 'Training steps per timed run.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (after one warm-up round).')
_DISPATCH = flags.DEFINE_integer('dispatch', 40, 'Steps per call (40 = one epoch).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
_DEEP_STEPS = flags.DEFINE_integer(
    'deep_steps', 400, 'Steps per timed run on the many-leaf model (deep_mlp); 0 skips it.')
_DEEP_BATCH = flags.DEFINE_integer('deep_batch', 100, 'Batch size on the many-leaf model.',
                                   lower_bound=1)
_DEEP_WIDTH = flags.DEFINE_integer('deep_width', 64, 'Width of every hidden layer of deep_mlp.',
                                   lower_bound=1)
_DEEP_DEPTH = flags.DEFINE_integer('deep_depth', 50, 'Hidden layers of deep_mlp.',
                                   lower_bound=1)

BATCH, LR, SEED = 100, 1e-3, 0


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.relu(nn.Dense(256)(x))
    x = nn.relu(nn.Dense(256)(x))
    return nn.Dense(10)(x)


class DeepMLP(nn.Module):
  """The many-leaf model: ``depth`` Dense(``width``) + ReLU layers and a
  Dense(10) head (2 * depth + 2 parameter leaves of at most width x width;
  by default 102 of at most 64 x 64)."""
  width: int = 64
  depth: int = 50

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for _ in range(self.depth):
      x = nn.relu(nn.Dense(self.width)(x))
    return nn.Dense(10)(x)


def _model(model_cls) -> nn.Module:
  if model_cls is DeepMLP:
    return DeepMLP(width=_DEEP_WIDTH.value, depth=_DEEP_DEPTH.value)
  return model_cls()


def _batch(model_cls) -> int:
  return _DEEP_BATCH.value if model_cls is DeepMLP else BATCH


def _start(params, tx):
  """``(params, tx.init(params))``: a hand loop's start, made once, untimed."""
  return params, tx.init(params)


@jax.jit
def _fresh(carry):
  """A copy of ``carry`` to donate, in one compiled call, as the Trainer
  places its state (``jax.device_put(carry, may_alias=False)`` took 7.5 ms
  on the 100 x Dense(16) deep_mlp's 606 leaves and Adam state, 1.3 ms so)."""
  return jax.tree.map(jnp.copy, carry)


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Ours:
  name = 'ours (Trainer)'
  nonfinite_check = 'grads'  # the default: loss and every gradient, every step
  model_cls, flat_params, variant = MLP, False, None

  def __init__(self, x, y, steps, dispatch):
    self.steps = steps
    batch = _batch(self.model_cls)
    config = trainer_lib.default_config()
    config.update(dict(num_steps=steps, batch_size=batch, steps_per_dispatch=dispatch,
                       data_on_device=True, log_every=steps, checkpoints=False,
                       progress=False, tensorboard=False,
                       nonfinite_check=self.nonfinite_check, flat_params=self.flat_params))
    self.trainer = trainer_lib.Trainer(config)
    self.loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), batch, seed=SEED)
    # Made once, untimed (as every contender's start): eager init of
    # deep_mlp's leaves (102 by default) and their Adam moments is one dispatch per op,
    # tens of ms per run. fit copies the state it is given (its steps donate
    # the copy), so every run starts from the same state, and with the same
    # transformation (a static part of the state: a new one would be a new
    # program to compile).
    model = _model(self.model_cls)
    self.state0 = state_lib.TrainState.create(
        apply_fn=model.apply, variables=model.init(jax.random.key(SEED), x[:1]),
        tx=optim.adam(LR), rng=jax.random.key(1))

  def run(self):
    result = self.trainer.fit(self.state0, self.loader)
    return float(result.history[-1]['loss'])


class OursLossCheck(Ours):
  name = "ours (Trainer, nonfinite_check='loss')"
  nonfinite_check = 'loss'


class OursDeep(Ours):
  name = 'ours (Trainer) [deep_mlp]'
  model_cls = DeepMLP


class OursFlatDeep(Ours):
  name = 'ours (Trainer, flat_params) [deep_mlp]'
  model_cls, flat_params, variant = DeepMLP, True, 'flat'


class OursDeepLossCheck(OursDeep):
  name = "ours (Trainer, nonfinite_check='loss') [deep_mlp]"
  nonfinite_check = 'loss'


class OursFlatDeepLossCheck(OursFlatDeep):
  name = "ours (Trainer, flat_params, nonfinite_check='loss') [deep_mlp]"
  nonfinite_check = 'loss'


class JaxLoop:
  name = 'jax_loop (flax + optax, jit + scan)'
  model_cls, variant = MLP, None
  make_tx = staticmethod(lambda: optax.adam(LR))

  def __init__(self, x, y, steps, dispatch):
    self.x, self.y = jax.device_put(x), jax.device_put(y)
    self.loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), _batch(self.model_cls),
                                       seed=SEED)
    self.steps, self.dispatch = steps, dispatch
    model, tx = _model(self.model_cls), self.make_tx()

    def loss_fn(params, xb, yb):
      logits = model.apply({'params': params}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def many(carry, idx):
      def body(carry, rows):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, self.x[rows], self.y[rows])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss
      return jax.lax.scan(body, carry, idx)

    self.many = jax.jit(many, donate_argnums=0)
    self.start = _start(model.init(jax.random.key(SEED), x[:1])['params'], tx)

  def run(self):
    carry = _fresh(self.start)
    # The loader's batch indices, each epoch's order drawn once, as the
    # Trainer's data_on_device path reads them (drawing it again at every
    # step cost this loop 37 us of host time per step).
    order = self.loader.indices()
    step, losses = 0, None
    while step < self.steps:
      k = min(self.dispatch, self.steps - step)
      idx = np.stack([next(order) for _ in range(k)])
      carry, losses = self.many(carry, jax.device_put(idx))
      step += k
    return float(losses[-1])


class JaxLoopDeep(JaxLoop):
  name = 'jax_loop (flax + optax, jit + scan) [deep_mlp]'
  model_cls = DeepMLP


class JaxLoopDeepControl(JaxLoopDeep):
  """The A/A control: a second, separately compiled copy of the hand loop.
  Its ratio to the first is what two equal programs differ by in one run."""
  name = 'jax_loop, second copy (A/A control) [deep_mlp]'


class JaxLoopDeepSGD(JaxLoopDeep):
  """The bound: the same loop with plain SGD, the cheapest update there is.
  No optimizer (flat or not) makes the Adam loop faster than this one."""
  name = 'jax_loop, plain SGD (bound) [deep_mlp]'
  make_tx = staticmethod(lambda: optax.sgd(LR))


class UpdateOnlyDeep:
  """The Adam update alone on deep_mlp's params, ``steps`` times in the hand
  loop's jit + scan (same dispatch). The gradient is a stand-in, one
  elementwise pass over the params (``1e-3 * p``), so this slightly
  overstates the update's share of a step."""
  name = 'optax adam update alone, per leaf [deep_mlp]'
  variant, flat = None, False
  make_tx = staticmethod(lambda: optax.adam(LR))

  def __init__(self, x, y, steps, dispatch):
    del y
    self.steps, self.dispatch = steps, dispatch
    tx = self.make_tx()
    params = _model(DeepMLP).init(jax.random.key(SEED), x[:1])['params']
    self.start = _start(optim.ravel(params) if self.flat else params, tx)

    def many(carry):
      def body(carry, _):
        params, opt_state = carry
        grads = jax.tree.map(lambda p: 1e-3 * p, params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (jax.tree.map(jnp.add, params, updates), opt_state), None
      return jax.lax.scan(body, carry, None, length=dispatch)[0]

    self.many = jax.jit(many, donate_argnums=0)

  def run(self):
    carry = _fresh(self.start)
    for _ in range(-(-self.steps // self.dispatch)):
      carry = self.many(carry)
    jax.block_until_ready(carry)
    return None  # no loss: nothing is trained


class UpdateOnlyDeepFlat(UpdateOnlyDeep):
  name = 'optim.flat(adam) update alone [deep_mlp]'
  variant, flat = 'flat', True
  make_tx = staticmethod(lambda: optim.flat(optim.adam(LR)))


class Torch:
  name = 'torch (eager, CPU)'
  variant = None

  def __init__(self, x, y, steps, dispatch):
    del dispatch
    import torch
    self.torch = torch
    self.x, self.y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    self.loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), BATCH, seed=SEED)
    self.steps = steps

  def run(self):
    torch = self.torch
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Linear(40, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    spe = self.loader.steps_per_epoch
    order = None
    for s in range(self.steps):
      epoch, i = divmod(s, spe)
      if i == 0 or order is None:
        order = self.loader.epoch_indices(epoch)
      rows = torch.from_numpy(self.loader.batch_indices(order, i))
      loss = loss_fn(model(self.x[rows]), self.y[rows])
      opt.zero_grad()
      loss.backward()
      opt.step()
    return float(loss.detach())


def main(argv):
  del argv
  data = mnist1d_data.load_mnist1d()
  x = np.asarray(data['x_train'], np.float32)
  y = np.asarray(data['y_train'], np.int32)
  steps, dispatch = _STEPS.value, _DISPATCH.value
  contenders = [Ours(x, y, steps, dispatch), OursLossCheck(x, y, steps, dispatch),
                JaxLoop(x, y, steps, dispatch)]
  notes = []
  try:
    contenders.append(Torch(x, y, steps, dispatch))
  except ImportError:
    notes.append('torch is not installed: row (c) skipped (pip install torch==2.13.0).')
  if _DEEP_STEPS.value:  # the many-leaf model, in the same alternating rounds
    contenders += [cls(x, y, _DEEP_STEPS.value, dispatch)
                   for cls in (OursDeep, OursFlatDeep, OursDeepLossCheck,
                               OursFlatDeepLossCheck, JaxLoopDeep, JaxLoopDeepControl,
                               JaxLoopDeepSGD, UpdateOnlyDeep, UpdateOnlyDeepFlat)]

  # The process's one-time costs (backend start-up, first traces) go to a
  # short throwaway run, not to whichever contender comes first: a different
  # step count is a different program, so nothing measured below is compiled.
  Ours(x, y, dispatch, dispatch).run()
  first = {}
  for c in contenders:  # warm-up round: compiles
    rss0, t0 = _peak_rss_mb(), time.perf_counter()
    loss = c.run()
    first[c.name] = dict(seconds=time.perf_counter() - t0, loss=loss,
                         peak_rss_growth_mb=_peak_rss_mb() - rss0)
  times = {c.name: [] for c in contenders}
  for r in range(_ROUNDS.value):
    order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
    for c in order:
      t0 = time.perf_counter()
      c.run()
      times[c.name].append(time.perf_counter() - t0)

  rows = []
  for c in contenders:
    med = statistics.median(times[c.name])
    rows.append(dict(
        contender=c.name, variant=c.variant, steps=c.steps, median_seconds=med,
        steps_per_second=c.steps / med,
        compile_seconds=max(first[c.name]['seconds'] - med, 0.0),
        peak_rss_growth_mb=first[c.name]['peak_rss_growth_mb'],
        final_loss=first[c.name]['loss'], runs=times[c.name]))
  # Each ratio is the median over rounds of (their time / our time) in the
  # same round, so a slow spell of the machine cancels out.
  ratios = {}
  for key, cls in (('ours', Ours), ('ours_loss_check', OursLossCheck),
                   ('deep_mlp_ours', OursDeep), ('deep_mlp_flat', OursFlatDeep),
                   ('deep_mlp_ours_loss_check', OursDeepLossCheck),
                   ('deep_mlp_flat_loss_check', OursFlatDeepLossCheck),
                   ('deep_mlp_sgd_bound', JaxLoopDeepSGD),
                   ('deep_mlp_aa_control', JaxLoopDeepControl)):
    pairs = ((('jax_loop', JaxLoopDeep.name),) if key.startswith('deep_mlp')
             else (('jax_loop', JaxLoop.name), ('torch', Torch.name)))
    for other, name in pairs:
      if cls.name not in times:
        continue
      if name in times:
        ratios[f'{key}_over_{other}'] = statistics.median(
            b / a for a, b in zip(times[cls.name], times[name]))
  if UpdateOnlyDeep.name in times:  # the update's share of a step, per round
    loop, leaf, flat = (times[c.name] for c in (JaxLoopDeep, UpdateOnlyDeep,
                                                  UpdateOnlyDeepFlat))
    ratios['deep_mlp_update_share'] = statistics.median(u / t for u, t in zip(leaf, loop))
    ratios['deep_mlp_flat_update_share'] = statistics.median(u / t for u, t in zip(flat, loop))
    ratios['deep_mlp_flat_ceiling'] = statistics.median(
        1 / (1 - (u - f) / t) for u, f, t in zip(leaf, flat, loop))

  print(f'{"contender":<62} {"steps/s":>9} {"compile s":>10} {"peak RSS +MB":>13} {"loss":>7}')
  for r in rows:
    loss = '-' if r['final_loss'] is None else f'{r["final_loss"]:.3f}'
    print(f'{r["contender"]:<62} {r["steps_per_second"]:>9.0f} {r["compile_seconds"]:>10.2f} '
          f'{r["peak_rss_growth_mb"]:>13.0f} {loss:>7}')
  for k, v in ratios.items():
    print(f'{k}: {v:.3f}')
  for n in notes:
    print('note:', n)
  workdir = _WORKDIR.value or common.new_workdir(
      'train_throughput', root=f'{common.REPO_ROOT}/runs/benchmarks')
  common.write_json(f'{workdir}/results.json', dict(
      rows=rows, ratios=ratios, notes=notes, rounds=_ROUNDS.value, dispatch=dispatch,
      deep_batch=_DEEP_BATCH.value, deep_width=_DEEP_WIDTH.value,
      deep_depth=_DEEP_DEPTH.value))
  print(f'results: {workdir}/results.json')


if __name__ == '__main__':
  app.run(main)
