#!/usr/bin/env bash
# A private Docker Engine in Swarm mode, for provider.swarm and its tests.
#
#   scripts/components/docker.sh up        start it (or reuse the running one), print exports
#   scripts/components/docker.sh down      leave the swarm, stop it
#   scripts/components/docker.sh restart   stop and start dockerd, keeping the swarm (tests use it)
#   scripts/components/docker.sh status    exit 0 when it is running
#
# Our dockerd never touches a system Docker: its own --data-root, --exec-root
# (with its own managed containerd), unix socket, pidfile and containerd
# namespace, all under $INTERLOOK_STATE/docker/; no iptables rules, no docker0
# bridge, and the swarm's gateway bridge gets a host-side name of its own.
# The swarm listens on a free loopback port.  No registry is reachable here, so
# the test image is made with `docker import` from a rootfs holding Debian's
# static busybox.
# stdout carries only the `export ...` lines; progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
STATE="$INTERLOOK_STATE/docker"
PIDFILE="$STATE/docker.pid"
ENVFILE="$STATE/env.sh"
LOGFILE="$STATE/dockerd.log"
SOCKET="$STATE/docker.sock"
IMAGE="${INTERLOOK_TEST_IMAGE_NAME:-interlook-test/busybox:latest}"
# The host-side name and subnet of the swarm's docker_gwbridge network; the
# defaults (docker_gwbridge, 172.17.0.0/16 or so) would clash with a system Docker.
GW_BRIDGE="${INTERLOOK_DOCKER_GW_BRIDGE:-ilgw0}"
GW_SUBNET="${INTERLOOK_DOCKER_GW_SUBNET:-10.231.0.0/24}"
# A cold dockerd (first start creates its data-root) takes a few seconds.
START_TIMEOUT="${DOCKER_START_TIMEOUT:-60}"

log() { echo "[docker] $*" >&2; }

export DOCKER_HOST="unix://$SOCKET"
# Never let a user's docker CLI config (contexts, credential helpers) interfere.
export DOCKER_CONFIG="$STATE/cli"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

responding() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

