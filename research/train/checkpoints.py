"""Checkpoints, snapshots and best params you can trust after a crash.

Every save writes a new folder next to its destination (``.tmp-*``), fsyncs
it and renames it into place, so a kill at any moment leaves either the old
folder or the new one, never half of one. A folder holds ``arrays.bin`` (the
leaves' raw bytes) and ``manifest.json`` (each leaf's path, shape, dtype and
checksum); a checkpoint ``checkpoints/<step>/`` holds its state in ``state/``,
``meta.json`` (data position, counters, hooks, the Trainer's own settings)
and ``checksums.json`` over both. Reading verifies every checksum, so a
truncated, deleted, garbled or bit-flipped file is reported as a
:class:`CheckpointError`, never restored as wrong values; the Trainer then
tries the next older checkpoint (:meth:`Checkpoints.restore_latest`).

Only process 0 writes (every process holds the same host copy); a
:class:`WorkdirLock` keeps a second process off a live workdir.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 1
_ARRAYS, _MANIFEST, _META, _SUMS = 'arrays.bin', 'manifest.json', 'meta.json', 'checksums.json'


class CheckpointError(RuntimeError):
  """A checkpoint or params folder that cannot be read or fails verification."""


class WorkdirLocked(RuntimeError):
  """Another live process holds the workdir."""


def state_tree(state) -> dict:
  """The savable part of a TrainState (no apply_fn, no tx)."""
  tree = dict(step=state.step, params=state.params, batch_stats=state.batch_stats,
              opt_state=state.opt_state, rng=state.rng)
  if getattr(state, 'loss_scale', None) is not None:  # float16's dynamic loss scale
    tree['loss_scale'] = state.loss_scale
  return tree


def _digest(data) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def _is_writer() -> bool:
  return jax.process_index() == 0


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_file(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
  """``path`` replaced in one step (temporary file, fsync, ``os.replace``)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f'.tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}')
  try:
    _write_file(tmp, text.encode())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(directory)


def _tmp_dir(final: str) -> str:
  parent, name = os.path.split(os.path.abspath(final))
  os.makedirs(parent, exist_ok=True)
  path = os.path.join(parent, f'.tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}')
  os.makedirs(path)
  return path


def _publish(tmp: str, final: str) -> None:
  """Renames the finished folder ``tmp`` to ``final``. An existing ``final``
  (the same save repeated after a resume) is moved aside first and deleted
  only once the new one is in place."""
  parent, name = os.path.split(os.path.abspath(final))
  _fsync_dir(tmp)
  old = None
  if os.path.exists(final):
    old = os.path.join(parent, f'.old-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}')
    os.rename(final, old)
  os.rename(tmp, final)
  _fsync_dir(parent)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def remove_unfinished(parent: str) -> list[str]:
  """Deletes the ``.tmp-*`` / ``.old-*`` leftovers of killed saves under
  ``parent`` (call it only while holding the workdir's lock)."""
  gone = []
  if os.path.isdir(parent):
    for name in os.listdir(parent):
      if name.startswith(('.tmp-', '.old-')):
        path = os.path.join(parent, name)
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        gone.append(name)
  return gone


# --- a pytree in a folder -------------------------------------------------------

def _key(entry) -> list:
  for kind, attr in (('d', 'key'), ('a', 'name'), ('i', 'idx'), ('f', 'key')):
    if hasattr(entry, attr):
      value = getattr(entry, attr)
      return [kind, value if isinstance(value, (int, str)) else str(value)]
  return ['s', str(entry)]


def _path_name(path) -> str:
  return '/'.join(str(k[1]) for k in path) or '<root>'


def _write_tree(directory: str, tree: Any) -> None:
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  entries, offset = [], 0
  with open(os.path.join(directory, _ARRAYS), 'wb') as f:
    for path, leaf in leaves:
      a = np.asarray(leaf)
      a = a if a.flags.c_contiguous else a.copy(order='C')  # 0-d stays 0-d
      data = a.tobytes()
      f.write(data)
      entries.append(dict(path=[_key(k) for k in path], shape=list(a.shape),
                          dtype=str(a.dtype), offset=offset, nbytes=len(data),
                          checksum=_digest(data)))
      offset += len(data)
    f.flush()
    os.fsync(f.fileno())
  manifest = json.dumps(dict(format=FORMAT, leaves=entries), sort_keys=True)
  _write_file(os.path.join(directory, _MANIFEST), manifest.encode())


def _read_json(path: str):
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise CheckpointError(f'cannot read {path}: {e.strerror or e}') from e
  try:
    return json.loads(data), data
  except ValueError as e:
    raise CheckpointError(f'{path} is not valid JSON ({e})') from e


