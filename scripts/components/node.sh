#!/usr/bin/env bash
# A real single-node Kubernetes cluster, so the controller runs in-cluster
# from manifests/ the way users deploy it.
#
#   scripts/components/node.sh up      prints `export INTERLOOK_NODE_KUBECONFIG=...` (and the bridge address)
#   scripts/components/node.sh down    stops everything and undoes every change to the machine
#   scripts/components/node.sh check   exit 1, naming them, if leftovers of a node are on the machine
#
# It is a cluster of its own, beside scripts/components/kube.sh's (whose tests
# create stand-in Nodes by hand, which a node lifecycle controller would
# fight): etcd, a kube-apiserver with ServiceAccount admission and Node,RBAC
# authorization, kube-controller-manager (ServiceAccount tokens, Deployments,
# EndpointSlices...), kube-scheduler, containerd with its own root, state and
# socket, kubelet and kube-proxy (iptables mode).  All built from Go modules
# by scripts/build-binaries.sh except containerd/runc/CNI plugins (Debian).
#
# What this machine asks for (issue 12):
# - no image can be pulled: the pause image is a static C program and the
#   project's image is built from ./Dockerfile on a debootstrap base
#   (scripts/build-images.sh), then imported into our containerd;
# - oom_score_adj below 0 is refused: containerd's CRI has
#   restrict_oom_score_adj = true;
# - traffic only to loopback and our own bridges: Pods live on a bridge of
#   ours ($BRIDGE, $POD_CIDR), get no default route (only the Service range,
#   via the bridge), and FORWARD rules drop whatever would leave the bridge.
#   The API server listens and advertises on the bridge address; its
#   certificate carries that address and the `kubernetes` Service IP.
#
# `down` leaves the machine as `up` found it: Pods deleted through the
# kubelet (CNI teardown), then processes stopped, mounts, network namespaces,
# cgroups, iptables chains and rules, the bridge and the sysctls kubelet and
# the CNI plugins change, all restored; `check` proves it.
# State lives in $INTERLOOK_STATE/node/; logs to stderr, exports to stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export INTERLOOK_STATE="${INTERLOOK_STATE:-$ROOT/.env}"
STATE="$INTERLOOK_STATE/node"
PKI="$STATE/pki"
PY="${INTERLOOK_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

NODE_NAME="interlook-node"
BRIDGE="${INTERLOOK_NODE_BRIDGE:-ilnode0}"
POD_CIDR="${INTERLOOK_NODE_POD_CIDR:-10.232.0.0/24}"
HOST_IP="${INTERLOOK_NODE_HOST_IP:-10.232.0.1}"
SERVICE_CIDR="${INTERLOOK_NODE_SERVICE_CIDR:-10.233.0.0/24}"
KUBERNETES_SERVICE_IP="${INTERLOOK_NODE_KUBERNETES_IP:-10.233.0.1}"
CGROUP_ROOT="/interlook-node"
CNI_BIN="${INTERLOOK_CNI_BIN:-/usr/lib/cni}"
CNI_NET="interlook-node"
MARK="interlook-node"   # iptables comment on our own rules
IMAGE="${INTERLOOK_IMAGE:-interlook:latest}"
START_TIMEOUT="${NODE_START_TIMEOUT:-180}"
# What kubelet, kube-proxy and the bridge CNI plugin may change; saved by `up`, restored by `down`.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
         kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
         net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet
         net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
         net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
         net.netfilter.nf_conntrack_tcp_timeout_close_wait)
PROCESSES=(kube-proxy kubelet scheduler controller-manager containerd apiserver etcd)

log() { echo "[node] $*" >&2; }
die() { log "$*"; exit 1; }
alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
bin() { bash "$ROOT/scripts/build-binaries.sh" path "$1"; }
kubectl_() { "$(bin kubectl)" --kubeconfig "$STATE/kubeconfig" "$@"; }
ctr_() { ctr --address "$STATE/containerd.sock" --namespace k8s.io "$@"; }

# Every mounted cgroup hierarchy: v1 controllers (and the hybrid's unified one), or v2's single tree.
cgroup_hierarchies() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts; }

