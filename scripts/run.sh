#!/usr/bin/env bash
# `make run`: run the controller against a cluster.
#
# A reachable cluster (KUBECONFIG, ~/.kube/config or in-cluster) is used as it
# is; otherwise the local control plane of scripts/components/kube.sh is
# started (etcd + kube-apiserver on loopback).  crds/ are applied, then kopf
# runs controller/main.py with INTERLOOK_CONFIG (default config.yml).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export INTERLOOK_CONFIG="${INTERLOOK_CONFIG:-config.yml}"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"

reachable() {
  "$PY" - <<'PYEOF' >/dev/null 2>&1
from kubernetes import client, config
try:
    config.load_incluster_config()
except config.ConfigException:
    config.load_kube_config()
client.VersionApi().get_code(_request_timeout=5)
PYEOF
}

if reachable; then
  echo "[run] using the cluster of ${KUBECONFIG:-~/.kube/config or in-cluster}" >&2
else
  echo "[run] no cluster reachable: starting the local control plane (scripts/components/kube.sh)" >&2
  eval "$(bash scripts/components/kube.sh up)"
  echo "[run] stop it later with: bash scripts/components/kube.sh down" >&2
fi
"$PY" -m extensions.providers.kubernetes.apply crds

cat >&2 <<MSG

[run] Interlook is starting (config: $INTERLOOK_CONFIG).  In another shell:
    export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
    .venv/bin/python -m extensions.providers.kubernetes.apply examples/service.yaml
    curl -s localhost:8080/services          # the workflow entries
  then read the Service's interlook.io/* annotations and Events, e.g.
    .venv/bin/python -c "from kubernetes import client, config; config.load_kube_config(); \\
      print(client.CoreV1Api().read_namespaced_service('hello', 'default').metadata.annotations)"

MSG
exec "$ROOT/.venv/bin/kopf" run --standalone --all-namespaces controller/main.py