def _nest(paths_values) -> dict:
  out: dict = {}
  for path, value in paths_values:
    node = out
    for _, k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1][1] if path else 'value'] = value
  return out


def _read_tree(directory: str, target: Any = None, manifest_digest: Optional[str] = None):
  """Reads and verifies a folder written by :func:`_write_tree`; into the
  structure, shapes and dtypes of ``target`` if given (else nested dicts)."""
  if not os.path.isdir(directory):
    raise CheckpointError(f'{directory} is missing')
  if not os.path.exists(os.path.join(directory, _MANIFEST)) and os.path.exists(
      os.path.join(directory, '_METADATA')):
    return _read_legacy(directory, target)
  manifest, raw = _read_json(os.path.join(directory, _MANIFEST))
  if manifest_digest is not None and _digest(raw) != manifest_digest:
    raise CheckpointError(f'{directory}/{_MANIFEST} fails its checksum')
  entries = manifest.get('leaves') if isinstance(manifest, dict) else None
  if manifest.get('format') != FORMAT or not isinstance(entries, list):
    raise CheckpointError(f'{directory}/{_MANIFEST} is not a checkpoint manifest')
  try:
    with open(os.path.join(directory, _ARRAYS), 'rb') as f:
      blob = f.read()
  except OSError as e:
    raise CheckpointError(f'cannot read {directory}/{_ARRAYS}: {e.strerror or e}') from e
  expected = sum(e['nbytes'] for e in entries)
  if len(blob) != expected:
    raise CheckpointError(f'{directory}/{_ARRAYS} holds {len(blob)} bytes; its manifest '
                          f'says {expected} (truncated or overwritten)')
  values = []
  for e in entries:
    data = blob[e['offset']:e['offset'] + e['nbytes']]
    if _digest(data) != e['checksum']:
      raise CheckpointError(f'{directory}: leaf {_path_name(e["path"])} fails its checksum')
    values.append(np.frombuffer(data, dtype=jnp.dtype(e['dtype'])).reshape(e['shape']).copy())
  if target is None:
    return _nest([(e['path'], v) for e, v in zip(entries, values)])
  flat, treedef = jax.tree_util.tree_flatten_with_path(target)
  names = [_path_name([_key(k) for k in p]) for p, _ in flat]
  saved = [_path_name(e['path']) for e in entries]
  if names != saved:
    diff = sorted(set(names) ^ set(saved))[:3] or names[:1]
    raise CheckpointError(f'{directory} holds another tree structure ({len(saved)} leaves, '
                          f'{len(names)} expected; differing: {", ".join(diff)})')
  for name, (_, t), v in zip(names, flat, values):
    if tuple(np.shape(t)) != v.shape or jnp.dtype(t.dtype) != v.dtype:
      raise CheckpointError(f'{directory}: leaf {name} is {v.dtype}{list(v.shape)}; '
                            f'expected {jnp.dtype(t.dtype)}{list(np.shape(t))}')
  return jax.tree_util.tree_unflatten(treedef, values)


