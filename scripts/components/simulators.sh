#!/usr/bin/env bash
# The F5 BIG-IP and Kemp LoadMaster simulators (tests/simulators/), over HTTPS
# with one CA that signed both certificates.  User admin, password admin.
#   up:   prints export INTERLOOK_F5_URL / INTERLOOK_KEMP_URL / INTERLOOK_SIM_CA
#   down: stops both
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${INTERLOOK_STATE:-$ROOT/.env}/simulators"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$STATE"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

running() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start_one() {
  local name="$1" module="$2"
  if running "$name"; then return 0; fi
  local port; port="$(free_port)"
  (cd "$ROOT" && exec "$PY" -m "$module" --host 127.0.0.1 --port "$port" --tls-dir "$STATE/tls" \
      --username admin --password admin) >"$STATE/$name.log" 2>&1 &
  echo $! > "$STATE/$name.pid"
  echo "$port" > "$STATE/$name.port"
  for _ in $(seq 1 100); do
    if "$PY" - "$port" <<'PYEOF' 2>/dev/null; then return 0; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PYEOF
    running "$name" || { echo "[simulators] $name exited; see $STATE/$name.log" >&2; tail -20 "$STATE/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "[simulators] $name did not listen on $port in time" >&2
  return 1
}

case "${1:-}" in
  up)
    start_one f5 tests.simulators.f5
    start_one kemp tests.simulators.kemp
    echo "export INTERLOOK_F5_URL=https://127.0.0.1:$(cat "$STATE/f5.port")"
    echo "export INTERLOOK_KEMP_URL=https://127.0.0.1:$(cat "$STATE/kemp.port")"
    echo "export INTERLOOK_SIM_CA=$STATE/tls/ca.pem"
    ;;
  down)
    for name in f5 kemp; do
      if running "$name"; then kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true; fi
      rm -f "$STATE/$name.pid"
    done
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
