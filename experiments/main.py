"""Runs one study: ``python -m experiments.main --study=NAME --config=configs/NAME.py[:scale]``.

``./launch.sh STUDY[:scale] [--config.field=value ...]`` calls this. A bad
command line fails in one line before any work starts: an unknown study,
scale or config field (named by its dotted path, with the nearest valid
fields), a value of the wrong type or out of range (the study's
``validate``), a stray argument, or a ``--workdir`` that holds a study of
another config. ``--print_config`` prints the resolved config and exits.
"""

import difflib
import importlib
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

_STUDY = flags.DEFINE_string('study', None, 'Study module under experiments/.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None,
    'Study directory; default runs/<study>/<timestamp>. The same command into '
    'the same workdir resumes a killed study.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False,
    'Call jax.distributed.initialize() first (automatic under SLURM or on a '
    'TPU pod).')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'Print the resolved config and exit.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Study config file.')
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


def _wants_distributed() -> bool:
  if _MULTIHOST.value:
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
  config = _CONFIG.value
  if _PRINT_CONFIG.value:
    print(config)
    return
  import jax
  if _wants_distributed():
    jax.distributed.initialize()
  module = importlib.import_module(f'experiments.{_STUDY.value}')
  try:
    if hasattr(module, 'validate'):
      module.validate(config)
    workdir = _WORKDIR.value or common.new_workdir(_STUDY.value)
    common.Study(workdir, config)  # a workdir of another config fails here
  except (TypeError, ValueError) as e:
    _fail(str(e))
  logging.info('study %s -> %s', _STUDY.value, workdir)
  module.run(config, workdir)
  logging.info('results: %s', os.path.join(workdir, 'results.md'))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
