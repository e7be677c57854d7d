#!/usr/bin/env bash
# Builds the real components the tests run against (etcd, the Kubernetes
# binaries, Consul) from Go modules, because no release binary can be
# downloaded here.  Binaries are cached by version under
# ${INTERLOOK_CACHE:-~/.cache/interlook}/bin/<name>-<version>; a binary already
# on PATH (or in KUBEBUILDER_ASSETS) is used instead.
#
#   scripts/build-binaries.sh [etcd|kube-apiserver|kube-node|consul|all]
#
# kube-node is what scripts/components/node.sh runs besides the API server:
# kubelet, kube-proxy, kube-controller-manager, kube-scheduler, and kubectl
# when none is on PATH.  Every missing Kubernetes binary is built by one
# `go build` of one wrapper module, so they share their compiled packages.
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
    kube-apiserver|kubelet|kube-proxy|kube-controller-manager|kube-scheduler|kubectl) echo "$KUBE_VERSION" ;;
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

# Node binaries; kubectl only when PATH has none (it usually has).
KUBE_NODE_BINARIES=(kubelet kube-proxy kube-controller-manager kube-scheduler)

kube_package() {
  case "$1" in
    kubectl) echo k8s.io/kubernetes/cmd/kubectl ;;
    *) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

# build_kube NAME... : every NAME not cached yet, in one `go build`.
build_kube() {
  local v="$KUBE_VERSION" staging="v0${KUBE_VERSION#v1}" name
  local -a missing=() packages=()
  for name in "$@"; do
    if [[ -x "$BIN/$name-$v" ]]; then log "$name $v cached at $BIN/$name-$v"; continue; fi
    missing+=("$name"); packages+=("$(kube_package "$name")")
  done
  (( ${#missing[@]} )) || return 0
  command -v go >/dev/null || { log "go is not installed; cannot build ${missing[*]}"; exit 1; }
  mkdir -p "$SRC" "$BIN"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
  # them with ./staging paths; a wrapper module pins each to the published
  # v0.X.Y instead.
  local gomod dir="$SRC/kubernetes-$v" start=$SECONDS
  gomod="$(cd "$SRC" && go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  rm -rf "$dir"; mkdir -p "$dir/out"
  (
    cd "$dir"
    go mod init interlook.local/build/kubernetes >/dev/null 2>&1
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u |
      while read -r mod; do echo "replace $mod => $mod $staging"; done >> go.mod
    log "fetching k8s.io/kubernetes@$v"
    go get "k8s.io/kubernetes@$v" >&2
    # Stamp the version, or the binaries report v0.0.0-master.
    local minor="${v#v1.}"; minor="${minor%%.*}"
    log "building ${missing[*]} (one go build; long on a cold cache)"
    go build -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      -o out/ "${packages[@]}" >&2
  )
  for name in "${missing[@]}"; do mv "$dir/out/$name" "$BIN/$name-$v"; done
  rm -rf "$dir/out"
  log "${missing[*]} $v built in $((SECONDS - start))s -> $BIN"
}

# What kube-node has to build: the node binaries not found, and kubectl when absent.
kube_node_missing() {
  local name
  for name in "${KUBE_NODE_BINARIES[@]}" kubectl; do
    path_of "$name" >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || echo "$name"
  done
}

main() {
  local what="${1:-all}"
  case "$what" in
    path) path_of "$2" ;;
    etcd) path_of etcd >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_etcd ;;
    kube-apiserver) path_of kube-apiserver >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_kube kube-apiserver ;;
    kube-node) mapfile -t names < <(kube_node_missing); (( ${#names[@]} == 0 )) || build_kube "${names[@]}" ;;
    consul) path_of consul >/dev/null 2>&1 && [[ -z "${FORCE_BUILD:-}" ]] || build_consul ;;
    all) main etcd; main kube-apiserver; main kube-node; main consul ;;
    *) echo "usage: $0 [etcd|kube-apiserver|kube-node|consul|all|path NAME]" >&2; exit 2 ;;
  esac
}
main "$@"
