"""Many small function calls evaluated in one compiled program.

The submodule tests (losses, projections, ...) compare about a hundred small
calls of ours with Optax's. Run eagerly, every call compiles its own kernels
(about 12 s of CPU for the losses alone); traced together into one program,
compiled with XLA's cheap CPU settings, it is about 2.5 s per library. The
cheap settings only skip LLVM optimisation passes; ours and Optax's programs
are compiled alike, so the comparison stays like for like.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

# XLA CPU options that skip expensive LLVM passes: several times faster to
# compile, with the same HLO semantics.
FAST_COMPILE = {
    'xla_backend_optimization_level': 0,
    'xla_llvm_disable_expensive_passes': True,
}

Call = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]


def _is_array(x) -> bool:
  return isinstance(x, jax.Array)


def run_fast(fn: Callable[..., Any], *args):
  """``jax.jit(fn)(*args)``, compiled with ``FAST_COMPILE``."""
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def run_calls(calls: Sequence[Call]) -> list[Any]:
  """``[fn(*args, **kwargs) for fn, args, kwargs in calls]`` as one program.

  Positional arguments are traced; keyword arguments are traced if they are
  arrays and passed as they are otherwise (axes, flags, Python numbers,
  callables), as a caller of the function would pass them.
  """
  traced = [(args, {k: v for k, v in kw.items() if _is_array(v)})
            for _, args, kw in calls]
  static = [{k: v for k, v in kw.items() if not _is_array(v)}
            for _, _, kw in calls]

  def program(traced):
    return [fn(*args, **dyn, **st)
            for (fn, _, _), (args, dyn), st in zip(calls, traced, static)]

  return run_fast(program, traced)
