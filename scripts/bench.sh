#!/usr/bin/env bash
# `make bench`: Interlook's benchmarks on private components (bench/run.py).
# Sizes: BENCH_SERVICES (1000), BENCH_RATE (50/s), BENCH_IDLE (10000),
# BENCH_STEADY_S (120), BENCH_NODES (3), BENCH_RESTART (1: restart on the idle Services),
# BENCH_RESTART_CHANGED (6).  A quick run:
#   BENCH_SERVICES=100 BENCH_IDLE=500 BENCH_STEADY_S=30 make bench
# The controller runs with the package set of the container image (.venv-runtime:
# `pip install -c constraints.txt -e .`, no test or bench packages, no official
# Kubernetes client); the driver with the suite's .venv.  BENCH_CONTROLLER_VENV=.venv
# measures the controller with the suite's packages instead.
# Results: bench/results/ (JSON + PNG); the last line printed is the headline JSON.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
for component in etcd kube-apiserver consul; do
  bash scripts/build-binaries.sh "$component" >&2
done
.venv/bin/python -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q -e '.[bench]' >&2
RUNTIME=.venv-runtime
stamp="$RUNTIME/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  rm -rf "$RUNTIME"
  "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv "$RUNTIME"
  "$RUNTIME/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e . >&2
  touch "$stamp"
fi
export BENCH_CONTROLLER_VENV="${BENCH_CONTROLLER_VENV:-$ROOT/$RUNTIME}"
exec .venv/bin/python -m bench.run "$@"
