"""A tiny training run as a subprocess: ``python -m tests.train.run_tiny WORKDIR``.

Used by the crash/resume test (killed with SIGKILL mid-run, then restarted)
and by the multi-host test (two processes on 127.0.0.1). Prints the final
params' checksum as JSON on the last line.
"""

import json
import os
import sys
import time

import jax
import numpy as np


def main():
  workdir = sys.argv[1]
  num_steps = int(os.environ.get('TINY_STEPS', '60'))
  delay = float(os.environ.get('TINY_DELAY', '0'))
  parallel = os.environ.get('TINY_PARALLEL', 'none')
  if os.environ.get('TINY_COORDINATOR'):
    # The study runner's path: explicit timeouts and the peer watch, which
    # must not take a peer that finished first for a lost one.
    from experiments.main import initialize_distributed
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    initialize_distributed(os.environ['TINY_COORDINATOR'],
                           int(os.environ['TINY_NUM_PROCESSES']),
                           int(os.environ['TINY_PROCESS_ID']), heartbeat_timeout=10)

  from research import optim
  from research.data import pipeline
  from research.data import pipeline
  from research.train import state as state_lib
  from research.train import trainer as trainer_lib
  from tests.train.models import TinyMLP

  rng = np.random.default_rng(0)
  x = rng.normal(size=(96, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)

  class SlowLoader(pipeline.TrainLoader):
    def batches(self, start_step=0):
      for b in super().batches(start_step):
        time.sleep(delay)
        yield b

  config = trainer_lib.default_config()
  config.update(dict(parallel=parallel, num_steps=num_steps,
                     eval_batch_size=32, checkpoint_every=5, keep_checkpoints=2,
                     log_every=5, progress=False, tensorboard=False))
  axis = 'batch' if parallel == 'pmap' else None
  model = TinyMLP(axis_name=axis)
  variables = model.init(jax.random.key(0), x[:2], train=False)
  state = state_lib.TrainState.create(
      apply_fn=model.apply, variables=variables,
      tx=optim.sgd(0.05, momentum=0.9), rng=jax.random.key(1))
  trainer = trainer_lib.Trainer(config, workdir if workdir != '-' else None)
  from experiments.main import run_multihost
  result = run_multihost(lambda: trainer.fit(
      state, SlowLoader(pipeline.ArraySource(x, y), 16, seed=7),
      eval_sets=dict(train=dict(x=x, y=y))))
  leaves = [np.asarray(l).astype(np.float64) for l in jax.tree.leaves(result.state.params)]
  out = dict(step=int(result.state.step), checksum=float(sum(l.sum() for l in leaves)),
             params=[l.ravel().tolist() for l in leaves])
  if jax.process_index() == 0:
    print(json.dumps(out))


if __name__ == '__main__':
  main()
