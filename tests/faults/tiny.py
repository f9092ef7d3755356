"""The tiny run every fault test trains, in the test process or as a subprocess.

``python -m tests.faults.tiny WORKDIR`` runs it; environment variables inject
the fault: ``FAULT_KILL=<kind>-<point>:<n>`` SIGKILLs the process at the n-th
save of a kind (``ckpt``, ``snapshot``, ``best``) at a point (``written``: the
new folder complete, not yet renamed; ``published``: renamed, nothing after;
``swap``: the old folder moved aside, the new one not yet in), or inside the
n-th metrics line (``metrics-partial:n``); ``FAULT_KILL_AFTER=s`` kills it s
seconds after the first batch; ``FAULT_DELAY`` sleeps per batch;
``FAULT_COORDINATOR`` / ``FAULT_PROCESS_ID`` make it one of two processes.
"""

import json
import os
import signal
import sys
import threading
import time

import jax
import numpy as np

STEPS = 24


def data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)
  return x, y


def run(workdir, num_steps=STEPS, lr=0.05, batch_size=16, delay=0.0, on_first=None,
        parallel='none', early=True, **config):
  from research import optim
  from research.data import pipeline
  from research.train import hooks
  from research.train import state as state_lib
  from research.train import trainer as trainer_lib
  from tests.train.models import TinyMLP

  x, y = data()
  vx, vy = data(32, 1)

  class Loader(pipeline.TrainLoader):
    def batches(self, start_step=0):
      for i, b in enumerate(super().batches(start_step)):
        if i == 0 and on_first:
          on_first()
        time.sleep(delay)
        yield b

  c = trainer_lib.default_config()
  c.update(dict(parallel=parallel, eval_batch_size=32, checkpoint_every=4, keep_checkpoints=3,
                eval_every=4, progress=False, tensorboard=False))
  c.update(config)
  model = TinyMLP()
  state = state_lib.TrainState.create(
      apply_fn=model.apply, variables=model.init(jax.random.key(0), x[:2]),
      tx=optim.make('sgd', lr, momentum=0.9), rng=jax.random.key(1))
  hook_list = [hooks.EarlyStopping('validation/loss', patience=100)] if early else []
  trainer = trainer_lib.Trainer(c, workdir, hooks=hook_list)
  return trainer.fit(state, Loader(pipeline.ArraySource(x, y), batch_size, seed=3),
                     eval_sets=dict(validation=dict(x=vx, y=vy)), num_steps=num_steps,
                     log_every=4, snapshot_steps=[s for s in (6, 13) if s <= num_steps])


def _kill():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def _kind(directory):
  for key, kind in (('/checkpoints/', 'ckpt'), ('/snapshots/', 'snapshot'),
                    ('/early_stopping_best/', 'best')):
    if key in directory + '/':
      return kind
  return 'other'


def inject(spec):
  """Patches the writers to SIGKILL the process at ``spec`` (see above)."""
  from research.train import checkpoints as ck
  from research.train import metric_writers
  where, n = spec.split(':')
  kind, point = where.split('-')
  n = int(n)
  count = {}

  def hit(k, p):
    if (k, p) == (kind, point):
      count[p] = count.get(p, 0) + 1
      if count[p] == n:
        _kill()

  if kind == 'metrics':
    write = metric_writers.MetricWriter.write

    def partial(self, step, metrics, prefix=''):
      count['m'] = count.get('m', 0) + 1
      if count['m'] == n:
        with open(self.path, 'a') as f:
          f.write('{"step": %d, "train/lo' % step)
        _kill()
      return write(self, step, metrics, prefix)
    metric_writers.MetricWriter.write = partial
    return
  publish, rename = ck._publish, os.rename
  final_of = {}

  def publish_then(tmp, final):
    hit(_kind(final), 'written')
    final_of['now'] = final
    publish(tmp, final)
    final_of['now'] = None
    hit(_kind(final), 'published')

  def rename_then(src, dst):
    rename(src, dst)
    if final_of.get('now') and src == final_of['now']:  # the old one moved aside
      hit(_kind(src), 'swap')
  ck._publish, ck.os.rename = publish_then, rename_then


def leaves(result):
  """Everything a run produced, as NumPy arrays, for bit-identical checks."""
  state = jax.tree.map(np.asarray, jax.tree.leaves(dict(
      params=result.state.params, batch_stats=result.state.batch_stats,
      opt_state=result.state.opt_state, step=result.state.step)))
  snaps = [np.asarray(l) for _, s in result.snapshots for l in jax.tree.leaves(s)]
  history = [{k: v for k, v in row.items() if k != 'steps_per_second'}
             for row in result.history]  # timings differ
  as_json = lambda x: json.loads(json.dumps(x, default=float))  # noqa: E731
  return (state + snaps, [s for s, _ in result.snapshots], as_json(history),
          as_json(result.evals))


def main():
  workdir = sys.argv[1]
  if os.environ.get('FAULT_COORDINATOR'):
    from experiments.main import initialize_distributed
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    initialize_distributed(os.environ['FAULT_COORDINATOR'], 2,
                           int(os.environ['FAULT_PROCESS_ID']),
                           heartbeat_timeout=int(os.environ.get('FAULT_HEARTBEAT', '10')))
  if os.environ.get('FAULT_IDLE'):  # a process that reaches no collective
    print('idle', flush=True)
    time.sleep(float(os.environ['FAULT_IDLE']))
    return
  if os.environ.get('FAULT_KILL'):
    inject(os.environ['FAULT_KILL'])
  on_first = None
  if os.environ.get('FAULT_KILL_AFTER'):
    after = float(os.environ['FAULT_KILL_AFTER'])
    on_first = lambda: threading.Timer(after, _kill).start()  # noqa: E731
  from experiments.main import run_multihost
  result = run_multihost(lambda: run(workdir, num_steps=int(os.environ.get('FAULT_STEPS', STEPS)),
               delay=float(os.environ.get('FAULT_DELAY', '0')), on_first=on_first,
               parallel=os.environ.get('FAULT_PARALLEL', 'none')))
  print(json.dumps(dict(step=int(np.max(result.state.step)))))


if __name__ == '__main__':
  main()
