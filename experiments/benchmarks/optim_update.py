"""Update-step time of our optimizers against Optax's, measured alternately.

For each optimizer and each tree, the jitted step
``(params, state) -> apply_updates(params, update(grads, state, params))`` with
params and state donated is compiled for both libraries, and once more for
Optax as an A/A control (a separately compiled copy with its own buffers: its
ratio to the first shows how far timing noise alone moves a ratio). Then
``--rounds`` rounds time ``--calls`` calls of each of the three in turn (which
goes first rotates between rounds; ``--calls=0`` picks enough calls for about
0.01 s per timing). The table reports the median
per-call time of ours and Optax's, the median over rounds of the ratio ours /
Optax (below 1 is faster), the control's ratio, and whether the two steps
lower to the same StableHLO (then XLA runs the same program and the ratio
measures only timing noise). Optimizers Optax does not have
(``NO_REFERENCE``) get our timing alone and "no optax" in the reference
column. The rows of ``CONTRIB`` and ``WRAPPED`` pair ours with
``optax.contrib``'s function of the same name (wrappers around each library's
own inner optimizers); ``NEEDS_VALUE`` rows get a loss value and
``NEEDS_OBJ_FN`` rows an objective function as the extra argument of update.
Results go to ``runs/benchmarks/optim_update/<timestamp>/results.json``.

Usage: ./launch.sh bench optim_update [--optimizers=adam,sgd] [--trees=resnet20]
"""

from __future__ import annotations

import functools
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax  # The reference implementation (benchmarks may import it).
from absl import app
from absl import flags

from experiments import common
from research import optim

_OPTIMIZERS = flags.DEFINE_string('optimizers', 'all', 'Comma-separated names or "all".')
_TREES = flags.DEFINE_string('trees', 'all', 'Comma-separated tree names or "all".')
_ROUNDS = flags.DEFINE_integer('rounds', 101, 'Alternating rounds per row.')
_CALLS = flags.DEFINE_integer(
    'calls', 0, 'Calls per timing in a round; 0 picks enough for ~0.01 s.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.')
_FLAT = flags.DEFINE_bool(
    'flat', True, 'Also time optim.flat (flat params and state) and optax.flatten '
    'against Optax per leaf, in their own alternating rounds (rows with a variant).')

