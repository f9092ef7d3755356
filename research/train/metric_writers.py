"""Where metrics go: ``metrics.jsonl``, TensorBoard events and a progress bar."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Optional

import numpy as np

from research.train.checkpoints import atomic_write_text


def _scalars(metrics: dict, prefix: str = '') -> dict:
  """Flattens nested dicts of scalars into ``{'a/b': float}``."""
  out = {}
  for k, v in metrics.items():
    name = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_scalars(v, name + '/'))
    elif np.ndim(v) == 0:
      out[name] = float(np.asarray(v))
    else:  # one value per replica: the mean, and each as name/i
      v = np.asarray(v, np.float64).ravel()
      out[name] = float(v.mean())
      out.update({f'{name}/{i}': float(x) for i, x in enumerate(v)})
  return out


class MetricWriter:
  """Appends one JSON object per logged step and mirrors it to TensorBoard."""

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if resume_step is not None and os.path.exists(self.path):
      self._drop_after(resume_step)
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def _drop_after(self, step: int) -> None:
    # A resumed run repeats the steps after its checkpoint and logs them
    # again, identically; keep one copy of each. A line cut short by a kill
    # is dropped (with a warning) so that the next append starts a new line.
    rows = [r for r in _parse_lines(self.path) if r.get('step', 0) <= step]
    atomic_write_text(self.path, ''.join(json.dumps(r, sort_keys=True) + '\n' for r in rows))

  def write(self, step: int, metrics: dict, prefix: str = '') -> dict:
    scalars = _scalars(metrics, prefix)
    line = json.dumps(dict(step=int(step), **scalars), sort_keys=True) + '\n'
    with open(self.path, 'a') as f:
      f.write(line)  # one write per row: a kill cuts at most the last line
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, int(step))
    return scalars

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Training progress: a tqdm bar labeled with the run's name on a terminal;
  without one (a log file, CI), a log line every ``seconds`` with the name,
  step, loss and steps/s. ``enabled=False`` shows nothing."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True, name: str = '',
               seconds: float = 30.0):
    self.total, self.name, self.seconds = total, name, seconds
    self.n = initial
    self._bar = None
    self._enabled = enabled
    self._last = time.monotonic()
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit='step',
                       desc=name or None, leave=False)

  def update(self, step: int, row: dict) -> None:
    shown = {k: float(np.mean(v)) for k, v in row.items()
             if k in ('loss', 'accuracy', 'learning_rate', 'steps_per_second')}
    if self._bar is not None:
      self._bar.update(step - self.n)
      self._bar.set_postfix({k: f'{v:.4g}' for k, v in shown.items()})
    elif self._enabled and (time.monotonic() - self._last >= self.seconds
                            or step == self.total):
      self._last = time.monotonic()
      from absl import logging
      logging.info('%sstep %d/%d  %s', f'{self.name}: ' if self.name else '', step,
                   self.total, '  '.join(f'{k} {v:.4g}' for k, v in shown.items()))
    self.n = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _parse_lines(path: str) -> list[dict]:
  """The rows of a JSON-lines file; a line that does not parse (the last
  one, cut short by a kill) is dropped with a warning naming it."""
  rows = []
  with open(path, errors='replace') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        if not isinstance(row, dict):
          raise ValueError('not an object')
      except ValueError:
        from absl import logging
        logging.warning('%s:%d is not a complete JSON row (a write cut short by a '
                        'kill?); dropped: %.60r', path, number, line)
        continue
      rows.append(row)
  return rows


def read_metrics(workdir: str, prefix: Optional[str] = None) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  rows = _parse_lines(path)
  if prefix:
    rows = [r for r in rows if any(k.startswith(prefix) for k in r if k != 'step')]
  return rows


def _unflatten(flat: dict) -> dict:
  """The inverse of :func:`_scalars` for one prefix: ``{'loss': 1.0,
  'loss/0': .., 'loss/1': ..}`` -> ``{'loss': [.., ..]}``; nested names
  (``layer_grad_norms/Dense_0/kernel``) one nested level, as the Trainer's
  rows have them (``{'layer_grad_norms': {'Dense_0/kernel': ..}}``)."""
  out: dict = {}
  replicas = {}
  for key, value in flat.items():
    base, _, last = key.rpartition('/')
    if base and last.isdigit() and base in flat:
      replicas.setdefault(base, {})[int(last)] = value
  for key, value in flat.items():
    base, _, last = key.rpartition('/')
    if base and last.isdigit() and base in flat:
      continue
    if key in replicas:
      value = [replicas[key][i] for i in sorted(replicas[key])]
    node = out
    parts = key.split('/', 1)  # one level: {'layer_grad_norms': {'Dense_0/kernel': ..}}
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return out


def read_history(workdir: str, until: Optional[int] = None) -> tuple[list, list]:
  """``(train rows, evaluations)`` as :meth:`Trainer.fit` returned them, read
  back from ``metrics.jsonl`` (steps ``<= until``), so that a resumed run
  reports the whole run. Per-replica values come back as lists."""
  history, evals = [], []
  for row in read_metrics(workdir):
    step = row['step']
    if until is not None and step > until:
      continue
    train = {k[len('train/'):]: v for k, v in row.items() if k.startswith('train/')}
    if train:
      history.append(dict(step=step, **_unflatten(train)))
    ev = {k[len('eval/'):]: v for k, v in row.items() if k.startswith('eval/')}
    if ev:
      merged = _unflatten(ev)
      if evals and evals[-1]['step'] == step:
        evals[-1].update(merged)
      else:
        evals.append(dict(step=step, **merged))
  return history, evals


def git_commit(cwd: Optional[str] = None) -> Optional[str]:
  """The commit of the code that runs, or None outside a git checkout."""
  cwd = cwd or os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=cwd, capture_output=True,
                         text=True, timeout=10, check=True)
    return out.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def environment() -> dict:
  """Versions of Python, JAX and Flax, the devices and the git commit."""
  import flax
  import jax
  return dict(python=platform.python_version(), jax=jax.__version__,
              flax=flax.__version__, backend=jax.default_backend(),
              devices=jax.device_count(), processes=jax.process_count(),
              git_commit=git_commit())


def write_run_config(workdir: str, config: dict) -> None:
  """``config.json``: the run's config and the environment it ran in (atomic;
  process 0 only)."""
  import jax
  if jax.process_index() != 0:
    return
  atomic_write_text(os.path.join(workdir, 'config.json'), json.dumps(
      dict(config=config, environment=environment()), indent=2, sort_keys=True,
      default=str))
