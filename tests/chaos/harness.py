"""Real components the chaos tests and `make bench` drive, each one private and restartable.

The shared components of `make test` (scripts/components/) must not be
stopped, restarted or flooded by one test, so this module starts its own:

* :class:`ControlPlane` -- etcd + kube-apiserver from the same cached binaries
  and with the same flags as scripts/components/kube.sh, plus what a benchmark
  needs: an audit log (to count the controller's API requests), room for
  10,000 Services (a /16 service range, a wide nodePort range) and one client
  certificate per user, so the controller's requests are told apart from the
  driver's in the audit log.  The API server can be restarted on its port.
* :class:`ConsulServer` -- a single-node Consul *server* with a data
  directory (not ``-dev``), so a stop/start keeps the catalog as a real outage
  would.
* :class:`F5Process` -- the BIG-IP simulator (tests/simulators/f5.py) as a
  process, with its ``/__sim`` controls.
* :class:`Controller` -- ``kopf run --standalone -A controller/main.py`` (or
  one replica under ``--peering``) as a subprocess: start, SIGKILL, restart,
  CPU and memory from /proc.
* :class:`Kube` -- a small async REST client (httpx) for the driver: create,
  patch, delete, list and watch, no kubernetes-client overhead in the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import httpx

from extensions.kit.ownership import parse_text
from extensions.provisioners.consul.records import INSTANCE_KEY, MANAGED_KEY, OWNER_KEY
from tests.kubectl import apply_crds
from tests.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "interlook.io"
STATE_KEY = f"{PREFIX}/state"
ERROR_KEY = f"{PREFIX}/error"
PUBLIC_IP_KEY = f"{PREFIX}/public-ip"
FINALIZER = f"{PREFIX}/finalizer"
WORKFLOW = "provider.kubernetes,provisioner.ipalloc,provisioner.consul,provisioner.f5ltm"
CONTROLLER_USER = "interlook-controller"
DRIVER_USER = "interlook-driver"


def binary(name: str) -> str | None:
    """The path scripts/build-binaries.sh gives for a component, or None when it is not built."""
    out = subprocess.run(["bash", str(ROOT / "scripts/build-binaries.sh"), "path", name],
                         capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    return path if out.returncode == 0 and path and os.path.exists(path) else None


def _wait(predicate: Any, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def _stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ------------------------------------------------------------------ control plane

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["{DRIVER_USER}", "system:apiserver"]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version", "/openapi*"]
- level: Metadata
"""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on loopback, private to one test session or bench run."""

    state_dir: Path
    audit: bool = False
    users: tuple[str, ...] = ()   # more client users, e.g. one per replica, told apart in the audit log
    etcd_port: int = 0
    api_port: int = 0
    _etcd: subprocess.Popen[bytes] | None = None
    _apiserver: subprocess.Popen[bytes] | None = None

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def all_users(self) -> tuple[str, ...]:
        return ("admin", CONTROLLER_USER, DRIVER_USER, *self.users)

    def kubeconfig(self, user: str) -> Path:
        return self.state_dir / f"kubeconfig-{user}"

    def cert(self, user: str) -> tuple[str, str]:
        return str(self.pki / f"{user}.crt"), str(self.pki / f"{user}.key")

    @property
    def ca(self) -> str:
        return str(self.pki / "ca.crt")

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        etcd, apiserver = binary("etcd"), binary("kube-apiserver")
        if etcd is None or apiserver is None:
            raise FileNotFoundError("etcd / kube-apiserver not built (bash scripts/build-binaries.sh all)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        self.etcd_port, peer = free_port(), free_port()
        self.api_port = self.api_port or free_port()
        data = self.state_dir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        with (self.state_dir / "etcd.log").open("ab") as log:
            # --unsafe-no-fsync as in kube.sh: a throw-away store.
            self._etcd = subprocess.Popen(
                [etcd, "--name", "bench", "--data-dir", str(data),
                 "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
                 "--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", str(4 << 30)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        for user in self.all_users:
            self._write_kubeconfig(user)
        self.start_apiserver(binary_path=apiserver)
        apply_crds(self.kubeconfig("admin"))

    def start_apiserver(self, binary_path: str | None = None) -> None:
        apiserver = binary_path or binary("kube-apiserver")
        assert apiserver is not None
        args = [
            apiserver,
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.api_port),
            "--cert-dir", str(self.state_dir / "apiserver-certs"),
            "--tls-cert-file", str(self.pki / "serving.crt"), "--tls-private-key-file", str(self.pki / "serving.key"),
            "--client-ca-file", self.ca,
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(self.pki / "sa.pub"),
            "--service-account-signing-key-file", str(self.pki / "sa.key"),
            "--api-audiences", "https://kubernetes.default.svc.cluster.local",
            # Room for 10,000 Services: a /16 of ClusterIPs and a wide nodePort range.
            "--service-cluster-ip-range", "10.0.0.0/16",
            "--service-node-port-range", "10000-62000",
            "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]
        if self.audit:
            policy = self.state_dir / "audit-policy.yaml"
            policy.write_text(AUDIT_POLICY)
            args += ["--audit-policy-file", str(policy), "--audit-log-path", str(self.audit_log),
                     "--audit-log-format", "json", "--audit-log-maxsize", "0"]
        with (self.state_dir / "apiserver.log").open("ab") as log:
            self._apiserver = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(self._ready, float(os.environ.get("KUBE_START_TIMEOUT", "120")), "kube-apiserver")

    def stop_apiserver(self) -> None:
        _stop_process(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        self.stop_apiserver()
        time.sleep(down_for)
        self.start_apiserver()

    def stop(self) -> None:
        self.stop_apiserver()
        _stop_process(self._etcd)
        self._etcd = None

    def _ready(self) -> bool:
        if self._apiserver is not None and self._apiserver.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited; see {self.state_dir / 'apiserver.log'}")
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(*self.cert("admin"))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2, context=context) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    # -- certificates, as kube.sh makes them, plus one client certificate per user --------
    def _make_pki(self) -> None:
        pki = self.pki
        if all((pki / f"{user}.crt").exists() for user in self.all_users):
            return
        pki.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=interlook-bench-ca",
                "-keyout", "ca.key", "-out", "ca.crt")
        (pki / "serving.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,IP:10.0.0.1\n")
        (pki / "client.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver", "-keyout", "serving.key",
                "-out", "serving.csr")
        openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "3650", "-extfile", "serving.ext", "-out", "serving.crt")
        for user in self.all_users:
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=system:masters/CN={user}",
                    "-keyout", f"{user}.key", "-out", f"{user}.csr")
            openssl("x509", "-req", "-in", f"{user}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-days", "3650", "-extfile", "client.ext", "-out", f"{user}.crt")
        openssl("genrsa", "-out", "sa.key", "2048")
        openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_kubeconfig(self, user: str) -> None:
        crt, key = self.cert(user)
        self.kubeconfig(user).write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "bench", "cluster": {"server": self.url, "certificate-authority": self.ca}}],
            "users": [{"name": user, "user": {"client-certificate": crt, "client-key": key}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": user}}],
            "current-context": "bench",
        }))


# ------------------------------------------------------------------ Consul


@dataclass
class ConsulServer:
    """A one-node Consul server with a data directory: a stop/start keeps its catalog."""

    state_dir: Path
    dev: bool = False
    http_port: int = 0
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        consul = binary("consul")
        if consul is None:
            raise FileNotFoundError("consul not built (bash scripts/build-binaries.sh consul)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "ports.json"
        if not config.exists():
            self.http_port, dns, server, lan, wan, grpc = free_ports(6, udp=True)
            config.write_text(json.dumps({"ports": {"http": self.http_port, "dns": dns, "server": server,
                                                    "serf_lan": lan, "serf_wan": wan, "grpc": grpc,
                                                    "grpc_tls": -1}}))
        mode = ["-dev"] if self.dev else ["-server", "-bootstrap-expect", "1",
                                          "-data-dir", str(self.state_dir / "data"), "-ui=false"]
        with (self.state_dir / "consul.log").open("ab") as log:
            self._process = subprocess.Popen(
                [consul, "agent", *mode, "-node", "interlook-bench", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                 "-config-file", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(self._leader, 90, "consul leader")

    def stop(self) -> None:
        _stop_process(self._process)
        self._process = None

    def _leader(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"consul exited; see {self.state_dir / 'consul.log'}")
        try:
            with urllib.request.urlopen(f"{self.url}/v1/status/leader", timeout=2) as answer:
                return bool(json.loads(answer.read()))
        except (OSError, ValueError):
            return False

    def owned_nodes(self, instance: str | None = None) -> dict[str, list[str]]:
        """Interlook's records (of ``instance`` when given): owner entry -> node names."""
        with urllib.request.urlopen(f"{self.url}/v1/catalog/nodes?node-meta={MANAGED_KEY}:true",
                                    timeout=30) as answer:
            nodes = json.loads(answer.read())
        out: dict[str, list[str]] = {}
        for node in nodes:
            meta = node.get("Meta") or {}
            if instance is not None and meta.get(INSTANCE_KEY, "") != instance:
                continue
            out.setdefault(meta.get(OWNER_KEY, ""), []).append(node["Node"])
        return out


