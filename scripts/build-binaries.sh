#!/usr/bin/env bash
# Builds the real components the tests run against (etcd, kube-apiserver,
# Consul) from Go modules, because no release binary can be downloaded here.
# Binaries are cached by version under ~/.cache/interlook/bin/<name>-<version>;
# a binary already on PATH (or in KUBEBUILDER_ASSETS) is used instead.
#
#   scripts/build-binaries.sh [etcd|kube-apiserver|consul|all]
#
# Prints nothing but progress on stderr; `scripts/build-binaries.sh path NAME`
# prints the path of the binary to use.
set -euo pipefail

ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
# Consul 1.14 is released under the MPL-2.0 (releases after August 2023 are
# under the BSL and must not be used).  The 1.15/1.16 series import the
# envoyextensions/troubleshoot sub-modules, which the Go module proxy here
# refuses to serve, so the newest buildable MPL release is 1.14.11.
CONSUL_VERSION="${CONSUL_VERSION:-v1.14.11}"

CACHE="${INTERLOOK_CACHE:-$HOME/.cache/interlook}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0

log() { echo "[build-binaries] $*" >&2; }

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    kube-apiserver) echo "$KUBE_VERSION" ;;
    consul) echo "$CONSUL_VERSION" ;;
    *) echo "unknown component $1" >&2; exit 2 ;;
  esac
}

# The binary to use: PATH / KUBEBUILDER_ASSETS first, then our cache.
path_of() {
  local name="$1"
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
    echo "$KUBEBUILDER_ASSETS/$name"; return 0
  fi
  local cached="$BIN/$name-$(version_of "$name")"
  if [[ -x "$cached" ]]; then echo "$cached"; return 0; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  return 1
}

go_module_build() {
  # go_module_build NAME MODULE@VERSION PACKAGE [extra go.mod lines...]
  local name="$1" modver="$2" pkg="$3"; shift 3
  local version; version="$(version_of "$name")"
  local out="$BIN/$name-$version"
  if [[ -x "$out" ]]; then log "$name $version cached at $out"; return 0; fi
  command -v go >/dev/null || { log "go is not installed; cannot build $name"; exit 1; }
  local dir="$SRC/$name-$version"
  rm -rf "$dir"; mkdir -p "$dir" "$BIN"
  local start=$SECONDS
  (
    cd "$dir"
    go mod init "interlook.local/build/$name" >/dev/null 2>&1
    printf 'package main\n' > /dev/null
    for line in "$@"; do echo "$line" >> go.mod; done
    log "fetching $modver"
    go get "$modver" >&2
    log "building $pkg (this takes a while on a cold cache)"
    go build -trimpath -ldflags="-s -w ${GO_LDFLAGS:-}" -o "$out.tmp" "$pkg" >&2
  )
  mv "$out.tmp" "$out"
  log "$name $version built in $((SECONDS - start))s -> $out"
}

build_etcd() {
  go_module_build etcd "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go.etcd.io/etcd/server/v3
}

build_consul() {
  local v="$CONSUL_VERSION"
  # The consul module's own go.mod replaces its sub-modules with local paths,
  # which `go install pkg@version` refuses; a wrapper module pins the
  # versions that release was tagged with instead.
  go_module_build consul "github.com/hashicorp/consul@$v" github.com/hashicorp/consul \
    "require github.com/hashicorp/consul/api v1.18.1" \
    "require github.com/hashicorp/consul/proto-public v0.2.1" \
    "require github.com/hashicorp/consul/sdk v0.13.0" \
    "replace launchpad.net/gocheck => github.com/go-check/check v0.0.0-20140225173054-eb6ee6f84d0a"
}

build_kube_apiserver() {
  local v="$KUBE_VERSION" staging="v0${KUBE_VERSION#v1}"
  local out="$BIN/kube-apiserver-$v"
  if [[ -x "$out" ]]; then log "kube-apiserver $v cached at $out"; return 0; fi
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
  # them with ./staging paths; pin each to the published v0.X.Y instead.
  local gomod
  gomod="$(cd "$SRC" 2>/dev/null || mkdir -p "$SRC"; cd "$SRC" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local -a lines=()
  while read -r mod; do
    lines+=("replace $mod => $mod $staging")
  done < <(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u)
  # Stamp the version, or the server reports v0.0.0-master.
  local minor="${v#v1.}"; minor="${minor%%.*}"
  GO_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    go_module_build kube-apiserver "k8s.io/kubernetes@$v" k8s.io/kubernetes/cmd/kube-apiserver "${lines[@]}"
}

main() {
  local what="${1:-all}"
  case "$what" in
    path) path_of "$2" ;;
    etcd) path_of etcd >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_etcd ;;
    kube-apiserver) path_of kube-apiserver >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_kube_apiserver ;;
    consul) path_of consul >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_consul ;;
    all) main etcd; main kube-apiserver; main consul ;;
    *) echo "usage: $0 [etcd|kube-apiserver|consul|all|path NAME]" >&2; exit 2 ;;
  esac
}
main "$@"