check_requirements() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker >/dev/null || missing+=("docker (CLI)")
  busybox_path >/dev/null || missing+=(busybox-static)
  if (( ${#missing[@]} )); then
    log "missing: ${missing[*]} (apt-get install -y docker.io busybox-static, or 'make deps')"
    return 1
  fi
  # unix sockets are limited to 108 bytes; containerd's sits deeper than ours.
  if (( ${#STATE} > 60 )); then
    log "INTERLOOK_STATE path too long for unix sockets ($STATE); use a shorter one"
    return 1
  fi
}

busybox_path() {
  local candidate
  for candidate in /bin/busybox /usr/bin/busybox; do
    # Only a static busybox runs in a rootfs without libc.
    if [[ -x "$candidate" ]] && ! ldd "$candidate" >/dev/null 2>&1; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

start_dockerd() {
  mkdir -p "$STATE" "$DOCKER_CONFIG"
  log "starting dockerd (socket $SOCKET)"
  setsid dockerd \
    --data-root "$STATE/data" \
    --exec-root "$STATE/exec" \
    --pidfile "$PIDFILE" \
    --host "unix://$SOCKET" \
    --containerd-namespace interlook-test \
    --containerd-plugins-namespace interlook-test-plugins \
    --iptables=false --ip6tables=false --ip-masq=false \
    --bridge=none \
    --userland-proxy=false \
    --shutdown-timeout 2 \
    >>"$LOGFILE" 2>&1 </dev/null &
  local launcher=$! waited=0
  until responding; do
    if ! kill -0 "$launcher" 2>/dev/null; then
      log "dockerd exited; last lines of $LOGFILE:"; tail -20 "$LOGFILE" >&2
      return 1
    fi
    if (( waited >= START_TIMEOUT * 5 )); then
      log "dockerd not answering after ${START_TIMEOUT}s; see $LOGFILE"; stop_dockerd; return 1
    fi
    sleep 0.2; waited=$((waited + 1))
  done
  # dockerd writes its own pidfile; make sure it is there for `running`.
  [[ -f "$PIDFILE" ]] || echo "$launcher" >"$PIDFILE"
}

stop_dockerd() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    log "stopping dockerd pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd did not stop in 30s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$PIDFILE"
  # A killed dockerd leaves its overlay mounts behind; they would block the next start.
  if [[ -d "$STATE" ]]; then
    local mnt
    for mnt in $( (grep -o " $STATE/[^ ]*" /proc/mounts 2>/dev/null || true) | sort -r); do
      umount -l "$mnt" 2>/dev/null || true
    done
  fi
}

init_swarm() {
  local state
  state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)"
  if [[ "$state" == "active" ]]; then
    log "swarm already active"
    wait_for_leader
    return 0
  fi
  # The gateway bridge must exist before `swarm init` to get our own host-side name.
  if ! docker network inspect docker_gwbridge >/dev/null 2>&1; then
    docker network create --driver bridge --subnet "$GW_SUBNET" \
      --opt com.docker.network.bridge.name="$GW_BRIDGE" \
      --opt com.docker.network.bridge.enable_icc=false \
      --opt com.docker.network.bridge.enable_ip_masquerade=false \
      docker_gwbridge >/dev/null
  fi
  local port; port="$(free_port)"
  log "docker swarm init on 127.0.0.1:$port"
  docker swarm init --advertise-addr "127.0.0.1:$port" --listen-addr "127.0.0.1:$port" >/dev/null
  wait_for_leader
}

wait_for_leader() {
  local waited=0
  until docker node ls >/dev/null 2>&1; do
    if (( waited >= START_TIMEOUT * 5 )); then
      log "swarm has no leader after ${START_TIMEOUT}s; see $LOGFILE"; return 1
    fi
    sleep 0.2; waited=$((waited + 1))
  done
}

build_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE already there"
    return 0
  fi
  local rootfs="$STATE/rootfs" busybox
  busybox="$(busybox_path)"
  rm -rf "$rootfs"
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/www" "$rootfs/etc"
  cp "$busybox" "$rootfs/bin/busybox"
  for applet in sh httpd sleep echo cat ls wget nc; do
    ln -sf busybox "$rootfs/bin/$applet"
  done
  echo "interlook test image" >"$rootfs/www/index.html"
  echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
  log "importing $IMAGE from a static busybox rootfs"
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]' \
    --change 'ENV PATH=/bin' - "$IMAGE" >/dev/null
}

write_env() {
  printf 'export DOCKER_HOST=unix://%s\nexport INTERLOOK_TEST_IMAGE=%s\n' "$SOCKET" "$IMAGE" >"$ENVFILE"
}

up() {
  check_requirements
  mkdir -p "$STATE"
  if running && responding; then
    log "already running (pid $(cat "$PIDFILE"))"
  else
    stop_dockerd  # a stale pidfile or a wedged daemon
    release_dead_netns
    start_dockerd
  fi
  init_swarm
  build_image
  write_env
  log "ready; logs in $LOGFILE"
  cat "$ENVFILE"
}

# Network namespaces a dockerd left mounted under its exec root when it died
# (killed, or a session ended).  Their overlay vxlan devices stay in the
# kernel, and the next Swarm's ingress network then fails every task with
# "error creating vxlan interface: file exists".  Only namespaces of daemons
# that are no longer running are released: a live dockerd's are its own.
release_dead_netns() {
  local mount dir pidfile link
  { grep -oE ' [^ ]*/exec/netns/[^ ]+ nsfs ' /proc/mounts || true; } | awk '{print $1}' | while read -r mount; do
    dir="${mount%/exec/netns/*}"
    pidfile="$dir/docker.pid"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      continue
    fi
    for link in $(nsenter --net="$mount" ip -o link show type vxlan 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      nsenter --net="$mount" ip link del "$link" >/dev/null 2>&1 || true
    done
    umount "$mount" >/dev/null 2>&1 || umount -l "$mount" >/dev/null 2>&1 || true
    log "released the network namespace $mount of a dockerd that is gone"
  done
}

down() {
  if running && responding; then
    docker swarm leave --force >/dev/null 2>&1 || true
    docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  stop_dockerd
  release_dead_netns
  ip link del "$GW_BRIDGE" >/dev/null 2>&1 || true
  rm -f "$ENVFILE"
}

restart() {
  check_requirements
  stop_dockerd
  start_dockerd
  wait_for_leader
  write_env
  cat "$ENVFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) restart ;;
  status) running && responding ;;
  *) echo "usage: $0 up|down|restart|status" >&2; exit 2 ;;
esac