LR = 1e-3
# name -> kwargs, the same for both libraries.
OPTIMIZERS = {
    'sgd': dict(learning_rate=LR),
    'sgd_momentum': dict(learning_rate=LR, momentum=0.9),
    'adagrad': dict(learning_rate=LR),
    'rmsprop': dict(learning_rate=LR),
    'adadelta': dict(learning_rate=LR),
    'adam': dict(learning_rate=LR),
    'adamw': dict(learning_rate=LR),
    'nadam': dict(learning_rate=LR),
    'nadamw': dict(learning_rate=LR),
    'adamax': dict(learning_rate=LR),
    'adamaxw': dict(learning_rate=LR),
    'amsgrad': dict(learning_rate=LR),
    'adabelief': dict(learning_rate=LR),
    'adafactor': dict(learning_rate=LR),
    'adan': dict(learning_rate=LR),
    'lamb': dict(learning_rate=LR),
    'lars': dict(learning_rate=LR),
    'lion': dict(learning_rate=LR),
    'novograd': dict(learning_rate=LR),
    'radam': dict(learning_rate=LR),
    'yogi': dict(learning_rate=LR),
    'sm3': dict(learning_rate=LR),
    'fromage': dict(learning_rate=LR),
    'noisy_sgd': dict(learning_rate=LR),
    'sign_sgd': dict(learning_rate=LR),
    'signum': dict(learning_rate=LR),
    'rprop': dict(learning_rate=LR),
    'polyak_sgd': dict(),
    'optimistic_gradient_descent': dict(learning_rate=LR),
    'optimistic_adam_v2': dict(learning_rate=LR),
    'lbfgs': dict(learning_rate=LR, linesearch=None),
    'optimistic_adam': dict(learning_rate=LR),
}
# Optax's contrib aliases, each against optax.contrib's function of the same
# name (the parameter-free ones at their default learning rate of 1).
CONTRIB = {
    'acprop': dict(learning_rate=LR),
    'ademamix': dict(learning_rate=LR),
    'simplified_ademamix': dict(learning_rate=LR),
    'adopt': dict(learning_rate=LR),
    'cocob': dict(),
    'dadapt_adamw': dict(),
    'dog': dict(),
    'dowg': dict(),
    'galore': dict(learning_rate=LR),
    'madgrad': dict(learning_rate=LR),
    'momo': dict(),
    'momo_adam': dict(),
    'muon': dict(learning_rate=LR),
    'prodigy': dict(),
    'schedule_free_adamw': dict(learning_rate=LR),
    'schedule_free_sgd': dict(learning_rate=LR),
    'sophia': dict(learning_rate=LR),
}
# contrib's wrappers, each around its own library's inner optimizers. Not
# rows: dpsgd and differentially_private_aggregate (they take per-example
# gradients, a batch axis on every leaf), and the parts that are no optimizer
# alone (normalize, reduce_on_plateau, split_real_and_imaginary).
WRAPPED = {
    'mechanize': lambda lib: lib.contrib.mechanize(lib.adam(LR)),
    'sam': lambda lib: lib.contrib.sam(
        lib.sgd(LR), lib.chain(lib.contrib.normalize(), lib.sgd(LR))),
    'schedule_free': lambda lib: lib.contrib.schedule_free(lib.sgd(LR), LR),
}
# Ours only: Optax has no such optimizer, so these rows time ours alone.
NO_REFERENCE = {
    'shampoo': dict(learning_rate=LR),
    'soap': dict(learning_rate=LR),
}
# The extra argument of update each row needs: the loss value, or (Sophia's
# Hessian estimate) the objective as a function of the params.
NEEDS_VALUE = {'polyak_sgd', 'momo', 'momo_adam'}
NEEDS_OBJ_FN = {'sophia'}
# Global inner products over 1000 leaves make XLA's compile time grow
# super-linearly in both libraries (200 leaves: ~3.6 s each; 1000 leaves: more
# than 6 min and 7 GB), so these rows are left out.
NOT_RUN = {('polyak_sgd', '1000x1000'), ('lbfgs', '1000x1000')}


def _factory(module, label):
  return getattr(module, 'sgd' if label == 'sgd_momentum' else label)


def build(lib, label):
  """The row's optimizer from ``lib``: ``research.optim`` or ``optax``."""
  if label in WRAPPED:
    return WRAPPED[label](lib)
  if label in CONTRIB:
    return getattr(lib.contrib, label)(**CONTRIB[label])
  if label in NO_REFERENCE:
    return getattr(lib, label)(**NO_REFERENCE[label])
  return _factory(lib, label)(**OPTIMIZERS[label])


def objective(params):
  """A quadratic loss, the ``obj_fn`` of the rows in ``NEEDS_OBJ_FN``."""
  return sum(0.5 * jnp.vdot(p, p) for p in jax.tree.leaves(params))


def resnet20_shapes():
  """The leaf shapes of a CIFAR ResNet-20 (0.27M parameters)."""
  shapes = [(3, 3, 3, 16), (16,), (16,)]
  c_in = 16
  for c in (16, 32, 64):
    for _ in range(3):
      shapes += [(3, 3, c_in, c), (c,), (c,), (3, 3, c, c), (c,), (c,)]
      c_in = c
  return shapes + [(64, 10), (10,)]


TREES = {
    'one_10M': lambda: [(10_000_000,)],
    'resnet20': resnet20_shapes,
    '1000x1000': lambda: [(1000,)] * 1000,
    '200x5000': lambda: [(5000,)] * 200,
}


def make_tree(shapes, seed):
  rng = np.random.default_rng(seed)
  return {f'p{i:04d}': jnp.asarray(rng.normal(size=s), jnp.float32)
          for i, s in enumerate(shapes)}


def extra_args(label):
  """The extra keyword arguments of the row's ``update``."""
  if label in NEEDS_VALUE:
    return dict(value=jnp.asarray(1.0))
  if label in NEEDS_OBJ_FN:
    return dict(obj_fn=objective)
  return {}


def make_step(opt, label):
  def step(params, state, grads):
    extra = extra_args(label)
    updates, state = opt.update(grads, state, params, **extra)
    return jax.tree.map(lambda p, u: p + u, params, updates), state
  return jax.jit(step, donate_argnums=(0, 1))


