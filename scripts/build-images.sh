#!/usr/bin/env bash
# Builds the container images the test node runs, since no registry can be
# reached here: the Pod sandbox's pause image (a static C program), a Debian
# bookworm base with python3 (debootstrap), and the project's own image from
# its Dockerfile, built on that base with `docker build`.
#
#   scripts/build-images.sh pause        -> prints the docker-archive path (cached)
#   scripts/build-images.sh base-rootfs  -> prints the rootfs tarball path (cached)
#   scripts/build-images.sh base         -> imports the base into $DOCKER_HOST's engine, prints its name
#   scripts/build-images.sh interlook    -> docker build of ./Dockerfile on that base, prints the image name
#
# Cached by version under ${INTERLOOK_CACHE:-~/.cache/interlook}/images/.
# Progress goes to stderr; stdout carries only the result.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${INTERLOOK_CACHE:-$HOME/.cache/interlook}"
IMAGES="$CACHE/images"
# Bump a revision when what goes into the image changes.
PAUSE_VERSION="r1"
BASE_SUITE="${INTERLOOK_BASE_SUITE:-bookworm}"   # bookworm's python3 is 3.11, like python:3.11-slim
BASE_VERSION="$BASE_SUITE-r1"
BASE_PACKAGES="python3,python3-venv"
BASE_IMAGE="interlook.local/debian-python:$BASE_VERSION"
PROJECT_IMAGE="${INTERLOOK_IMAGE:-interlook:latest}"
DEBIAN_MIRROR="${INTERLOOK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { echo "[build-images] $*" >&2; }
need() { command -v "$1" >/dev/null || { log "$1 is missing ($2)"; exit 1; }; }

pause_image() {
  local out="$IMAGES/pause-$PAUSE_VERSION.tar"
  if [[ ! -s "$out" ]]; then
    need gcc "apt-get install gcc libc6-dev"
    local work; work="$(mktemp -d)"
    mkdir -p "$IMAGES" "$work/rootfs"
    gcc -static -Os -s -o "$work/rootfs/pause" "$ROOT/scripts/images/pause.c"
    tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/layer.tar" pause
    python3 "$ROOT/scripts/images/docker_archive.py" "$work/layer.tar" "interlook.local/pause:$PAUSE_VERSION" "$out" \
      --entrypoint '["/pause"]'
    rm -rf "$work"
    log "pause image -> $out"
  fi
  echo "$out"
}

pause_name() { echo "interlook.local/pause:$PAUSE_VERSION"; }

base_rootfs() {
  local out="$IMAGES/debian-$BASE_VERSION.tar"
  if [[ ! -s "$out" ]]; then
    need debootstrap "apt-get install debootstrap"
    [[ $(id -u) -eq 0 ]] || { log "debootstrap needs root"; exit 1; }
    local work start=$SECONDS
    mkdir -p "$IMAGES"
    work="$(mktemp -d "$IMAGES/.rootfs.XXXXXX")"
    log "debootstrap --variant=minbase --include=$BASE_PACKAGES $BASE_SUITE (a few minutes, once)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" \
      >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; rm -rf "$work"; exit 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/dev/"*
    tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$out.tmp" .
    mv "$out.tmp" "$out"
    rm -rf "$work"
    log "base rootfs built in $((SECONDS - start))s -> $out"
  fi
  echo "$out"
}

require_docker() {
  need docker "apt-get install docker.io"
  [[ -n "${DOCKER_HOST:-}" ]] || { log "DOCKER_HOST is not set: start scripts/components/docker.sh first"; exit 1; }
  docker version >/dev/null 2>&1 || { log "no Docker engine answers at $DOCKER_HOST"; exit 1; }
}

base_image() {
  require_docker
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    local rootfs; rootfs="$(base_rootfs)"
    log "docker import $rootfs as $BASE_IMAGE"
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' "$rootfs" "$BASE_IMAGE" >/dev/null
  fi
  echo "$BASE_IMAGE"
}

# The project's dependencies and build backend as wheels, fetched by this
# machine's own pip (which trusts this machine's CAs; a container would not).
# The versions of constraints.txt, as the Dockerfile installs them.  Cached by
# the hash of pyproject.toml and constraints.txt.
wheelhouse() {
  local key dir
  key="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
  dir="$CACHE/wheels/$key"
  if [[ ! -f "$dir/.complete" ]]; then
    local py="$ROOT/.venv/bin/python"; [[ -x "$py" ]] || py=python3
    rm -rf "$dir"; mkdir -p "$dir"
    log "pip wheel of the project's dependencies -> $dir"
    "$py" - "$ROOT/pyproject.toml" > "$dir/requirements.txt" <<'PYEOF'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(data["project"]["dependencies"] + data["build-system"]["requires"]))
PYEOF
    "$py" -m pip wheel --quiet --wheel-dir "$dir" -c "$ROOT/constraints.txt" -r "$dir/requirements.txt" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

project_image() {
  require_docker
  local base wheels start=$SECONDS; base="$(base_image)"; wheels="$(wheelhouse)"
  local port; port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  local server=$!
  # shellcheck disable=SC2064
  trap "kill $server 2>/dev/null || true" EXIT
  log "docker build $ROOT on $base -> $PROJECT_IMAGE"
  # The legacy builder: this engine has no BuildKit client plugin.  Host
  # network, to reach the wheelhouse on loopback; no index is used.
  DOCKER_BUILDKIT=0 docker build --quiet --network host --build-arg "BASE_IMAGE=$base" \
    --build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" \
    -t "$PROJECT_IMAGE" "$ROOT" >&2
  kill "$server" 2>/dev/null || true
  log "built in $((SECONDS - start))s"
  echo "$PROJECT_IMAGE"
}

case "${1:-}" in
  pause) pause_image ;;
  pause-name) pause_name ;;
  base-rootfs) base_rootfs ;;
  base) base_image ;;
  interlook) project_image ;;
  *) echo "usage: $0 pause|pause-name|base-rootfs|base|interlook" >&2; exit 2 ;;
esac
