#!/usr/bin/env bash
# Starts (up) or stops (down) every real component the tests use, on loopback.
# `up` prints `export ...` lines; eval them, or `source .env/env.sh`.
#
# Each component is scripts/components/<name>.sh with `up` and `down`; `up`
# prints its own export lines on stdout and keeps its state (pids, data, logs)
# under $INTERLOOK_STATE/<name>/.  Components: $INTERLOOK_COMPONENTS, default all.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
COMPONENTS="${INTERLOOK_COMPONENTS:-kube consul docker simulators node}"
mkdir -p "$INTERLOOK_STATE"

case "${1:-}" in
  up)
    : > "$INTERLOOK_STATE/env.sh.new"
    for c in $COMPONENTS; do
      script="$ROOT/scripts/components/$c.sh"
      [[ -f "$script" ]] || { echo "[env] no component script $script" >&2; continue; }
      if ! out="$(bash "$script" up)"; then
        echo "[env] component $c failed to start; see $INTERLOOK_STATE/$c/" >&2
        exit 1
      fi
      echo "$out" >> "$INTERLOOK_STATE/env.sh.new"
    done
    mv "$INTERLOOK_STATE/env.sh.new" "$INTERLOOK_STATE/env.sh"
    cat "$INTERLOOK_STATE/env.sh"
    ;;
  down)
    # Every component is stopped even if one fails; the exit status says whether one did
    # (node.sh fails when something of it is left on the machine).
    failed=()
    for c in $(echo "$COMPONENTS" | tr ' ' '\n' | tac); do
      script="$ROOT/scripts/components/$c.sh"
      [[ -f "$script" ]] || continue
      bash "$script" down || failed+=("$c")
    done
    rm -f "$INTERLOOK_STATE/env.sh"
    if (( ${#failed[@]} )); then echo "[env] stopping ${failed[*]} failed" >&2; exit 1; fi
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