free_port() {
  "$PY" -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "$1"
}

check_requirements() {
  local missing=() tool
  [[ $(id -u) -eq 0 ]] || die "a node needs root (mounts, cgroups, iptables, a bridge)"
  for tool in containerd runc ctr iptables ip6tables iptables-save conntrack ip; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  for tool in bridge host-local loopback; do [[ -x "$CNI_BIN/$tool" ]] || missing+=("$CNI_BIN/$tool"); done
  (( ${#missing[@]} == 0 )) || die "missing: ${missing[*]} (make deps, or apt-get install containerd runc containernetworking-plugins conntrack iptables iproute2)"
  (( ${#STATE} <= 70 )) || die "INTERLOOK_STATE path too long for unix sockets ($STATE); use a shorter one"
}

# ---------------------------------------------------------------- certificates
sign() {  # sign NAME SUBJECT EXTENSIONS
  local name="$1" subject="$2" ext="$3"
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=digitalSignature,keyEncipherment" "$ext" > "$PKI/$name.ext"
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  chmod 600 "$PKI/$name.key"
}

make_pki() {
  local sans="IP:$HOST_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  if [[ -f "$PKI/sans" && "$(cat "$PKI/sans")" == "$sans" && -f "$PKI/sa.key" ]]; then return 0; fi
  rm -rf "$PKI"; mkdir -p "$PKI"
  log "creating a CA and the node's certificates in $PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=interlook-node-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  local client="extendedKeyUsage=clientAuth"
  sign apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=$sans"
  sign kubelet-serving "/CN=$NODE_NAME" "extendedKeyUsage=serverAuth
subjectAltName=IP:$HOST_IP,DNS:$NODE_NAME"
  sign admin "/O=system:masters/CN=interlook-node-admin" "$client"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  sign kube-proxy "/CN=system:kube-proxy" "$client"
  sign controller-manager "/CN=system:kube-controller-manager" "$client"
  sign scheduler "/CN=system:kube-scheduler" "$client"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
  echo "$sans" > "$PKI/sans"
}

kubeconfig() {  # kubeconfig FILE USER SERVER
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: interlook-node
  cluster: {server: "$3", certificate-authority: $PKI/ca.crt}
users:
- name: $2
  user: {client-certificate: $PKI/$2.crt, client-key: $PKI/$2.key}
contexts:
- name: interlook-node
  context: {cluster: interlook-node, user: $2}
current-context: interlook-node
EOF
}

# ---------------------------------------------------------------- machine state
save_machine_state() {
  # Only the first `up` after a clean `down` records what to restore.
  [[ -f "$STATE/sysctl.before" ]] && return 0
  local key value
  : > "$STATE/sysctl.before.tmp"
  for key in "${SYSCTLS[@]}"; do
    value="$(sysctl -n "$key" 2>/dev/null)" && printf '%s=%s\n' "$key" "$value" >> "$STATE/sysctl.before.tmp"
  done
  mv "$STATE/sysctl.before.tmp" "$STATE/sysctl.before"
  for cmd in iptables ip6tables; do
    "$cmd-save" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | sort -u > "$STATE/$cmd.chains.before"
  done
  ls /run/netns 2>/dev/null | sort > "$STATE/netns.before" || true
  for dir in /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni /opt/cni /run/containerd; do
    [[ -e "$dir" ]] && echo "$dir"
  done > "$STATE/paths.before"
}

restore_sysctls() {
  [[ -f "$STATE/sysctl.before" ]] || return 0
  local line
  while IFS= read -r line; do
    [[ "$(sysctl -n "${line%%=*}" 2>/dev/null)" == "${line#*=}" ]] || sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"
  done < "$STATE/sysctl.before"
}

setup_network() {
  if ip link show "$BRIDGE" >/dev/null 2>&1 && [[ ! -f "$STATE/bridge" ]]; then
    die "a bridge $BRIDGE exists and is not ours (another node running?); set INTERLOOK_NODE_BRIDGE"
  fi
  echo "$BRIDGE" > "$STATE/bridge"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$HOST_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pods talk to this machine only.  Whatever would be forwarded off the
  # bridge (if something turns ip_forward on) is dropped.
  local rule
  for rule in "-i $BRIDGE -o $BRIDGE -j ACCEPT" "-i $BRIDGE -j DROP" "-o $BRIDGE -j DROP"; do
    # shellcheck disable=SC2086
    iptables -C FORWARD $rule -m comment --comment "$MARK" 2>/dev/null ||
      iptables -A FORWARD $rule -m comment --comment "$MARK"
  done
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  # isGateway false: the bridge already has the host address, and the plugin
  # would otherwise turn on ip_forward.  No default route: only the Service range.
  cat > "$STATE/cni/net.d/10-interlook.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$HOST_IP"}]],
              "routes": [{"dst": "$SERVICE_CIDR", "gw": "$HOST_IP"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# ---------------------------------------------------------------- processes
start() {  # start NAME LOGFILE COMMAND...
  local name="$1"; shift
  setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! > "$STATE/$name.pid"
}

wait_for() {  # wait_for WHAT PROCESS COMMAND...
  local what="$1" process="$2"; shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$process" ]] && ! alive "$process"; then
      log "$process died while waiting for $what; last lines of $STATE/$process.log:"
      tail -n 25 "$STATE/$process.log" >&2
      return 1
    fi
    (( SECONDS < deadline )) || { log "timed out waiting for $what (see $STATE/*.log)"; return 1; }
    sleep 0.5
  done
}

api_ready() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$HOST_IP:$(cat "$STATE/port")/readyz" >/dev/null
}

start_control_plane() {
  local etcd_port peer_port api_port
  etcd_port="$(free_port 127.0.0.1)"; peer_port="$(free_port 127.0.0.1)"; api_port="$(free_port "$HOST_IP")"
  echo "$api_port" > "$STATE/port"
  local server="https://$HOST_IP:$api_port"
  rm -rf "$STATE/etcd-data"
  start etcd "$(bin etcd)" --name node --data-dir "$STATE/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "node=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  log "starting kube-apiserver on $server"
  start apiserver "$(bin kube-apiserver)" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$api_port" \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-node-port-range 30000-32767 \
    --allow-privileged=false \
    --profiling=false
  kubeconfig "$STATE/kubeconfig" admin "$server"
  local who
  for who in kubelet kube-proxy controller-manager scheduler; do kubeconfig "$STATE/$who.kubeconfig" "$who" "$server"; done
  wait_for "the API server's /readyz" apiserver api_ready || return 1
  log "starting kube-controller-manager and kube-scheduler"
  start controller-manager "$(bin kube-controller-manager)" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port 127.0.0.1)" \
    --cert-dir "$STATE/controller-manager-certs" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-name interlook-node --service-cluster-ip-range "$SERVICE_CIDR" \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --profiling=false
  start scheduler "$(bin kube-scheduler)" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port 127.0.0.1)" \
    --cert-dir "$STATE/scheduler-certs" --leader-elect=false --profiling=false
}

start_containerd() {
  mkdir -p "$STATE/containerd"
  local pause; pause="$(bash "$ROOT/scripts/build-images.sh" pause-name)"
  cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$STATE/containerd.sock"
[ttrpc]
  address = "$STATE/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # This machine refuses oom_score_adj below 0 (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  log "starting containerd (socket $STATE/containerd.sock)"
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for "containerd" containerd ctr_ version || return 1
}

load_images() {
  local pause; pause="$(bash "$ROOT/scripts/build-images.sh" pause)"
  ctr_ images import "$pause" >&2
  # The project's image, built on the engine of scripts/components/docker.sh.
  local exports
  exports="$(bash "$ROOT/scripts/components/docker.sh" up)" || { log "docker component failed; cannot build $IMAGE"; return 1; }
  eval "$exports"
  bash "$ROOT/scripts/build-images.sh" interlook >/dev/null || return 1
  log "loading $IMAGE into the node's containerd"
  docker save "$IMAGE" | ctr_ images import - >&2
}

start_kubelet() {
  mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
  local hierarchy
  # kubelet makes its cgroups under a root of ours, so `down` can find them all.
  for hierarchy in $(cgroup_hierarchies); do mkdir -p "$hierarchy$CGROUP_ROOT"; done
  local port; port="$(free_port "$HOST_IP")"
  cat > "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HOST_IP
port: $port
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$STATE/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
failSwapOn: false
resolvConf: ""
podLogsDir: $STATE/pod-logs
# Imported images can never be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
oomScoreAdj: 0
EOF
  log "starting kubelet (node $NODE_NAME, $HOST_IP)"
  start kubelet "$(bin kubelet)" --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$HOST_IP"
  cat > "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $HOST_IP
healthzBindAddress: 127.0.0.1:$(free_port 127.0.0.1)
metricsBindAddress: 127.0.0.1:$(free_port 127.0.0.1)
nodePortAddresses: ["$HOST_IP/32"]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
EOF
  log "starting kube-proxy (iptables mode)"
  start kube-proxy "$(bin kube-proxy)" --config "$STATE/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" kubelet node_ready || return 1
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

exports() {
  echo "export INTERLOOK_NODE_KUBECONFIG=$STATE/kubeconfig"
  echo "export INTERLOOK_NODE_HOST_IP=$HOST_IP"
  echo "export INTERLOOK_NODE_IMAGE=$IMAGE"
}

up() {
  check_requirements
  mkdir -p "$STATE"
  if [[ -f "$STATE/port" ]] && alive apiserver && alive kubelet && alive containerd && api_ready && node_ready; then
    log "already running; reloading $IMAGE"
    load_images || return 1
    exports; return 0
  fi
  down_processes
  bash "$ROOT/scripts/build-binaries.sh" etcd >&2
  bash "$ROOT/scripts/build-binaries.sh" kube-apiserver >&2
  bash "$ROOT/scripts/build-binaries.sh" kube-node >&2
  make_pki
  save_machine_state
  setup_network
  if ! { start_control_plane && start_containerd && load_images && start_kubelet; }; then
    log "the node failed to start; cleaning up"
    down >&2 || true
    return 1
  fi
  log "ready: $(kubectl_ get node "$NODE_NAME" --no-headers 2>/dev/null)"
  exports
}

# ---------------------------------------------------------------- down
stop_process() {
  local name="$1" pid
  if alive "$name"; then
    pid="$(cat "$STATE/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$name.pid"
}

delete_pods() {
  # Through the kubelet, so every Pod's network is torn down by its CNI plugin.
  alive kubelet && alive apiserver && [[ -f "$STATE/port" ]] && api_ready || return 0
  kubectl_ delete pods --all --all-namespaces --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 ||
    log "some Pods did not go away through the kubelet; removing their containers directly"
}

remove_containers() {
  alive containerd || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
}

kill_shims() {
  # Shims outlive containerd; ours are the ones that name our socket.
  local pid
  for pid in $(pgrep -f -- "-address $STATE/containerd.sock" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_all() {
  local mnt
  for mnt in $(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || log "could not unmount $mnt"
  done
  if [[ -f "$STATE/netns.before" ]]; then
    local ns
    for ns in $(comm -13 "$STATE/netns.before" <(ls /run/netns 2>/dev/null | sort)); do
      [[ "$ns" == cni-* ]] && ip netns delete "$ns" 2>/dev/null || true
    done
  fi
}

remove_cgroups() {
  local hierarchy dir
  for hierarchy in $(cgroup_hierarchies); do
    dir="$hierarchy$CGROUP_ROOT"
    [[ -d "$dir" ]] || continue
    # Deepest first; a cgroup with processes left cannot go (and says so in `check`).
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

remove_iptables() {
  local cmd table line chain
  for cmd in iptables ip6tables; do
    [[ -f "$STATE/$cmd.chains.before" ]] || continue
    for table in filter nat mangle raw; do
      # Rules that carry our mark, or jump to a KUBE-* chain that was not there before.
      "$cmd-save" -t "$table" 2>/dev/null | { grep '^-A' || true; } | while IFS= read -r line; do
        chain="$(sed -n 's/.* -j \(KUBE-[^ ]*\).*/\1/p' <<<"$line")"
        if [[ "$line" == *"--comment $MARK"* || "$line" == *"--comment \"$MARK\""* ]] ||
           { [[ -n "$chain" ]] && ! grep -qx "$chain" "$STATE/$cmd.chains.before"; }; then
          eval "$cmd -t $table ${line/#-A/-D}" 2>/dev/null || true
        fi
      done
      for chain in $("$cmd-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        grep -qx "$chain" "$STATE/$cmd.chains.before" && continue
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p'); do
        grep -qx "$chain" "$STATE/$cmd.chains.before" && continue
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

remove_paths() {
  [[ -f "$STATE/paths.before" ]] || return 0
  rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
  local dir
  for dir in /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni /opt/cni /run/containerd; do
    [[ -e "$dir" ]] && ! grep -qx "$dir" "$STATE/paths.before" && rm -rf "$dir"
  done
  return 0
}

down_processes() {
  [[ -d "$STATE" ]] || return 0
  # No controller may recreate what we delete; then the Pods, through the kubelet.
  stop_process controller-manager
  stop_process scheduler
  delete_pods
  stop_process kubelet
  stop_process kube-proxy
  remove_containers
  stop_process containerd
  kill_shims
  stop_process apiserver
  stop_process etcd
  unmount_all
  remove_cgroups
}

remove_bridge() {
  [[ -f "$STATE/bridge" ]] || return 0
  ip link delete "$(cat "$STATE/bridge")" 2>/dev/null || true
  ip link show "$(cat "$STATE/bridge")" >/dev/null 2>&1 || rm -f "$STATE/bridge"
}

down() {
  [[ -d "$STATE" ]] || return 0
  # Every step runs even if one before it failed: a half-started node must go too.
  local step
  for step in down_processes remove_iptables remove_bridge restore_sysctls remove_paths; do
    "$step" || log "$step did not finish"
  done
  local leftovers=0
  check || leftovers=1
  rm -rf "$STATE/etcd-data" "$STATE/port" "$STATE/containerd" "$STATE/kubelet" "$STATE/cni" "$STATE/pod-logs" 2>/dev/null || true
  # The record of what to restore goes only once everything was restored.
  (( leftovers )) || rm -f "$STATE/sysctl.before" "$STATE"/*.chains.before "$STATE/netns.before" "$STATE/paths.before"
  log "stopped"
  return $leftovers
}

check() {
  local problems=() name line
  for name in "${PROCESSES[@]}"; do alive "$name" && problems+=("process $name"); done
  pgrep -f -- "-address $STATE/containerd.sock" >/dev/null 2>&1 && problems+=("containerd shims")
  awk -v s="$STATE/" 'index($2, s) == 1' /proc/mounts | grep -q . && problems+=("mounts under $STATE")
  [[ -f "$STATE/bridge" ]] && ip link show "$(cat "$STATE/bridge")" >/dev/null 2>&1 && problems+=("bridge $(cat "$STATE/bridge")")
  for name in $(cgroup_hierarchies); do [[ -d "$name$CGROUP_ROOT" ]] && problems+=("cgroup $name$CGROUP_ROOT"); done
  iptables-save 2>/dev/null | grep -q -- "$MARK" && problems+=("iptables rules marked $MARK")
  if [[ -f "$STATE/sysctl.before" ]]; then
    while IFS= read -r line; do
      [[ "$(sysctl -n "${line%%=*}" 2>/dev/null)" == "${line#*=}" ]] || problems+=("sysctl ${line%%=*} != ${line#*=}")
    done < "$STATE/sysctl.before"
    local cmd
    for cmd in iptables ip6tables; do
      [[ -f "$STATE/$cmd.chains.before" ]] || continue
      "$cmd-save" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p' | sort -u |
        comm -13 "$STATE/$cmd.chains.before" - | grep -q . && problems+=("$cmd KUBE-* chains")
    done
  fi
  if (( ${#problems[@]} )); then
    log "leftovers on this machine: ${problems[*]}"
    return 1
  fi
  return 0
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) check ;;
  *) echo "usage: $0 up|down|check" >&2; exit 2 ;;
esac
