"""Runs one study: ``python -m experiments.main --study=NAME --config=configs/NAME.py[:scale]``.

``./launch.sh STUDY[:scale] [--config.field=value ...]`` calls this. A bad
command line fails in one line before any work starts: an unknown study,
scale or config field (named by its dotted path, with the nearest valid
fields), a value of the wrong type or out of range (the study's
``validate``), a stray argument, or a ``--workdir`` that holds a study of
another config. ``--print_config`` prints the resolved config and exits.
"""

import atexit
import difflib
import importlib
import os
import re
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

# The flags are defined when this module runs as the program, not when it
# is imported (tests import preflight; benchmarks define --workdir too), and
# read from flags.FLAGS.
FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('study', None, 'Study module under experiments/.')
  flags.DEFINE_string(
      'workdir', None,
      'Study directory; default runs/<study>/<timestamp>. The same command into '
      'the same workdir resumes a killed study.')
  flags.DEFINE_bool(
      'multihost', False,
      'Call jax.distributed.initialize() first (automatic under SLURM or on a '
      'TPU pod); elsewhere give --coordinator_address, --num_processes and '
      '--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).')
  flags.DEFINE_string(
      'coordinator_address', None, 'host:port of process 0 (multi-host runs).')
  flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
  flags.DEFINE_integer('process_id', None, 'This process, 0-based.')
  flags.DEFINE_integer(
      'initialization_timeout', 300, 'Seconds to wait for every process to join.')
  flags.DEFINE_integer(
      'heartbeat_timeout', 60,
      'Seconds without a heartbeat after which JAX counts a process as lost; the '
      'survivors end with one line and status 75 within half of it (outside a '
      'collective) or at their next collective.')
  flags.DEFINE_bool(
      'print_config', False, 'Print the resolved config and exit.')
  config_flags.DEFINE_config_file('config', None, 'Study config file.')
  flags.mark_flags_as_required(['study', 'config'])


class UsageError(Exception):
  """A command-line mistake: reported in one line, exit status 2."""


def _dotted_paths(config, prefix=''):
  paths = []
  for key in config.keys():
    value = config[key]
    path = f'{prefix}{key}'
    paths.append(path)
    if hasattr(value, 'keys') and not isinstance(value, dict):
      paths += _dotted_paths(value, path + '.')
  return paths


def _option(argv, name):
  for arg in argv:
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
  return None


def load_config(config_arg: str):
  """``configs/NAME.py[:scale]`` -> (module, config); one-line errors."""
  path, _, scale = config_arg.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    module = importlib.import_module(f'configs.{name}')
  except ModuleNotFoundError as e:
    raise UsageError(f'unknown config file {path!r}') from e
  try:
    return module, module.get_config(scale or None)
  except ValueError as e:
    raise UsageError(str(e)) from e


def preflight(argv) -> None:
  """The checks absl's parser would report with a traceback, or not at all."""
  stray = [a for a in argv[1:] if not a.startswith('-')]
  if stray:
    raise UsageError(f'unexpected argument(s) {" ".join(stray)}; settings are '
                     '--config.FIELD=VALUE (see --print_config)')
  config_arg = _option(argv, 'config')
  if config_arg is None:
    return  # absl reports the missing required flag
  _, config = load_config(config_arg)
  known = _dotted_paths(config)
  for arg in argv[1:]:
    m = re.match(r'--(?:no)?config\.([^=]+)', arg)
    if m and m.group(1) not in known:
      near = difflib.get_close_matches(m.group(1), known, n=3, cutoff=0.5)
      raise UsageError(
          f'unknown config field config.{m.group(1)}'
          + (f'; nearest: {", ".join("config." + p for p in near)}' if near else '')
          + ' (--print_config lists every field)')


def _parse(argv):
  try:
    preflight(argv)
    return flags.FLAGS(argv)
  except UsageError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(f'{type(e).__name__}: {e}')


def _fail(message: str):
  study = _option(sys.argv, 'study') or 'main'
  print(f'{study}: error: {message}', file=sys.stderr)
  sys.exit(2)


class PeerLostError(RuntimeError):
  """A process of a multi-host run stopped answering."""


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None, *,
                           initialization_timeout: int = 300,
                           heartbeat_timeout: int = 60) -> None:
  """``jax.distributed.initialize`` with explicit timeouts.

  Unset arguments come from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID``, then from SLURM / TPU detection. A process that
  misses heartbeats for ``heartbeat_timeout`` seconds counts as lost. A
  survivor learns of a lost peer at its next collective (the connection is
  closed), and :func:`run_multihost` ends it there with one line and status
  75. One that reaches no collective learns of it from JAX's coordination
  service ``heartbeat_timeout`` seconds after the loss, and JAX then aborts
  it (SIGABRT); so a :class:`_PeerWatch` ends it first, one line and status
  75, ``heartbeat_timeout / 2`` seconds after the loss.
  """
  import jax
  env = os.environ
  coordinator_address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS')
  if num_processes is None and env.get('JAX_NUM_PROCESSES'):
    num_processes = int(env['JAX_NUM_PROCESSES'])
  if process_id is None and env.get('JAX_PROCESS_ID'):
    process_id = int(env['JAX_PROCESS_ID'])
  for name, value in (('initialization_timeout', initialization_timeout),
                      ('heartbeat_timeout', heartbeat_timeout)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'{name}={value!r} is invalid; allowed: an int >= 1 (seconds).')
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout)
  except ValueError as e:
    raise ValueError(
        f'--multihost: {e} Give --coordinator_address=HOST:PORT, --num_processes=N and '
        '--process_id=I (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, '
        'JAX_PROCESS_ID), or run under SLURM or on a TPU pod.') from e
  global _PEER_WATCH
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  if jax.process_count() > 1 and client is not None and _PEER_WATCH is None:
    _PEER_WATCH = _PeerWatch(client, jax.process_index(), jax.process_count(),
                             timeout=max(heartbeat_timeout / 2, 1.0))


