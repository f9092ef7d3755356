"""A jax.profiler trace of chosen training steps (``config.train.profile_steps``).

``profile_steps='a,b'`` traces steps ``a`` to ``b`` (1-based, inclusive) into
``<run folder>/profile``; open it with TensorBoard's profile plugin
(``tensorboard --logdir <run folder>/profile``) or load the
``*.xplane.pb``/``*.trace.json.gz`` file in Perfetto (ui.perfetto.dev). The
Trainer ends a dispatch at step ``a - 1`` and at step ``b`` so the trace holds
exactly those steps, and waits for step ``b`` to finish before it stops.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import jax

__all__ = ['Profiler', 'dispatch_ends', 'parse_profile_steps']

_PATTERN = re.compile(r'^\s*(\d+)\s*(?:,\s*(\d+)\s*)?$')


def parse_profile_steps(value) -> Optional[tuple[int, int]]:
  """``''`` -> None; ``'a,b'`` or ``'a'`` (``a, a``) -> ``(a, b)``, 1 <= a <= b."""
  if value in ('', None):
    return None
  m = _PATTERN.match(value) if isinstance(value, str) else None
  if m is None or int(m.group(1)) < 1 or int(m.group(2) or m.group(1)) < int(m.group(1)):
    raise ValueError(
        f'config.train.profile_steps={value!r} is invalid; allowed: \'\' (no trace) or '
        "'a,b' with 1 <= a <= b (trace steps a to b, e.g. '10,20').")
  return int(m.group(1)), int(m.group(2) or m.group(1))


def dispatch_ends(steps: Optional[tuple[int, int]], step: int) -> list[int]:
  """Steps after ``step`` at which a dispatch must end, so that the trace
  starts and stops on step boundaries."""
  if steps is None:
    return []
  return [s for s in (steps[0] - 1, steps[1]) if s > step]


class Profiler:
  """Starts a trace before step ``a`` and stops it after step ``b``."""

  def __init__(self, steps: Optional[tuple[int, int]], workdir: Optional[str]):
    self.steps = steps
    self.directory = os.path.join(workdir, 'profile') if workdir else None
    self.active = False

  def before(self, step: int) -> None:
    """Called with the number of steps done before a dispatch."""
    if self.steps and not self.active and step == self.steps[0] - 1:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Called with the number of steps done after a dispatch."""
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      self.active = False
      jax.profiler.stop_trace()
