"""Fixtures for the tests against a real kube-apiserver.

``KUBECONFIG`` is used when exported (``make test`` exports it); otherwise the
session starts the local control plane with scripts/components/kube.sh and
stops it at the end.  A missing binary is a failure in CI and a loud skip
elsewhere (tests/helpers.py).

The controller runs as the real program (``kopf run --standalone -A
controller/main.py``) in a subprocess: that is what users run, it can be
killed with SIGKILL, and it can be given another identity (KUBECONFIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from tests.helpers import free_port, require_component, wait_for  # noqa: F401  (wait_for: the tests import it from here)
from tests.kubectl import apply_crds

ROOT = Path(__file__).resolve().parents[2]
KUBE_SH = ROOT / "scripts" / "components" / "kube.sh"
POOL = "198.51.100.0/24"


def _binaries_present() -> bool:
    script = ROOT / "scripts" / "build-binaries.sh"
    return all(subprocess.run(["bash", str(script), "path", name], capture_output=True).returncode == 0
               for name in ("etcd", "kube-apiserver"))


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KUBECONFIG", "")
    if existing and Path(existing).is_file():
        yield existing
        return
    require_component(_binaries_present(), "etcd and kube-apiserver binaries",
                      "run `make binaries` or `bash scripts/build-binaries.sh all`")
    state = tmp_path_factory.mktemp("kube-state")
    env = {**os.environ, "INTERLOOK_STATE": str(state)}
    proc = subprocess.run(["bash", str(KUBE_SH), "up"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        require_component(False, "local control plane", f"scripts/components/kube.sh up failed: {proc.stderr[-2000:]}")
    path = proc.stdout.strip().split("=", 1)[1]
    try:
        yield path
    finally:
        subprocess.run(["bash", str(KUBE_SH), "down"], capture_output=True, env=env)


@pytest.fixture(scope="session")
def admin(kubeconfig: str) -> Any:
    from kubernetes import config

    apply_crds(kubeconfig)
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture()
def core_api(admin: Any) -> Any:
    from kubernetes import client
    return client.CoreV1Api(admin)


@pytest.fixture()
def namespace(core_api: Any) -> Iterator[str]:
    # No controller-manager finalizes namespace deletion: names are unique instead.
    name = f"t-{uuid.uuid4().hex[:8]}"
    core_api.create_namespace({"metadata": {"name": name}})
    yield name
    release_test_allocations(core_api.api_client, name)


@pytest.fixture()
def other_namespace(core_api: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core_api.create_namespace({"metadata": {"name": name}})
    yield name
    release_test_allocations(core_api.api_client, name)


@pytest.fixture()
def make_namespace(core_api: Any) -> Iterator[Callable[..., str]]:
    """Namespaces with the labels a test gives (pools and name rules select on them)."""
    made: list[str] = []

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        core_api.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        made.append(name)
        return name

    yield make
    for name in made:
        release_test_allocations(core_api.api_client, name)


def release_test_allocations(api_client: Any, namespace: str) -> None:
    """Free the addresses this test's Services still hold (a test may end with its controller stopped).

    Only this test's namespace: every test runs its own Interlook instance, and
    no instance ever frees another's, so nothing else would.
    """
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    for item in custom.list_cluster_custom_object("interlook.io", "v1", "ipallocations")["items"]:
        if str(item["spec"].get("owner", "")).startswith(f"{namespace}/"):
            with contextlib.suppress(Exception):
                custom.delete_cluster_custom_object("interlook.io", "v1", "ipallocations", item["metadata"]["name"])


class Cluster:
    """Builders for what kubelets and the endpoint controller would create."""

    def __init__(self, api_client: Any):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def node(self, ip: str) -> str:
        name = f"node-{ip.replace('.', '-')}-{uuid.uuid4().hex[:4]}"
        self.core.create_node({"metadata": {"name": name}})
        self.core.patch_node_status(name, {"status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
        return name

    def service(self, namespace: str, name: str, *, annotations: dict[str, str] | None = None,
                labels: dict[str, str] | None = None, type: str = "NodePort",
                ports: list[dict[str, Any]] | None = None) -> Any:
        return self.core.create_namespaced_service(namespace, {
            "metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
            "spec": {"type": type, "selector": {"app": name},
                     "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}]},
        })

    def endpoints(self, namespace: str, service: str, nodes: list[str], *, ready: bool = True,
                  slice_name: str | None = None) -> None:
        """Set the EndpointSlice of a Service: one endpoint per entry of ``nodes``."""
        name = slice_name or f"{service}-slice"
        body = {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"], "conditions": {"ready": ready},
                           "nodeName": node, "targetRef": {"kind": "Pod", "name": f"{service}-{i}",
                                                           "namespace": namespace}}
                          for i, node in enumerate(nodes)],
        }
        try:
            self.discovery.replace_namespaced_endpoint_slice(name, namespace, {
                **body, "metadata": {**body["metadata"], "resourceVersion":
                                     self.discovery.read_namespaced_endpoint_slice(name, namespace)
                                     .metadata.resource_version}})
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(namespace, body)

    def annotations(self, namespace: str, name: str) -> dict[str, str]:
        return self.core.read_namespaced_service(name, namespace).metadata.annotations or {}

    def events(self, namespace: str, name: str) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [(e.type, e.reason, e.message) for e in items]

    def allocations(self) -> dict[str, str]:
        items = self.custom.list_cluster_custom_object("interlook.io", "v1", "ipallocations")["items"]
        return {i["spec"]["ip"]: i["spec"]["owner"] for i in items}

    def exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_service(name, namespace)
            return True
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 404:
                return False
            raise


@pytest.fixture()
def cluster(admin: Any) -> Cluster:
    return Cluster(admin)


class Controller:
    """The real program, `kopf run --standalone -A controller/main.py`, in a subprocess."""

    def __init__(self, workdir: Path, kubeconfig: str, namespaces: list[str], extra_core: dict[str, Any] | None = None):
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.config_path = workdir / "config.yml"
        config = {
            "core": {"logLevel": "DEBUG", "listenPort": self.port, "listenAddress": "127.0.0.1",
                     "workflowSteps": "provider.kubernetes,provisioner.ipalloc",
                     "workflowHousekeeperInterval": "1s", **(extra_core or {})},
            "provider": {"kubernetes": {"namespaces": namespaces}},
            "ipam": {"ipalloc": {"network_cidr": POOL}},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"controller-{self.runs}.log"

    def start(self) -> Controller:
        self.runs += 1
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "INTERLOOK_CONFIG": str(self.config_path),
               "PYTHONPATH": str(ROOT)}
        kopf = Path(sys.executable).parent / "kopf"
        self.proc = subprocess.Popen([str(kopf), "run", "--standalone", "--all-namespaces",
                                      str(ROOT / "controller" / "main.py")],
                                     cwd=ROOT, env=env, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)
        wait_for(self._healthy, f"the controller's /health (log: {self.log_path})", timeout=60)
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"controller exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200

    def entries(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/services", timeout=5).json())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture()
def make_controller(kubeconfig: str, admin: Any, tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    made: list[Controller] = []

    def make(namespaces: list[str], *, config: str | None = None, name: str = "c", **kw: Any) -> Controller:
        workdir = tmp_path / name
        workdir.mkdir()
        controller = Controller(workdir, config or kubeconfig, namespaces, **kw)
        made.append(controller)
        return controller

    yield make
    for controller in made:
        controller.stop()
