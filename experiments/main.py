"""Runs one study: ``python -m experiments.main --study=NAME --config=configs/NAME.py[:scale]``.

``./launch.sh STUDY[:scale] [--config.field=value ...]`` calls this. Config
overrides are checked by ml_collections (unknown fields and wrong types fail)
and then by the study's ``validate`` (ranges), before any work starts.
"""

import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

_STUDY = flags.DEFINE_string('study', None, 'Study module under experiments/.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory; default runs/<study>/<timestamp>.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False,
    'Call jax.distributed.initialize() first (automatic under SLURM or on a '
    'TPU pod).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Study config file.')
flags.mark_flags_as_required(['study', 'config'])


def _wants_distributed() -> bool:
  if _MULTIHOST.value:
    return True
  slurm_tasks = int(os.environ.get('SLURM_NTASKS', '1'))
  return slurm_tasks > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ


def main(argv):
  del argv
  import jax
  if _wants_distributed():
    jax.distributed.initialize()
  module = importlib.import_module(f'experiments.{_STUDY.value}')
  config = _CONFIG.value
  if hasattr(module, 'validate'):
    module.validate(config)
  workdir = _WORKDIR.value or common.new_workdir(_STUDY.value)
  os.makedirs(workdir, exist_ok=True)
  logging.info('study %s -> %s', _STUDY.value, workdir)
  module.run(config, workdir)
  logging.info('results: %s', os.path.join(workdir, 'results.md'))


if __name__ == '__main__':
  app.run(main)
