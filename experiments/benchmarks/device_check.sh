#!/usr/bin/env bash
# Checks on a GPU or TPU everything a CPU cannot, in one go:
#   1. the test suite, run on the accelerator;
#   2. the optim_update and train_throughput benchmarks (train_throughput
#      twice: the default sizes, and 100 x Dense(16) at batch 1, many small
#      leaves, where a flat optimizer gains most);
#   3. each precision policy's steps/s; the Trainer under parallel='sharded'
#      and 'pmap' on all local devices (final loss against parallel='none');
#   4. a few hundred steps of the snapshot_ensembles:cifar10_resnet20 protocol
#      on synthetic CIFAR-shaped data (no download): examples/s, FLOPs per step
#      (XLA's cost analysis) and the percentage of the device's peak bf16 FLOP/s.
# Every step runs even if one fails; results.md (printed at the end) says
# which failed and holds the tables; each step's output is in <step>.log.
#
# Usage: ./launch.sh bench device_check [--reduced] [--workdir=DIR] [--tests="PYTEST ARGS"]
#   --reduced   the CPU form the tests run: a few tests, tiny benchmarks (without
#               the many-leaf model, which test_benchmarks.py runs), a tiny
#               MLP instead of ResNet-20 and a few steps.
# Environment: TEST_WORKERS (pytest workers; default 2, reduced 0), PYTHON.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
reduced=0
workdir=""
tests=""
for arg in "$@"; do
  case "$arg" in
    --reduced) reduced=1 ;;
    --workdir=*) workdir="${arg#*=}" ;;
    --tests=*) tests="${arg#*=}" ;;
    *) echo "device_check: unknown argument '$arg'; allowed: --reduced, --workdir=DIR," \
            "--tests=\"PYTEST ARGS\"" >&2; exit 2 ;;
  esac
done
if [[ -z "$workdir" ]]; then
  workdir="runs/benchmarks/device_check/$(date +%Y%m%d-%H%M%S)"
fi
mkdir -p "$workdir"
: > "$workdir/steps.tsv"
flags=()
[[ $reduced == 1 ]] && flags+=(--reduced)

step() {  # step NAME COMMAND...: runs it, logs it, records its exit status
  local name="$1"; shift
  echo "device_check: $name ..." >&2
  local t0 rc=0
  t0=$(date +%s)
  "$@" > "$workdir/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$workdir/steps.tsv"
  [[ $rc == 0 ]] || echo "device_check: $name failed (exit $rc), see $workdir/$name.log" >&2
}

workers="${TEST_WORKERS:-2}"
if [[ $reduced == 1 ]]; then
  workers="${TEST_WORKERS:-0}"
  tests="${tests:-tests/train/test_precision.py -k optimizer_moment -p no:cacheprovider}"
  optim_args=(--optimizers=sgd --trees=resnet20 --rounds=1 --calls=1)
  throughput_args=(--steps=40 --rounds=1 --dispatch=40 --deep_steps=0)
else
  tests="${tests:--p no:cacheprovider}"
fi

# The suite on the accelerator: conftest.py picks the CPU unless JAX_PLATFORMS
# is set, and each worker must not preallocate most of the device memory.
# shellcheck disable=SC2086
step tests env JAX_PLATFORMS="${JAX_PLATFORMS-}" XLA_PYTHON_CLIENT_PREALLOCATE=false \
  "$PY" -m pytest -q -n "$workers" $tests
step optim_update "$PY" -m experiments.benchmarks.optim_update \
  --workdir="$workdir/optim_update" ${optim_args[@]+"${optim_args[@]}"}
step train_throughput "$PY" -m experiments.benchmarks.train_throughput \
  --workdir="$workdir/train_throughput" ${throughput_args[@]+"${throughput_args[@]}"}
if [[ $reduced == 0 ]]; then  # many small leaves: 100 x Dense(16), batch 1
  step train_throughput_small_leaves "$PY" -m experiments.benchmarks.train_throughput \
    --workdir="$workdir/train_throughput_small_leaves" --deep_width=16 --deep_depth=100 \
    --deep_batch=1 --deep_steps=1200
fi
step device "$PY" -m experiments.benchmarks._device_check \
  --device_dir="$workdir" ${flags[@]+"${flags[@]}"}
"$PY" -m experiments.benchmarks._device_report "$workdir"
echo "device_check: $workdir/results.md"
! cut -f2 "$workdir/steps.tsv" | grep -qv '^0$'
