#!/usr/bin/env bash
# Installs what the integration tests need and is not a Python package:
# Debian packages (docker.io, busybox-static, dnsutils, and for the test node
# containerd, runc, the CNI plugins, conntrack, debootstrap) and the binaries
# built from Go modules (etcd, the Kubernetes binaries, consul).  Quick when
# all is there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
[[ -x /bin/busybox || -x /usr/bin/busybox ]] && dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v dig >/dev/null || need+=(dnsutils)
command -v ip >/dev/null || need+=(iproute2)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v conntrack >/dev/null || need+=(conntrack)
command -v iptables >/dev/null || need+=(iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
if (( ${#need[@]} )); then
  echo "[install-deps] apt-get install ${need[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
bash "$ROOT/scripts/build-binaries.sh" all
