#!/usr/bin/env bash
# The one entry point of the project.
#
#   ./launch.sh                          run the default study
#   ./launch.sh STUDY[:SCALE] [--config.field=value ...] [--workdir=DIR]
#   ./launch.sh STUDY[:SCALE] --print_config   print the resolved config
#   ./launch.sh --multihost STUDY ...    call jax.distributed.initialize() first; off
#        SLURM/TPU add --coordinator_address=H:P --num_processes=N --process_id=I
#   ./launch.sh test [pytest args]       run the test suite
#   ./launch.sh bench NAME [args]        run experiments/benchmarks/NAME.py (or NAME.sh)
#   ./launch.sh --help                   list studies and benchmarks
#
# On first use it creates .venv and installs the package with its test extra;
# it reinstalls only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"
DEFAULT_STUDY="snapshot_ensembles"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

bootstrap() {
  local stamp="$VENV/.pyproject.sha256"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "launch.sh: creating $VENV" >&2
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "launch.sh: installing dependencies (pyproject.toml changed or first run)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e ".[test]" >&2
    echo "$want" > "$stamp"
  fi
}

list_modules() {  # names of the .py (and .sh) files in a folder, without helpers
  local dir="$1"
  for f in "$dir"/*.py "$dir"/*.sh; do
    [[ -e "$f" ]] || continue
    local name; name="$(basename "$(basename "$f" .py)" .sh)"
    [[ "$name" == __init__ || "$name" == main || "$name" == _* || "$name" == common ]] && continue
    echo "  $name"
  done
}

list_studies() {  # each study with the scales its config names in SCALES
  for f in experiments/*.py; do
    local name; name="$(basename "$f" .py)"
    [[ "$name" == __init__ || "$name" == main || "$name" == _* || "$name" == common ]] && continue
    local scales
    scales="$(sed -n "s/^SCALES = (\([^)]*\)).*/\1/p" "configs/$name.py" | tr -d "' " | tr ',' ' ')"
    printf '  %-24s scales: (default)' "$name"
    for s in $scales; do printf ' :%s' "$s"; done
    echo
  done
}

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "studies (configs/STUDY.py + experiments/STUDY.py; default: $DEFAULT_STUDY):"
  list_studies
  echo "benchmarks (experiments/benchmarks/NAME.py or .sh; device_check: the accelerator check):"
  list_modules experiments/benchmarks
}

multihost=0
if [[ "${1:-}" == "--multihost" ]]; then
  multihost=1
  shift
fi

case "${1:-}" in
  -h|--help|help)
    usage
    exit 0
    ;;
  test)
    shift
    bootstrap
    export PYTHONHASHSEED=0
    n_flag=()
    if [[ " $* " != *" -n "* && " $* " != *" -n="* ]]; then
      # worksteal: an idle worker takes queued tests from a busy one, so a
      # few long study tests do not leave a core idle at the end.
      n_flag=(-n "${TEST_WORKERS:-auto}" --dist=worksteal)
    fi
    # A temp root of its own: pytest prunes old "pytest-of-USER/pytest-N"
    # folders, which would delete the live tmp_path of a concurrent session.
    export PYTEST_DEBUG_TEMPROOT
    PYTEST_DEBUG_TEMPROOT="$(mktemp -d "${TMPDIR:-/tmp}/research-tests.XXXXXX")"
    # JAX's persistent compilation cache, for this run only: the study tests'
    # subprocesses (a run, its kill and its resume) and the workers compile
    # many of the same programs. A hit is the same executable, so results
    # are unchanged; it goes with the temp root.
    export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PYTEST_DEBUG_TEMPROOT/jax-cache}"
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}"
    rc=0
    "$VENV/bin/python" -m pytest "${n_flag[@]}" "$@" || rc=$?
    rm -rf "$PYTEST_DEBUG_TEMPROOT"
    exit "$rc"
    ;;
  bench)
    shift
    name="${1:?usage: ./launch.sh bench NAME}"
    shift
    if [[ -f "experiments/benchmarks/$name.sh" ]]; then  # a script of several steps
      bootstrap
      PYTHON="$VENV/bin/python" exec bash "experiments/benchmarks/$name.sh" "$@"
    fi
    if [[ ! -f "experiments/benchmarks/$name.py" ]]; then
      echo "launch.sh: unknown benchmark '$name'; known:" >&2
      list_modules experiments/benchmarks >&2
      exit 2
    fi
    bootstrap
    exec "$VENV/bin/python" -m "experiments.benchmarks.$name" "$@"
    ;;
  ""|--*)
    study="$DEFAULT_STUDY"
    ;;
  *)
    study="$1"
    shift
    ;;
esac

name="${study%%:*}"
if [[ ! -f "experiments/$name.py" || ! -f "configs/$name.py" ]]; then
  echo "launch.sh: unknown study '$name'; known: $(list_modules experiments | tr -d ' ' | paste -sd, | sed 's/,/, /g')" >&2
  exit 2
fi
config="configs/$name.py"
[[ "$study" == *:* ]] && config="$config:${study#*:}"
bootstrap
args=(--study="$name" --config="$config")
[[ $multihost == 1 ]] && args+=(--multihost)
exec "$VENV/bin/python" -m experiments.main "${args[@]}" "$@"