# ------------------------------------------------------------------ F5 simulator


@dataclass
class F5Process:
    """The BIG-IP simulator as a process (python -m tests.simulators.f5)."""

    state_dir: Path
    port: int = 0
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.state_dir / "tls" / "ca.pem")

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with (self.state_dir / "f5.log").open("ab") as log:
            self._process = subprocess.Popen(
                [str(ROOT / ".venv/bin/python"), "-m", "tests.simulators.f5", "--host", "127.0.0.1",
                 "--port", str(self.port), "--tls-dir", str(self.state_dir / "tls")],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def listening() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"F5 simulator exited; see {self.state_dir / 'f5.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return os.path.exists(self.ca)
            except OSError:
                return False

        _wait(listening, 30, "F5 simulator")

    def stop(self) -> None:
        _stop_process(self._process)
        self._process = None

    def _sim(self, what: str, body: dict[str, Any] | None = None) -> Any:
        with httpx.Client(verify=self.ca, timeout=60) as client:
            if body is None:
                answer = client.get(f"{self.url}/__sim/{what}")
            else:
                answer = client.post(f"{self.url}/__sim/{what}", json=body)
            answer.raise_for_status()
            return answer.json()

    def faults(self, **faults: Any) -> None:
        self._sim("faults", {"clear": True, **faults})

    def stats(self) -> dict[str, Any]:
        return dict(self._sim("stats"))

    def state(self) -> dict[str, Any]:
        """Everything the simulator holds (pools, members, virtual servers, nodes, policies)."""
        return dict(self._sim("state"))

    def owned_objects(self, instance: str | None = None) -> dict[str, list[str]]:
        """Interlook's virtual servers and pools (of ``instance`` when given): owner entry -> object paths."""
        state = self._sim("state")
        out: dict[str, list[str]] = {}
        for kind in ("virtuals", "pools"):
            for path, obj in (state.get(kind) or {}).items():
                mark = parse_text(obj.get("description"))
                if mark is None or (instance is not None and mark.instance != instance):
                    continue
                out.setdefault(mark.entry, []).append(path)
        return out


# ------------------------------------------------------------------ the controller


def write_config(path: Path, *, consul_url: str, f5: F5Process, namespaces: tuple[str, ...] = (),
                 listen_port: int = 0, pool: str = "10.200.0.0/16", log_level: str = "INFO",
                 extra_core: dict[str, str] | None = None, consul_reconcile: str = "60s",
                 max_addresses_per_namespace: int | None = None) -> Path:
    core = {
        "logLevel": log_level,
        "listenPort": str(listen_port),
        "listenAddress": "127.0.0.1",
        "workflowSteps": WORKFLOW,
        "workflowHousekeeperInterval": "1s",
        **(extra_core or {}),
    }
    config = {
        "core": core,
        "provider": {"kubernetes": {"namespaces": list(namespaces), "annotationPrefix": PREFIX}},
        "ipam": {"ipalloc": {"network_cidr": pool, **({} if max_addresses_per_namespace is None else
                                                        {"maxAddressesPerNamespace": max_addresses_per_namespace})}},
        "dns": {"consul": {"url": consul_url, "reconcileInterval": consul_reconcile}},
        "lb": {"f5ltm": {"httpEndpoint": f5.url, "username": "admin", "password": "admin", "caFile": f5.ca}},
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@dataclass
class Controller:
    """``kopf run --standalone -A controller/main.py`` (or one replica under peering) as a subprocess."""

    config: Path
    kubeconfig: Path
    log_file: Path
    listen_port: int
    peering: str = ""   # with a name: ``--peering=NAME --priority=N`` instead of ``--standalone``
    priority: int = 0
    # The virtualenv whose kopf runs it: the suite's, or one with the image's package set (the bench).
    venv: Path = ROOT / ".venv"
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)   # unexpected exit codes seen

    def start(self, wait: bool = True) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "INTERLOOK_CONFIG": str(self.config),
               "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            mode = [f"--peering={self.peering}", f"--priority={self.priority}"] if self.peering else ["--standalone"]
            self.process = subprocess.Popen(
                [str(self.venv / "bin/kopf"), "run", *mode, "-A", "controller/main.py"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.starts += 1
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            if not self.alive:
                raise RuntimeError(f"the controller exited ({self.returncode}); see {self.log_file}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.listen_port}/health", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        _wait(healthy, timeout, "controller /health")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs, as after an OOM kill or a node loss."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def stop(self) -> None:
        _stop_process(self.process, timeout=30)

    # -- /proc -----------------------------------------------------------------
    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB."""
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# ------------------------------------------------------------------ the driver's API client


def service_body(name: str, *, hosts: str | None, port: str | None = "http", tls: str | None = None,
                 ip: str | None = None, extra_annotations: dict[str, str] | None = None,
                 service_type: str = "NodePort") -> dict[str, Any]:
    annotations: dict[str, str] = {}
    for key, value in (("hosts", hosts), ("port", port), ("tls", tls), ("ip", ip)):
        if value is not None:
            annotations[f"{PREFIX}/{key}"] = value
    annotations.update(extra_annotations or {})
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": service_type, "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }


def endpoint_slice_body(service: str, nodes: list[str], per_node: int = 1) -> dict[str, Any]:
    endpoints = []
    for n, node in enumerate(nodes):
        for k in range(per_node):
            endpoints.append({"addresses": [f"172.16.{n}.{k + 10}"], "nodeName": node,
                              "conditions": {"ready": True}})
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-ep", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def node_body(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


class Kube:
    """The driver's async client: plain REST over one connection pool."""

    def __init__(self, plane: ControlPlane, user: str = DRIVER_USER, connections: int = 32):
        self.plane = plane
        context = ssl.create_default_context(cafile=plane.ca)
        context.load_cert_chain(*plane.cert(user))
        self.client = httpx.AsyncClient(
            base_url=plane.url, verify=context, timeout=httpx.Timeout(60, read=None),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    async def close(self) -> None:
        await self.client.aclose()

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      ok: tuple[int, ...] = (200, 201, 202), retry_for: float = 0.0) -> Any:
        """One call; with ``retry_for``, what a restarting API server answers is retried.

        That is connection errors, 5xx, and 429 "come back later" (e.g.
        ``storage is (re)initializing`` while a CRD's storage starts again
        after a restart), waiting its Retry-After, as the product's client
        does (extensions/kube_api.py).
        """
        deadline = time.monotonic() + retry_for
        while True:
            pause = 0.5
            try:
                answer = await self.client.request(
                    method, path, content=None if body is None else json.dumps(body),
                    headers={"Content-Type": content_type})
                if answer.status_code in ok:
                    return answer.json() if answer.content else None
                transient = answer.status_code >= 500 or answer.status_code == 429
                if not transient or time.monotonic() > deadline:
                    raise ApiError(answer.status_code, f"{method} {path}: {answer.status_code} {answer.text[:300]}")
                pause = _retry_after(answer)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)

    async def create(self, path: str, body: Any, *, retry_for: float = 0.0, exist_ok: bool = False) -> Any:
        ok = (200, 201, 202, 409) if exist_ok else (200, 201, 202)
        return await self.request("POST", path, body, ok=ok, retry_for=retry_for)

    async def patch(self, path: str, body: Any, *, retry_for: float = 0.0) -> Any:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json",
                                  retry_for=retry_for)

    async def delete(self, path: str, *, retry_for: float = 0.0) -> Any:
        return await self.request("DELETE", path, ok=(200, 202, 404), retry_for=retry_for)

    async def get(self, path: str, *, retry_for: float = 0.0) -> Any:
        return await self.request("GET", path, retry_for=retry_for)

    async def ensure_namespace(self, namespace: str) -> None:
        await self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}}, exist_ok=True, retry_for=30)

    async def ensure_nodes(self, count: int, prefix: str = "bench-node") -> list[str]:
        names = []
        for i in range(count):
            name = f"{prefix}-{i}"
            await self.create("/api/v1/nodes", node_body(name, f"192.168.77.{i + 1}"), exist_ok=True, retry_for=30)
            names.append(name)
        return names

    async def create_published(self, namespace: str, name: str, nodes: list[str], *, retry_for: float = 0.0,
                               **service: Any) -> dict[str, Any]:
        """An EndpointSlice with ready endpoints on ``nodes``, then the Service asking to be published."""
        await self.create(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                          endpoint_slice_body(name, nodes), retry_for=retry_for, exist_ok=bool(retry_for))
        body = service_body(name, **service)
        return dict(await self.create(f"/api/v1/namespaces/{namespace}/services", body, retry_for=retry_for,
                                      exist_ok=bool(retry_for)) or {})

    async def services(self, namespace: str, *, retry_for: float = 30) -> list[dict[str, Any]]:
        listing = await self.get(f"/api/v1/namespaces/{namespace}/services", retry_for=retry_for)
        return list(listing.get("items") or [])

    async def events(self, namespace: str, *, retry_for: float = 30) -> list[dict[str, Any]]:
        listing = await self.get(f"/api/v1/namespaces/{namespace}/events", retry_for=retry_for)
        return list(listing.get("items") or [])

    async def ip_allocations(self, *, retry_for: float = 30) -> list[dict[str, Any]]:
        listing = await self.get("/apis/interlook.io/v1/ipallocations", retry_for=retry_for)
        return list(listing.get("items") or [])

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[tuple[float, str, dict[str, Any]]]:
        """(arrival time, type, object) of every event after ``resource_version``; reconnects."""
        rv = resource_version
        while True:
            params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
            try:
                async with self.client.stream("GET", path, params=params) as answer:
                    async for line in answer.aiter_lines():
                        if not line:
                            continue
                        now = time.monotonic()
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if event.get("type") == "ERROR":
                            raise ApiError(int(obj.get("code") or 0), str(obj.get("message")))
                        if event.get("type") != "BOOKMARK":
                            yield now, str(event.get("type")), obj
            except (httpx.TransportError, ApiError):
                await asyncio.sleep(0.5)


