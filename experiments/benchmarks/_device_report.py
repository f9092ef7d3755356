"""The report of ``device_check.sh``: ``results.md`` from the steps it ran
(``steps.tsv``), the measurements (``device.json``, see ``_device_check.py``)
and the benchmarks' ``results.json``; printed too. Standard library only, so
that it runs even where JAX does not.

Usage: python -m experiments.benchmarks._device_report WORKDIR
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys

POLICIES = ('float32', 'bfloat16', 'float16')
# device_check.sh's train_throughput runs: the default sizes, and (full mode
# only) the small-leaf many-leaf model, where a flat optimizer gains most.
THROUGHPUT_RUNS = ('train_throughput', 'train_throughput_small_leaves')


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _fmt(v, spec='.3g'):
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return 'n/a'
  return format(v, spec)


def report(workdir: str) -> str:
  lines = ['# Device check', '']
  dev = _read_json(os.path.join(workdir, 'device.json')) or {}
  info = dev.get('device') or {}
  if info:
    peak = info.get('peak_bf16_flops')
    lines += [f"Device: {info['platform']} '{info['device_kind']}', "
              f"{info['local_devices']} local device(s) of {info['devices']}, "
              f"{info['processes']} process(es); jax {info['jax']}; peak bf16 "
              + (f'{peak / 1e12:.0f} TFLOP/s per device.' if peak else
                 'unknown for this device kind (no percentage of peak).'),
              f"Mode: {'reduced (tiny MLP, few steps)' if dev.get('reduced') else 'full'}.", '']
  lines += ['## Steps', '', '| step | status | seconds | log |', '|---|---|---|---|']
  failed = 0
  try:
    with open(os.path.join(workdir, 'steps.tsv')) as f:
      for row in f:
        name, rc, seconds = row.rstrip('\n').split('\t')
        failed += rc != '0'
        status = 'ok' if rc == '0' else f'FAILED (exit {rc})'
        lines.append(f'| {name} | {status} | {float(seconds):.0f} | {name}.log |')
  except OSError:
    lines.append('| (no steps.tsv) | | | |')
  lines.append('')

  training = dev.get('training') or {}
  if 'error' in training:
    lines += [f"Training checks failed: {training['error']}", '']
  elif training:
    lines += [f"## Precision policies ({training['model']}, batch {training['batch']}, "
              f"{training['steps']} steps, {training['dispatch']} per call, parallel='none')",
              '', '| precision | steps/s | examples/s | compile s | final loss | non-finite |',
              '|---|---|---|---|---|---|']
    for p, r in sorted(training['policies'].items(), key=lambda kv: POLICIES.index(kv[0])):
      lines.append(f"| {p} | {_fmt(r['steps_per_second'], '.1f')} | "
                   f"{_fmt(r['examples_per_second'], '.0f')} | {r['compile_seconds']:.1f} | "
                   f"{r['final_loss']:.4f} | {r['nonfinite_steps']} |")
    lines += ['', '## Parallel strategies (all devices, same batches as parallel=\'none\')', '',
              '| parallel/precision | devices | steps/s | final loss | |loss - none| |',
              '|---|---|---|---|---|']
    for k, r in training['parallel'].items():
      lines.append(f"| {k} | {r['devices']} | {_fmt(r['steps_per_second'], '.1f')} | "
                   f"{r['final_loss']:.4f} | {r['loss_difference']:.2e} |")
    lines.append('')

  proto = dev.get('protocol') or {}
  if 'error' in proto:
    lines += [f"Protocol run failed: {proto['error']}", '']
  elif proto:
    pct = proto['percent_of_peak_bf16']
    lines += [f"## {proto['protocol']} on synthetic CIFAR-shaped data", '',
              '| model | batch | steps | precision | parallel | devices | examples/s | '
              'GFLOP/step | TFLOP/s | % of peak bf16 |', '|---|---|---|---|---|---|---|---|---|---|',
              f"| {proto['model']}{proto['depth'] or ''} | {proto['batch']} | {proto['steps']} | "
              f"{proto['precision']} | {proto['parallel']} | {proto['devices']} | "
              f"{_fmt(proto['examples_per_second'], '.0f')} | "
              f"{_fmt(proto['flops_per_step'] / 1e9, '.3g')} | "
              f"{_fmt(proto['achieved_flops'] / 1e12, '.3g')} | "
              f"{_fmt(pct, '.1f') if pct is not None else 'n/a'} |", '',
              'FLOPs: XLA cost analysis of one forward and backward pass of the global '
              'batch; the percentage divides by the peak of all devices used.', '']

  bench = _read_json(os.path.join(workdir, 'optim_update', 'results.json'))
  if bench:
    ratios = [r['ratio'] for r in bench if r.get('ratio') is not None]
    lines += ['## optim_update', '',
              f'{len(bench)} rows; ours / Optax time ratio median '
              f"{_fmt(statistics.median(ratios) if ratios else None)}"
              f" (range {_fmt(min(ratios) if ratios else None)}-"
              f"{_fmt(max(ratios) if ratios else None)}).", '']
  for name in THROUGHPUT_RUNS:
    tput = _read_json(os.path.join(workdir, name, 'results.json'))
    if tput:
      deep = 'deep_width' in tput and any('[deep_mlp]' in r['contender'] for r in tput['rows'])
      size = (f" (deep_mlp {tput['deep_depth']} x {tput['deep_width']}, batch "
              f"{tput['deep_batch']})" if deep else '')
      lines += [f'## {name}{size}', '', '| contender | steps/s |', '|---|---|']
      lines += [f"| {r['contender']} | {r['steps_per_second']:.0f} |" for r in tput['rows']]
      lines.append('')
      lines += [f'- {k}: {_fmt(v)}' for k, v in tput.get('ratios', {}).items()]
      lines.append('')
  lines.append(f'{failed} step(s) failed.' if failed else 'Every step ran.')
  text = '\n'.join(lines) + '\n'
  tmp = os.path.join(workdir, '.results.md.tmp')
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, os.path.join(workdir, 'results.md'))
  return text


if __name__ == '__main__':
  if len(sys.argv) != 2:
    sys.exit('usage: python -m experiments.benchmarks._device_report WORKDIR')
  print(report(sys.argv[1]), end='')