def lowered_step(opt, shapes, label) -> list[str]:
  """The StableHLO of the row's step, without source locations."""
  params, grads = make_tree(shapes, 0), make_tree(shapes, 1)
  text = make_step(opt, label).lower(params, opt.init(params), grads).as_text()
  return [re.sub(r'loc\([^)]*\)|#loc\d*', '', l) for l in text.splitlines()
          if not l.startswith('#loc')]


class Runner:
  """Holds one library's compiled step and its (donated) buffers."""

  def __init__(self, opt, shapes, label, flat=False):
    # flat: params and grads as optim.FlatTree buffers, as the Trainer with
    # flat_params holds them (the gradient of a model on views is flat).
    as_input = optim.ravel if flat else (lambda tree: tree)
    self.grads = as_input(make_tree(shapes, 1))
    self.params = as_input(make_tree(shapes, 0))
    # Copies: some states share buffers (lbfgs, in optax too), and a donated
    # buffer may appear only once among the arguments.
    self.state = jax.tree.map(jnp.copy, opt.init(self.params))
    self.step = make_step(opt, label)
    self.call(1)  # Compile and warm up.

  def call(self, n):
    for _ in range(n):
      self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, self.state))

  def time(self, n):
    start = time.perf_counter()
    self.call(n)
    return (time.perf_counter() - start) / n * 1e3


def measure_ours_only(label, tree, rounds, calls):
  """A row for an optimizer Optax lacks: our per-call time, no ratios."""
  ours = Runner(build(optim, label), TREES[tree](), label)
  calls = calls or max(1, min(200, int(0.01 / max(ours.time(2) / 1e3, 1e-6))))
  times = [ours.time(calls) for _ in range(rounds)]
  return dict(optimizer=label, tree=tree, ours_ms=statistics.median(times),
              reference_ms=None, ratio=None, control_ratio=None, calls=calls,
              rounds=rounds, same_program=None)


def alternate(runners, rounds, calls):
  """``rounds`` rounds timing each runner in turn: ``({name: [ms]}, calls)``."""
  if not calls:  # enough calls that one timing lasts ~0.01 s
    calls = max(1, min(200, int(0.01 / max(runners['optax'].time(2) / 1e3, 1e-6))))
  times = {name: [] for name in runners}
  names = list(runners)
  for r in range(rounds):
    # Rotate which goes first, so none always follows another.
    k = r % len(names)
    for name in names[k:] + names[:k]:
      times[name].append(runners[name].time(calls))
  return times, calls


def _paired(times, a, b):
  # Ratios are medians of the rounds' ratios: each pairs timings taken back
  # to back, so a slow spell of the machine cancels out.
  return statistics.median(x / y for x, y in zip(times[a], times[b]))


def measure(label, tree, rounds, calls):
  if label in NO_REFERENCE:
    return measure_ours_only(label, tree, rounds, calls)
  shapes = TREES[tree]()
  runners = dict(
      ours=Runner(build(optim, label), shapes, label),
      optax=Runner(build(optax, label), shapes, label),
      # A second, separately compiled Optax step with its own buffers: the
      # A/A control. Its ratio to the first is what timing noise alone gives.
      optax_again=Runner(build(optax, label), shapes, label),
  )
  times, calls = alternate(runners, rounds, calls)
  paired = functools.partial(_paired, times)
  # The same program for XLA means any ratio away from 1 is timing noise.
  same = (lowered_step(build(optim, label), shapes, label)
          == lowered_step(build(optax, label), shapes, label))
  return dict(optimizer=label, tree=tree, ours_ms=statistics.median(times['ours']),
              reference_ms=statistics.median(times['optax']),
              ratio=paired('ours', 'optax'), control_ratio=paired('optax_again', 'optax'),
              calls=calls, rounds=rounds, same_program=same)


