#!/usr/bin/env bash
# A Consul agent in dev mode on loopback, for provisioner.consul and its tests.
#
#   scripts/components/consul.sh up     start it (or reuse the running one), print exports
#   scripts/components/consul.sh down   stop it
#
# Every port (HTTP, DNS, server RPC, Serf LAN/WAN, gRPC) is a free one picked
# at start, so several agents (ours, the tests' own) can run side by side.
# State (config, pid, log, exports) lives under $INTERLOOK_STATE/consul/.
# stdout carries only the `export ...` lines; progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${INTERLOOK_STATE:-$ROOT/.env}/consul"
PIDFILE="$STATE/consul.pid"
ENVFILE="$STATE/env.sh"
LOGFILE="$STATE/consul.log"
# Dev agents elect themselves within a second or two; a cold start on a busy
# machine gets generous room before we call it a failure.
START_TIMEOUT="${CONSUL_START_TIMEOUT:-60}"

log() { echo "[consul] $*" >&2; }

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# N distinct ports free on 127.0.0.1 for TCP and UDP (DNS needs both).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
    except OSError:
        tcp.close(); udp.close(); continue
    held += [tcp, udp]; ports.append(port)
print(" ".join(map(str, ports)))
EOF
}

leader_elected() {
  local leader
  leader="$(curl -fsS --max-time 2 "http://127.0.0.1:$1/v1/status/leader" 2>/dev/null)" || return 1
  [[ -n "$leader" && "$leader" != '""' ]]
}

up() {
  if running && [[ -f "$ENVFILE" ]]; then
    log "already running (pid $(cat "$PIDFILE"))"
    cat "$ENVFILE"; return 0
  fi
  local bin
  if ! bin="$(bash "$ROOT/scripts/build-binaries.sh" path consul)"; then
    log "no consul binary: run 'bash scripts/build-binaries.sh consul' (or 'make deps')"
    return 1
  fi
  mkdir -p "$STATE"
  local http dns server serf_lan serf_wan grpc
  read -r http dns server serf_lan serf_wan grpc <<<"$(free_ports 6)"
  cat >"$STATE/ports.hcl" <<EOF
ports {
  http = $http
  dns = $dns
  server = $server
  serf_lan = $serf_lan
  serf_wan = $serf_wan
  grpc = $grpc
  grpc_tls = -1
}
EOF
  log "starting $bin (http $http, dns $dns)"
  # -dev keeps the catalog in memory: a restart starts from an empty catalog,
  # which the provisioner's retries and reconcile must cope with anyway.
  setsid "$bin" agent -dev -node interlook-dev -bind 127.0.0.1 -client 127.0.0.1 \
    -config-file "$STATE/ports.hcl" >"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local waited=0
  until leader_elected "$http"; do
    if ! running; then
      log "agent exited; last lines of $LOGFILE:"; tail -20 "$LOGFILE" >&2
      rm -f "$PIDFILE"; return 1
    fi
    if (( waited >= START_TIMEOUT * 5 )); then
      log "no leader after ${START_TIMEOUT}s; see $LOGFILE"; down; return 1
    fi
    sleep 0.2; waited=$((waited + 1))
  done
  printf 'export CONSUL_HTTP_ADDR=127.0.0.1:%s\nexport CONSUL_DNS_PORT=%s\n' "$http" "$dns" >"$ENVFILE"
  log "leader elected; logs in $LOGFILE"
  cat "$ENVFILE"
}

down() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$ENVFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