def _read_legacy(directory: str, target: Any):
  """A folder written by orbax (before checksums): read unverified."""
  import orbax.checkpoint as ocp
  try:
    with ocp.StandardCheckpointer() as ckpt:
      if target is None:
        return ckpt.restore(os.path.abspath(directory))
      return ckpt.restore(os.path.abspath(directory),
                          jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
  except Exception as e:  # orbax and tensorstore raise many kinds
    raise CheckpointError(f'{directory} (orbax format): {type(e).__name__}: '
                          f'{str(e).splitlines()[0] if str(e) else ""}') from e


def save_params(directory: str, tree: Any) -> None:
  """A single pytree (a snapshot, the best params) in a new folder renamed
  into place; by process 0 only."""
  if not _is_writer():
    return
  tmp = _tmp_dir(directory)
  try:
    _write_tree(tmp, tree)
    _publish(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load_params(directory: str, target: Any = None) -> Any:
  """Loads and verifies a pytree saved by :func:`save_params` (or a
  checkpoint's ``state`` folder); raises :class:`CheckpointError`."""
  return _read_tree(os.path.abspath(directory), target)


# --- numbered checkpoints ---------------------------------------------------------

class Checkpoints:
  """Numbered checkpoints of ``{state, meta}`` under ``directory``; the newest
  ``keep`` are kept, older ones deleted once a newer one is committed."""

  def __init__(self, directory: str, keep: int = 3):
    if keep < 1:
      raise ValueError(f'keep_checkpoints={keep} is invalid; allowed: >= 1.')
    self.directory = os.path.abspath(directory)
    self.keep = keep

  def all_steps(self) -> list[int]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(n) for n in os.listdir(self.directory)
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

  def save(self, step: int, state: dict, meta: dict) -> None:
    """Commits checkpoint ``step``, then deletes those beyond ``keep``."""
    if not _is_writer():
      return
    tmp = _tmp_dir(self.path(step))
    try:
      os.makedirs(os.path.join(tmp, 'state'))
      _write_tree(os.path.join(tmp, 'state'), state)
      meta_text = json.dumps(meta, sort_keys=True, default=_jsonable).encode()
      _write_file(os.path.join(tmp, _META), meta_text)
      with open(os.path.join(tmp, 'state', _MANIFEST), 'rb') as f:
        sums = dict(manifest=_digest(f.read()), meta=_digest(meta_text))
      _write_file(os.path.join(tmp, _SUMS), json.dumps(sums).encode())
      _publish(tmp, self.path(step))
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    for old in self.all_steps()[:-self.keep]:
      shutil.rmtree(self.path(old), ignore_errors=True)

  def _sums(self, step: int) -> Optional[dict]:
    path = os.path.join(self.path(step), _SUMS)
    if not os.path.exists(path) and os.path.exists(os.path.join(self.path(step), 'state',
                                                                '_METADATA')):
      return None  # orbax format: nothing to verify against
    sums, _ = _read_json(path)
    return sums

  def read_meta(self, step: int) -> dict:
    """The verified ``meta`` of checkpoint ``step``."""
    sums = self._sums(step)
    path = os.path.join(self.path(step), _META)
    if sums is None:  # orbax's JsonSave item
      path = os.path.join(self.path(step), 'meta', 'metadata')
    meta, raw = _read_json(path)
    if sums is not None and _digest(raw) != sums.get('meta'):
      raise CheckpointError(f'{path} fails its checksum')
    return meta

  def restore(self, step: int, target: dict) -> tuple[dict, dict]:
    """Reads and verifies checkpoint ``step`` into the structure, shapes and
    dtypes of ``target``; raises :class:`CheckpointError`."""
    if not os.path.isdir(self.path(step)):
      raise CheckpointError(f'{self.path(step)} is missing')
    sums = self._sums(step)
    meta = self.read_meta(step)
    state = _read_tree(os.path.join(self.path(step), 'state'), target,
                       None if sums is None else sums.get('manifest'))
    return state, meta

  def restore_latest(self, attempt: Callable[[int], Any], log: Callable[[str], None]):
    """``(step, attempt(step))`` for the newest step whose ``attempt`` does not
    raise :class:`CheckpointError` (each failure reported through ``log`` in
    one line), or ``(None, None)`` if there is none; raises
    :class:`CheckpointError` listing every failure when all fail. Nothing is
    deleted or moved."""
    tried = []
    for step in reversed(self.all_steps()):
      try:
        return step, attempt(step)
      except CheckpointError as e:
        tried.append(f'step {step}: {e}')
        log(f'checkpoint {self.path(step)} is unusable ({e}); trying the previous one')
    if tried:
      raise CheckpointError(f'no usable checkpoint in {self.directory}; tried ' +
                            '; '.join(tried))
    return None, None

  def move_aside(self, steps, destination: str) -> list[str]:
    """Moves checkpoints (unusable ones, newer than the restored one) to
    ``destination`` so that the resumed run can write those steps again."""
    moved = []
    if not _is_writer():
      return moved
    for step in steps:
      os.makedirs(destination, exist_ok=True)
      target = os.path.join(destination, f'{int(step)}-{uuid.uuid4().hex[:6]}')
      os.rename(self.path(step), target)
      moved.append(target)
    return moved

  def close(self):
    pass


def _jsonable(x):
  if isinstance(x, (np.generic, np.ndarray)):
    return x.tolist()
  return str(x)


def to_numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


# --- one process per workdir --------------------------------------------------------

class WorkdirLock:
  """An exclusive ``fcntl`` lock on ``workdir/.lock``, holding the owner's pid.

  The kernel drops it when the process ends, however it ends, so a killed
  run never leaves a stale lock. Only process 0 of a multi-host run locks.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self._fd = None

  def acquire(self) -> 'WorkdirLock':
    if not _is_writer():
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        os.close(fd)
        raise
      holder = os.read(fd, 64).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise WorkdirLocked(
          f'{os.path.dirname(self.path)} is in use by process {holder} (it holds '
          f'{self.path}); wait for it to end, or use another workdir.') from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing drops the lock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