LOST_PEER_EXIT = 75


class _PeerWatch:
  """Ends this process with one line and status 75 when a peer is lost,
  before JAX's coordination service would abort it.

  Every ``interval`` seconds a daemon thread bumps this process's counter in
  the coordination service's key-value store and reads the others'. A peer
  whose counter has not moved for ``timeout`` seconds (half the heartbeat
  timeout: JAX's own report of a lost process aborts; its client takes no
  callback that Python can give), or a store that no longer answers (the
  coordinator is gone), ends the process. A peer that finished (``done``)
  is not watched.
  """

  PREFIX = 'research/peer_watch'

  def __init__(self, client, process_id: int, num_processes: int, timeout: float):
    self.client, self.me, self.n = client, process_id, num_processes
    self.timeout, self.interval = timeout, min(1.0, timeout / 5)
    # Set when this process is done (or exiting: atexit runs this before
    # JAX's own shutdown, registered earlier), so that the thread never
    # takes the service's normal end for a loss.
    self.stopped = threading.Event()
    atexit.register(self.stopped.set)
    thread = threading.Thread(target=self._run, name='peer-watch', daemon=True)
    thread.start()

  def _key(self, kind: str, i: int) -> str:
    return f'{self.PREFIX}/{kind}/{i}'

  def done(self) -> None:
    """This process finished normally: its peers stop watching it, and it
    stops watching them."""
    self.stopped.set()
    try:
      self.client.key_value_set(self._key('done', self.me), '1', allow_overwrite=True)
    except Exception:  # noqa: BLE001 - the coordinator may be gone already
      pass

  def _get(self, key: str):
    try:
      return self.client.key_value_try_get(key)
    except Exception as e:  # noqa: BLE001 - a key not yet set raises NotFound
      text = str(e).lower()
      if 'not found' in text or 'not_found' in text or 'notfound' in text:
        return None
      raise

  def _run(self) -> None:
    seen = {i: (None, time.monotonic()) for i in range(self.n) if i != self.me}
    beats = 0
    while not self.stopped.is_set():
      try:
        beats += 1
        self.client.key_value_set(self._key('beat', self.me), str(beats),
                                  allow_overwrite=True)
        now = time.monotonic()
        for i, (last, since) in list(seen.items()):
          if self._get(self._key('done', i)) is not None:
            del seen[i]
            continue
          value = self._get(self._key('beat', i))
          if value != last:
            seen[i] = (value, now)
          elif now - since > self.timeout and not self.stopped.is_set():
            _lost_peer(f'process {i} of {self.n} has not been heard from for '
                       f'{now - since:.0f} s (lost); process {self.me} stops')
      except Exception as e:  # noqa: BLE001 - the store itself is gone
        if self.stopped.is_set():
          return
        _lost_peer(f'process {self.me} of {self.n} lost the coordination service: '
                   f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
      time.sleep(self.interval)


_PEER_WATCH = None


def _lost_peer(message: str) -> None:
  """Ends this process at once with one line: JAX's exit path would wait at
  the shutdown barrier for the lost process and then abort."""
  print(f'multihost: {message}', file=sys.stderr, flush=True)
  os._exit(LOST_PEER_EXIT)


def run_multihost(fn, *args):
  """``fn(*args)``; in a multi-host run an exception (a collective with a
  lost peer fails at once) prints its traceback and ends the process with
  status 75 and one line naming the cause."""
  import jax
  try:
    result = fn(*args)
    if _PEER_WATCH is not None:
      _PEER_WATCH.done()
    return result
  except Exception as e:
    if jax.process_count() <= 1:
      raise
    import traceback
    traceback.print_exc()
    _lost_peer(f'process {jax.process_index()} of {jax.process_count()} stopped: '
               f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""} '
               '(a lost peer fails the next collective)')


def _wants_distributed() -> bool:
  if FLAGS.multihost:
    return True
  slurm_tasks = int(os.environ.get('SLURM_NTASKS', '1'))
  return slurm_tasks > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ


class _QuietLibraries:
  """Drops the INFO records of orbax (a dozen lines per checkpoint), so the
  log shows the study's progress; warnings and errors pass."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or 'orbax' not in record.pathname


def main(argv):
  del argv
  import logging as std_logging
  for handler in std_logging.getLogger().handlers + std_logging.getLogger('absl').handlers:
    handler.addFilter(_QuietLibraries())
  config = FLAGS.config
  if FLAGS.print_config:
    print(config)
    return
  import jax
  if _wants_distributed():
    try:
      initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             initialization_timeout=FLAGS.initialization_timeout,
                             heartbeat_timeout=FLAGS.heartbeat_timeout)
    except ValueError as e:
      _fail(str(e))
  module = importlib.import_module(f'experiments.{FLAGS.study}')
  try:
    if hasattr(module, 'validate'):
      module.validate(config)
    workdir = FLAGS.workdir or common.new_workdir(FLAGS.study)
    common.Study(workdir, config)  # a workdir of another config fails here
  except (TypeError, ValueError) as e:
    _fail(str(e))
  logging.info('study %s -> %s', FLAGS.study, workdir)
  run_multihost(module.run, config, workdir)
  logging.info('results: %s', os.path.join(workdir, 'results.md'))


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=_parse)
