#!/usr/bin/env bash
# `make test`: start the real components, run the whole suite, stop them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
# Stopping must leave the machine as it was (scripts/components/node.sh checks
# its mounts, bridge, iptables, cgroups, sysctls): when not, the run fails.
cleanup() {
  local rc=$?
  if ! bash scripts/env.sh down >"$INTERLOOK_STATE/env-down.log" 2>&1; then
    echo "make test: stopping the components failed or left something behind:" >&2
    tail -n 20 "$INTERLOOK_STATE/env-down.log" >&2
    (( rc != 0 )) || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
if ! exports="$(bash scripts/env.sh up)"; then
  echo "make test: a real component failed to start (see messages above)" >&2
  if [[ "${CI:-}" == "true" ]]; then exit 1; fi
  echo "make test: going on; tests that need it will be skipped LOUDLY" >&2
  exports=""
fi
eval "$exports"
set +e
.venv/bin/python -m pytest -ra "$@" tests
rc=$?
set -e
exit $rc
