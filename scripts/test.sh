#!/usr/bin/env bash
# `make test`: start the real components, run the whole suite, stop them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
cleanup() { bash scripts/env.sh down >/dev/null 2>&1 || true; }
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
