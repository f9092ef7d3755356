"""What every study shares: run folders, config checks, tables and figures.

A study module defines ``run(config, workdir) -> dict``. It writes into
``workdir``: ``config.json`` (with the versions and the git commit),
``results.json``, ``results.md`` and its figures, and one folder per
training run under ``runs/`` (see :class:`Study`). A workdir that holds a
study of another config is refused; the same command into the same workdir
after a kill skips the finished runs and resumes the interrupted one.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import matplotlib
import numpy as np

from absl import logging

from research.train import checkpoints
from research.train import metric_writers

matplotlib.use('Agg')  # Figures go to files; no display is assumed.

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def new_workdir(study: str, root: Optional[str] = None) -> str:
  """Creates ``runs/<study>/<timestamp>`` (with a suffix if it exists)."""
  root = root or os.path.join(REPO_ROOT, 'runs')
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  base = os.path.join(root, study, stamp)
  path, i = base, 1
  while True:
    try:
      os.makedirs(path)
      return path
    except FileExistsError:
      path, i = f'{base}-{i}', i + 1


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file, fsync and ``os.replace``;
  the file is readable by others (0644)."""
  checkpoints.atomic_write_text(path, text)


def write_json(path: str, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + '\n')


def _jsonable(x):
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  if hasattr(x, 'tolist'):
    return x.tolist()
  return str(x)


def write_config(workdir: str, config) -> None:
  """``config.json``: the config as run plus the environment it ran in."""
  metric_writers.write_run_config(workdir, config.to_dict())


class StudyConfigError(ValueError):
  """The workdir holds a study of another config."""


def _canonical(config_dict: dict) -> str:
  return json.dumps(config_dict, sort_keys=True, default=str)


# Fields that change how a study is shown, not what it computes: a rerun
# may change them.
PRESENTATION_FIELDS = ('progress', 'progress_seconds', 'tensorboard')


def _comparable(config_dict: dict) -> dict:
  def strip(d):
    return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
            if k not in PRESENTATION_FIELDS}
  return json.loads(_canonical(strip(config_dict)))


def _first_difference(a, b, path='') -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k, '<absent>') != b.get(k, '<absent>'):
        return _first_difference(a.get(k, '<absent>'), b.get(k, '<absent>'),
                                 f'{path}.{k}' if path else k)
    return path
  return f'{path} ({a!r} there, {b!r} now)'


class Study:
  """A study's workdir: its config and one folder per training run.

  ``study.run(name, train)`` calls ``train(folder) -> dict`` for the run
  ``runs/<name>`` unless that run is complete, and returns its result (a
  JSON-able dict, saved as ``result.json``). A run's folder holds what its
  Trainer writes (checkpoints, snapshots, metrics.jsonl, TensorBoard) and
  ``status.json``: ``{"status": "running" | "complete", ...}``. Killed
  mid-run, the next ``train(folder)`` resumes from the last checkpoint
  there (the Trainer does that); a complete run is never recomputed.
  """

  def __init__(self, workdir: str, config):
    self.workdir = workdir
    self.config = config
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'config.json')
    mine = _comparable(config.to_dict())
    if os.path.exists(path):
      with open(path) as f:
        saved = _comparable(json.load(f).get('config', {}))
      if saved != mine:
        raise StudyConfigError(
            f'{workdir} holds a study of another config (first difference: '
            f'{_first_difference(saved, mine)}); use a new --workdir, or the '
            'same config to resume it.')
    else:
      write_config(workdir, config)

  def folder(self, name: str) -> str:
    if not re.fullmatch(r'[A-Za-z0-9_.=-]+', name):
      raise ValueError(f'run name {name!r}: use letters, digits and _ . = - only.')
    return os.path.join(self.workdir, 'runs', name)

  def status(self, name: str) -> Optional[str]:
    path = os.path.join(self.folder(name), 'status.json')
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f).get('status')

  def run(self, name: str, train: Callable[[str], dict]) -> dict:
    folder = self.folder(name)
    result_path = os.path.join(folder, 'result.json')
    if self.status(name) == 'complete' and os.path.exists(result_path):
      logging.info('run %s: complete, skipped (%s)', name, folder)
      with open(result_path) as f:
        return json.load(f)
    os.makedirs(folder, exist_ok=True)
    resumed = os.path.exists(os.path.join(folder, 'status.json'))
    logging.info('run %s: %s (%s)', name, 'resuming' if resumed else 'starting', folder)
    start = time.time()
    write_json(os.path.join(folder, 'status.json'), dict(status='running', started=start))
    result = train(folder)
    write_json(result_path, result)
    write_json(os.path.join(folder, 'status.json'),
               dict(status='complete', finished=time.time()))
    logging.info('run %s: complete in %.1f s', name, time.time() - start)
    # Round-trip through JSON so a fresh run returns what a rerun reads.
    with open(result_path) as f:
      return json.load(f)


def run_part(study: Study, name: str, compute: Callable[[], dict]) -> dict:
  """``study.run(name, ...)`` of a part that needs no folder: ``compute()``,
  logged with its time (a skipped, complete part too)."""
  t0 = time.time()
  result = study.run(name, lambda folder: compute())
  logging.info('run %s: done in %.1fs', name, time.time() - t0)
  return result


def fail(field: str, value: Any, allowed: str) -> None:
  raise ValueError(f'config.{field}={value!r} is invalid; allowed: {allowed}.')


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
  """Raises ``ValueError`` naming the config field unless ``ok``."""
  if not ok:
    fail(field, value, allowed)


def require_choices(field: str, values: Iterable[str], known: Iterable[str]) -> None:
  known = list(known)
  for v in values:
    require(v in known, field, v, 'one of ' + ', '.join(known))


def split_names(text: str) -> list[str]:
  """``'a, b,c'`` -> ``['a', 'b', 'c']``; config lists are comma-separated strings."""
  return [t.strip() for t in text.split(',') if t.strip()]


def seed_claim(a, b, num_seeds: int) -> tuple[str, float, float]:
  """Compares two ``(mean, std)`` over seeds without over-claiming.

  Returns ``(verdict, diff, spread)`` with ``diff = a - b`` and ``spread =
  hypot(std_a, std_b)``; the verdict is 'one_seed' (no spread to judge by),
  'beyond' (|diff| > spread) or 'within' (no claim).
  """
  diff, spread = a[0] - b[0], float(np.hypot(a[1], b[1]))
  if num_seeds < 2:
    return 'one_seed', diff, spread
  return ('beyond' if abs(diff) > spread else 'within'), diff, spread


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  def fmt(x):
    if isinstance(x, float):
      return f'{x:.6g}'
    return str(x)
  lines = ['| ' + ' | '.join(headers) + ' |',
           '|' + '|'.join('---' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(fmt(x) for x in row) + ' |' for row in rows]
  return '\n'.join(lines)


def save_figure(fig, path: str) -> None:
  fig.savefig(path, dpi=110, bbox_inches='tight')
  import matplotlib.pyplot as plt
  plt.close(fig)


def grid_shape(n: int, max_cols: int = 6) -> tuple[int, int]:
  cols = min(n, max_cols)
  return (n + cols - 1) // cols, cols


RunFn = Callable[[Any, str], dict]
