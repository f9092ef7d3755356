"""What every study shares: run directories, config checks, tables and figures.

A study module defines ``run(config, workdir) -> dict``. It writes into
``workdir``: ``config.json`` (with the versions and the git commit),
``results.json``, ``results.md`` and its figures. Nothing already in a run
directory is overwritten: a new run gets a new directory.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from typing import Any, Callable, Iterable, Optional, Sequence

import matplotlib
import numpy as np

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
  """Writes ``text`` to ``path`` via a temporary file and ``os.replace``."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
