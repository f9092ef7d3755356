"""The measurements of ``device_check.sh`` (see there), on all local devices,
into ``device.json``:
  policies   each precision policy's steps/s and examples/s (parallel='none',
             the training split on the device, ``--dispatch`` steps per call);
  parallel   the Trainer under parallel='sharded' and 'pmap' on every local
             device, its final loss against parallel='none' (same batches);
  protocol   ``--protocol_steps`` steps of the snapshot_ensembles:cifar10_resnet20
             protocol (its model, batch, optimizer and train config, host-side
             augmentation) on synthetic CIFAR-shaped data under
             ``--protocol_precision``: examples/s, FLOPs per step from XLA's
             cost analysis of the forward and backward pass, and the achieved
             share of the devices' peak bf16 FLOP/s (:data:`PEAK_BF16_FLOPS`).
``_device_report.py`` turns them into ``results.md``. ``--reduced`` (CPU, tests) swaps ResNet-20 for a tiny MLP with
BatchNorm and runs a few steps of each.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags

from configs import snapshot_ensembles as protocol_config
from experiments import common
from experiments import snapshot_ensembles as protocol
from research import models
from research import optim
from research.data import augment
from research.data import pipeline
from research.train import parallel as parallel_lib
from research.train import state as state_lib
from research.train import steps as steps_lib
from research.train import trainer as trainer_lib

# Not 'workdir': experiments.main defines that flag, and both can be imported
# in one process (the tests).
_WORKDIR = flags.DEFINE_string('device_dir', None, 'The device check folder.')
_REDUCED = flags.DEFINE_bool('reduced', False, 'Tiny model, few steps (CPU, tests).')
_STEPS = flags.DEFINE_integer('steps', None, 'Steps per policy and parallel run.')
_DISPATCH = flags.DEFINE_integer('dispatch', None, 'Steps per call in those runs.')
_PROTOCOL_STEPS = flags.DEFINE_integer('protocol_steps', None, 'Steps of the protocol run.')
_PROTOCOL_PRECISION = flags.DEFINE_enum(
    'protocol_precision', 'bfloat16', ['float32', 'bfloat16', 'float16'],
    'Precision policy of the protocol run.')

POLICIES = ('float32', 'bfloat16', 'float16')
PARALLEL = ('sharded', 'pmap')
PROTOCOL = 'cifar10_resnet20'

# Dense (no sparsity) peak bf16 FLOP/s of one JAX device, from the vendors'
# data sheets. A TPU v2/v3 device is one core (half a chip); from v4 on a
# device is a chip. Matched as a substring of ``device_kind``, longest first.
PEAK_BF16_FLOPS = {
    'NVIDIA B200': 2.25e15,
    'NVIDIA H200': 989e12,
    'NVIDIA H100 PCIe': 756e12,
    'NVIDIA H100 NVL': 835e12,
    'NVIDIA H100': 989e12,       # SXM ('NVIDIA H100 80GB HBM3')
    'NVIDIA GH200': 989e12,
    'NVIDIA A100': 312e12,
    'NVIDIA L40S': 362e12,
    'NVIDIA L4': 121e12,
    'NVIDIA A10': 125e12,
    'NVIDIA GeForce RTX 4090': 165e12,
    'TPU v2': 22.5e12,
    'TPU v3': 61.5e12,
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,       # v5e
    'TPU v5p': 459e12,
    'TPU v5': 459e12,
    'TPU v6 lite': 918e12,       # v6e (Trillium)
}


def peak_bf16_flops(device_kind: str):
  """Peak bf16 FLOP/s of a device kind, or None if unknown (CPU, V100, ...)."""
  for kind in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
    if kind.lower() in device_kind.lower():
      return PEAK_BF16_FLOPS[kind]
  return None


def device_info() -> dict:
  d = jax.local_devices()[0]
  return dict(platform=d.platform, device_kind=d.device_kind,
              local_devices=jax.local_device_count(), devices=jax.device_count(),
              processes=jax.process_count(), jax=jax.__version__,
              peak_bf16_flops=peak_bf16_flops(d.device_kind))


# --- the workload -----------------------------------------------------------------

def synthetic_cifar(n: int, seed: int = 0):
  """CIFAR-shaped uint8 images with random labels (nothing downloaded)."""
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
          rng.integers(0, 10, size=n).astype(np.int32))


def protocol_config_for(reduced: bool) -> ml_collections.ConfigDict:
  c = protocol_config.get_config(PROTOCOL)
  if reduced:  # ResNet-20 compiles for minutes on a small CPU (convolutions too)
    c.model = models.default_config('mlp')
    c.model.update(dict(input_shape=(32, 32, 3), depth=1, width=8, batch_norm=True))
  return c


def _state(model_config, tx, seed=0):
  model, variables = models.init_model(model_config, jax.random.key(seed),
                                       model_config.input_shape)
  return state_lib.TrainState.create(apply_fn=model.apply, variables=variables, tx=tx,
                                     rng=jax.random.key(seed + 1))


def _train_config(**kw):
  c = trainer_lib.default_config()
  c.update(dict(progress=False, tensorboard=False, checkpoints=False))
  c.update(kw)
  return c


def _throughput(result, steps: int, dispatch: int, batch: int) -> dict:
  """Speeds after the first call (which compiles)."""
  seconds = max(result.wall_time - result.compile_time, 1e-9)
  timed = steps - dispatch
  sps = timed / seconds if timed > 0 else float('nan')
  return dict(steps_per_second=sps, examples_per_second=sps * batch,
              compile_seconds=result.compile_time,
              final_loss=float(np.asarray(result.history[-1]['loss'])),
              nonfinite_steps=result.nonfinite_steps)


def run_policies_and_parallel(config, steps: int, dispatch: int, parallel_precisions) -> dict:
  """Each policy under parallel='none', then sharded and pmap."""
  x, y = synthetic_cifar(4096 if not _REDUCED.value else 512)
  pre = augment.ImagePreprocess(*augment.channel_stats(x))
  x = pre.eval(dict(x=x))['x']
  batch = config.data.batch_size
  tx = optim.make('sgd', 0.05, momentum=0.9, nesterov=True)
  # Under pmap BatchNorm normalizes over the global batch too (cross-replica
  # statistics), as under 'none' and 'sharded': same params, another module.
  pmap_model = ml_collections.ConfigDict(config.model.to_dict())
  pmap_model.bn_axis_name = parallel_lib.AXIS
  states = dict(none=_state(config.model, tx), pmap=_state(pmap_model, tx))
  out = dict(policies={}, parallel={}, model=config.model.name, batch=batch, steps=steps,
             dispatch=dispatch)
  loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), batch, seed=0)

  def fit(policy, parallel):
    c = _train_config(precision=policy, parallel=parallel, data_on_device=True,
                      steps_per_dispatch=dispatch, eval_batch_size=batch)
    state = states.get(parallel, states['none'])
    result = trainer_lib.Trainer(c).fit(state, loader, num_steps=steps, log_every=steps)
    return _throughput(result, steps, dispatch, batch)

  for policy in POLICIES:
    out['policies'][policy] = fit(policy, 'none')
  for policy in parallel_precisions:
    for parallel in PARALLEL:
      row = fit(policy, parallel)
      row['devices'] = jax.device_count()
      row['loss_difference'] = abs(row['final_loss'] - out['policies'][policy]['final_loss'])
      out['parallel'][f'{parallel}/{policy}'] = row
  return out


def step_flops(state, batch, spec) -> float:
  """FLOPs of one forward and backward pass, from XLA's cost analysis."""
  fn = jax.jit(lambda s, b: steps_lib.loss_and_grads(s, b, jax.random.key(0), spec))
  analysis = fn.lower(state, batch).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis.get('flops', float('nan'))) if analysis else float('nan')