def measure_flat(label, tree, rounds, calls):
  """Rows of variant 'flat' (optim.flat on flat params) and 'optax_flatten'
  (optax.flatten per leaf), each against Optax per leaf, timed in the same
  alternating rounds with the A/A control."""
  shapes = TREES[tree]()
  runners = dict(
      flat=Runner(optim.flat(build(optim, label)), shapes, label, flat=True),
      optax=Runner(build(optax, label), shapes, label),
      optax_again=Runner(build(optax, label), shapes, label),
      optax_flatten=Runner(optax.flatten(build(optax, label)), shapes, label),
  )
  times, calls = alternate(runners, rounds, calls)
  paired = functools.partial(_paired, times)
  control = paired('optax_again', 'optax')
  spread = sorted(x / y for x, y in zip(times['optax_again'], times['optax']))
  q = lambda p: spread[min(len(spread) - 1, int(p * len(spread)))]  # noqa: E731
  return [dict(optimizer=label, tree=tree, variant=v, ours_ms=statistics.median(times[v]),
               reference_ms=statistics.median(times['optax']), ratio=paired(v, 'optax'),
               control_ratio=control, control_iqr=[q(0.25), q(0.75)],
               flat_over_flatten=paired('flat', 'optax_flatten'), calls=calls,
               rounds=rounds, same_program=False)
          for v in ('flat', 'optax_flatten')]


def main(argv):
  del argv
  known = [*OPTIMIZERS, *CONTRIB, *WRAPPED, *NO_REFERENCE]
  labels = known if _OPTIMIZERS.value == 'all' else common.split_names(_OPTIMIZERS.value)
  trees = list(TREES) if _TREES.value == 'all' else common.split_names(_TREES.value)
  common.require_choices('optimizers', labels, known)
  common.require_choices('trees', trees, TREES)
  workdir = _WORKDIR.value or common.new_workdir(
      'optim_update', root=f'{common.REPO_ROOT}/runs/benchmarks')
  rows = []
  header = (f'{"optimizer":<28} {"tree":<10} {"ours ms":>9} {"optax ms":>9} {"ratio":>6} '
            f'{"A/A":>6} same program')
  print(header, flush=True)
  for label in labels:
    for tree in trees:
      if (label, tree) in NOT_RUN:
        print(f'{label:<28} {tree:<10} not run (compile time, see NOT_RUN)', flush=True)
        continue
      row = measure(label, tree, _ROUNDS.value, _CALLS.value)
      rows.append(row)
      common.write_json(f'{workdir}/results.json', rows)
      if row['ratio'] is None:
        print(f'{label:<28} {tree:<10} {row["ours_ms"]:>9.3f} {"no optax":>9}', flush=True)
        continue
      print(f'{label:<28} {tree:<10} {row["ours_ms"]:>9.3f} '
            f'{row["reference_ms"]:>9.3f} {row["ratio"]:>6.3f} {row["control_ratio"]:>6.3f} '
            f'{row["same_program"]}', flush=True)
      if _FLAT.value and label not in NO_REFERENCE:
        for v in measure_flat(label, tree, _ROUNDS.value, _CALLS.value):
          rows.append(v)
          print(f'{label + " [" + v["variant"] + "]":<28} {tree:<10} {v["ours_ms"]:>9.3f} '
                f'{v["reference_ms"]:>9.3f} {v["ratio"]:>6.3f} {v["control_ratio"]:>6.3f} '
                f'flat/flatten {v["flat_over_flatten"]:.3f}', flush=True)
        common.write_json(f'{workdir}/results.json', rows)
  paired = [r for r in rows if r['ratio'] is not None and 'variant' not in r]
  if not paired:
    if rows:
      print(f'results: {workdir}/results.json')
    return
  ratios = [r['ratio'] for r in paired]
  controls = [r['control_ratio'] for r in paired]
  print(f'\nrows: {len(paired)}; same program: {sum(r["same_program"] for r in paired)}; '
        f'ratio median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}, '
        f'above 1.00: {sum(r > 1.0 for r in ratios)}; A/A control (Optax against '
        f'itself) median {statistics.median(controls):.3f}, range '
        f'{min(controls):.3f}-{max(controls):.3f}, above 1.00: {sum(c > 1.0 for c in controls)}')
  for variant in ('flat', 'optax_flatten'):
    vrows = [r for r in rows if r.get('variant') == variant]
    if vrows:
      vr = [r['ratio'] for r in vrows]
      print(f'{variant} / optax per leaf: median {statistics.median(vr):.3f}, range '
            f'{min(vr):.3f}-{max(vr):.3f} over {len(vr)} rows')
  print(f'results: {workdir}/results.json')


if __name__ == '__main__':
  app.run(main)
