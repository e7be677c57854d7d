#!/usr/bin/env bash
# `make run`: run the controller against a cluster.
#
# A reachable cluster (KUBECONFIG or ~/.kube/config) is used as it is;
# otherwise the local control plane of scripts/components/kube.sh is started
# (etcd + kube-apiserver on loopback).  crds/ are applied with kubectl, then
# kopf runs controller/main.py with INTERLOOK_CONFIG (default config.yml).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export INTERLOOK_CONFIG="${INTERLOOK_CONFIG:-config.yml}"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
KUBECTL="$(bash scripts/build-binaries.sh path kubectl)" || {
  echo "[run] no kubectl: make deps (builds it when it is not on PATH)" >&2; exit 1; }

if "$KUBECTL" get --raw /readyz --request-timeout=5s >/dev/null 2>&1; then
  echo "[run] using the cluster of ${KUBECONFIG:-~/.kube/config}" >&2
else
  echo "[run] no cluster reachable: starting the local control plane (scripts/components/kube.sh)" >&2
  eval "$(bash scripts/components/kube.sh up)"
  echo "[run] stop it later with: bash scripts/components/kube.sh down" >&2
fi
"$KUBECTL" apply -f crds/ >&2
"$KUBECTL" wait --for=condition=Established --timeout=60s -f crds/ >&2
# A CRD that is Established may still answer 429 "storage is (re)initializing" for a
# moment; kopf would log that as an ERROR (and retry).  Wait until each one lists.
for crd in crds/*.yaml; do
  plural="$("$KUBECTL" get -f "$crd" -o jsonpath='{.spec.names.plural}.{.spec.group}')"
  for _ in $(seq 1 60); do
    "$KUBECTL" get "$plural" -A --request-timeout=5s >/dev/null 2>&1 && break
    sleep 0.5
  done
done

cat >&2 <<MSG

[run] Interlook is starting (config: $INTERLOOK_CONFIG).  In another shell:
    export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
    kubectl apply -f examples/service.yaml
    kubectl patch node example-node-1 --subresource=status --type=merge \\
      -p '{"status":{"addresses":[{"type":"InternalIP","address":"192.168.10.11"}]}}'
    kubectl describe service hello           # interlook.io/* annotations and Events
    kubectl get service hello                # EXTERNAL-IP: the public IP from the pool
    kubectl get ipallocations
    curl -s localhost:8080/services          # the workflow entries

MSG
exec "$ROOT/.venv/bin/kopf" run --standalone --all-namespaces controller/main.py