def _retry_after(answer: httpx.Response) -> float:
    """The server's Retry-After in seconds (as extensions/kube_api.py reads it), else half a second."""
    try:
        return min(max(float(answer.headers.get("Retry-After", "0.5")), 0.1), 10.0)
    except ValueError:
        return 0.5


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


# ------------------------------------------------------------------ the audit log


@dataclass(frozen=True)
class Request:
    time: float      # epoch seconds, when the API server received it
    user: str
    verb: str
    resource: str
    subresource: str
    name: str = ""


def read_audit(path: Path) -> list[Request]:
    """One Request per audit ID (a watch logs two stages)."""
    seen: set[str] = set()
    out: list[Request] = []
    if not path.exists():
        return out
    from datetime import datetime

    with path.open() as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            audit_id = event.get("auditID", "")
            if audit_id in seen:
                continue
            seen.add(audit_id)
            ref = event.get("objectRef") or {}
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            out.append(Request(stamp, (event.get("user") or {}).get("username", ""), event.get("verb", ""),
                               ref.get("resource", ""), ref.get("subresource", ""), ref.get("name", "")))
    return out


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def classify(requests: list[Request], start: float, end: float, user: str = CONTROLLER_USER) -> dict[str, Any]:
    """Counts of one user's requests received in [start, end): reads, writes, lists, watches, by resource."""
    counts = {"reads": 0, "writes": 0, "lists": 0, "watches": 0, "total": 0}
    by: dict[str, int] = {}
    for r in requests:
        if r.user != user or not start <= r.time < end:
            continue
        counts["total"] += 1
        if r.verb in WRITE_VERBS:
            counts["writes"] += 1
        elif r.verb == "list":
            counts["lists"] += 1
        elif r.verb == "watch":
            counts["watches"] += 1
        else:
            counts["reads"] += 1
        key = f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
        by[key] = by.get(key, 0) + 1
    return {**counts, "by_verb_resource": dict(sorted(by.items(), key=lambda kv: -kv[1]))}