def run_protocol(config, steps: int, precision: str) -> dict:
  """The snapshot arm's training (one model, alpha_0 = snapshot_lrs[0]) of
  the protocol: its model, batch, optimizer and train config."""
  batch = config.data.batch_size
  x, y = synthetic_cifar(max(batch * 40, 2560))
  pre = augment.ImagePreprocess(*augment.channel_stats(x), augment=config.data.augment)
  loader = pipeline.TrainLoader(pipeline.ArraySource(x, y), batch, seed=config.seed,
                                transform=pre.train)
  tx = protocol.snapshot_tx(config, config.budget_steps, config.num_snapshots,
                            float(config.snapshot_lrs[0]))
  state = _state(config.model, tx, config.seed)
  c = ml_collections.ConfigDict(config.train.to_dict())
  c.update(dict(checkpoints=False, tensorboard=False, progress=False, precision=precision))
  trainer = trainer_lib.Trainer(c)
  result = trainer.fit(state, loader, num_steps=steps, log_every=steps)
  speed = _throughput(result, steps, c.steps_per_dispatch, batch)
  example = pre.train(loader.source.read(np.arange(batch)), np.random.default_rng(0))
  flops = step_flops(state, jax.tree.map(jnp.asarray, example), trainer.spec)
  achieved = flops * speed['steps_per_second']
  info = device_info()
  devices = jax.device_count() if c.parallel != 'none' else 1
  peak = info['peak_bf16_flops']
  return dict(
      speed, protocol=f'snapshot_ensembles:{PROTOCOL}', model=config.model.name,
      depth=config.model.get('depth'), batch=batch, steps=steps, precision=precision,
      parallel=c.parallel, steps_per_dispatch=c.steps_per_dispatch,
      augment=bool(config.data.augment), devices=devices, flops_per_step=flops,
      achieved_flops=achieved,
      percent_of_peak_bf16=(100 * achieved / (peak * devices)) if peak else None)


def device_part(workdir: str) -> None:
  reduced = _REDUCED.value
  steps = _STEPS.value or (20 if reduced else 400)
  dispatch = _DISPATCH.value or (10 if reduced else 50)
  protocol_steps = _PROTOCOL_STEPS.value or (6 if reduced else 300)
  config = protocol_config_for(reduced)
  out = dict(device=device_info(), reduced=reduced)
  parallel_precisions = ('float16',) if reduced else ('bfloat16', 'float16')
  for key, fn in (('training', lambda: run_policies_and_parallel(
                      config, steps, dispatch, parallel_precisions)),
                  ('protocol', lambda: run_protocol(config, protocol_steps,
                                                     _PROTOCOL_PRECISION.value))):
    t0 = time.perf_counter()
    try:
      out[key] = fn()
    except Exception as e:  # noqa: BLE001 -- reported in results.md, not hidden
      out[key] = dict(error=f'{type(e).__name__}: {e}')
    out[key]['seconds'] = time.perf_counter() - t0
    common.write_json(os.path.join(workdir, 'device.json'), out)


def main(argv):
  del argv
  workdir = _WORKDIR.value or common.new_workdir(
      'device_check', root=f'{common.REPO_ROOT}/runs/benchmarks')
  os.makedirs(workdir, exist_ok=True)
  device_part(workdir)


if __name__ == '__main__':
  app.run(main)
