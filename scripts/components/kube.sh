#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests and `make run`:
# etcd + kube-apiserver (built by scripts/build-binaries.sh), no scheduler and
# no controller-manager -- tests create Nodes, EndpointSlices and Pods by hand.
#
#   scripts/components/kube.sh up     # prints `export KUBECONFIG=...` on stdout
#   scripts/components/kube.sh down   # stops both, keeps the certificates
#
# What `up` sets up, the way envtest does it:
# - a self-signed CA, a serving certificate for 127.0.0.1/localhost and an
#   admin client certificate (O=system:masters) -> $STATE/kubeconfig;
# - RBAC authorization, so least-privilege roles can be tested for real;
# - a service-account issuer and signing keys, so TokenRequest works;
# - the CRDs of crds/, applied once /readyz answers.
# State (pids, logs, etcd data, certificates) lives in $INTERLOOK_STATE/kube/.
# Logs go to stderr; only export lines go to stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
STATE="$INTERLOOK_STATE/kube"
PKI="$STATE/pki"
PY="${INTERLOOK_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

log() { echo "[kube] $*" >&2; }

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

ready() {
  local port="$1"
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$port/readyz" >/dev/null 2>&1
}

make_pki() {
  [[ -f "$PKI/admin.crt" && -f "$PKI/sa.key" ]] && return 0
  mkdir -p "$PKI"
  log "creating a CA, serving, admin and service-account keys in $PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=interlook-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat > serving.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1
EOF
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout serving.key -out serving.csr 2>/dev/null
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out serving.crt 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=interlook-admin" \
      -keyout admin.key -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
    chmod 600 ./*.key
  )
}

write_kubeconfig() {
  local port="$1"
  cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: interlook-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $PKI/ca.crt
users:
- name: interlook-admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: interlook-local
  context: {cluster: interlook-local, user: interlook-admin}
current-context: interlook-local
EOF
}

up() {
  mkdir -p "$STATE"
  if alive "$STATE/apiserver.pid" && alive "$STATE/etcd.pid" && [[ -f "$STATE/port" ]] && ready "$(cat "$STATE/port")"; then
    log "already running on https://127.0.0.1:$(cat "$STATE/port")"
    echo "export KUBECONFIG=$STATE/kubeconfig"
    return 0
  fi
  down_quiet
  bash "$ROOT/scripts/build-binaries.sh" etcd >&2
  bash "$ROOT/scripts/build-binaries.sh" kube-apiserver >&2
  local etcd apiserver
  etcd="$(bash "$ROOT/scripts/build-binaries.sh" path etcd)"
  apiserver="$(bash "$ROOT/scripts/build-binaries.sh" path kube-apiserver)"
  make_pki

  local etcd_port peer_port api_port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  rm -rf "$STATE/etcd-data"
  log "starting etcd on 127.0.0.1:$etcd_port"
  # --unsafe-no-fsync: a throw-away test store; fsync only costs time here.
  setsid "$etcd" --name interlook --data-dir "$STATE/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "interlook=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn \
    >"$STATE/etcd.log" 2>&1 < /dev/null &
  echo $! > "$STATE/etcd.pid"

  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  # ServiceAccount admission is off as in envtest: no controller-manager
  # creates the `default` ServiceAccount that it would demand on every Pod.
  setsid "$apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$PKI/serving.crt" --tls-private-key-file "$PKI/serving.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 \
    --service-node-port-range 30000-32767 \
    --disable-admission-plugins ServiceAccount \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling=false \
    >"$STATE/apiserver.log" 2>&1 < /dev/null &
  echo $! > "$STATE/apiserver.pid"
  echo "$api_port" > "$STATE/port"
  write_kubeconfig "$api_port"

  local deadline=$((SECONDS + ${KUBE_START_TIMEOUT:-120}))
  until ready "$api_port"; do
    if ! alive "$STATE/apiserver.pid" || ! alive "$STATE/etcd.pid"; then
      log "the control plane died while starting; last lines of its logs:"
      tail -n 20 "$STATE/etcd.log" "$STATE/apiserver.log" >&2 || true
      down_quiet; return 1
    fi
    if (( SECONDS > deadline )); then
      log "kube-apiserver not ready in time; see $STATE/apiserver.log"
      down_quiet; return 1
    fi
    sleep 0.5
  done
  log "ready; applying $ROOT/crds"
  local kubectl
  kubectl="$(bash "$ROOT/scripts/build-binaries.sh" path kubectl)" || { log "no kubectl (make deps)"; down_quiet; return 1; }
  "$kubectl" --kubeconfig "$STATE/kubeconfig" apply -f "$ROOT/crds" >&2
  "$kubectl" --kubeconfig "$STATE/kubeconfig" wait --for=condition=Established --timeout=60s -f "$ROOT/crds" >&2
  echo "export KUBECONFIG=$STATE/kubeconfig"
}

stop_pid() {
  local file="$1"
  alive "$file" || { rm -f "$file"; return 0; }
  local pid; pid="$(cat "$file")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

down_quiet() {
  stop_pid "$STATE/apiserver.pid"
  stop_pid "$STATE/etcd.pid"
}

down() {
  down_quiet
  rm -rf "$STATE/etcd-data" "$STATE/port"
  log "stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
