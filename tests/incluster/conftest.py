"""The controller deployed the way users deploy it, on the real node of scripts/components/node.sh.

``make test`` exports ``INTERLOOK_NODE_KUBECONFIG`` and ``INTERLOOK_NODE_HOST_IP``
(the node's bridge address, where Pods reach this machine).  Everything goes
through ``kubectl``, as a person would: ``kubectl apply -f crds/``, then ``-f manifests/``,
then a ConfigMap for the test whose workflow ends in a Consul agent listening
on the bridge address, so the Pods publish somewhere this test can read.
A missing node fails in CI and skips loudly elsewhere (tests/helpers.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from tests import helpers
from tests.consul.agent import ConsulAgent, consul_binary
from tests.helpers import require_component
from tests.kubectl import kubectl_binary

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "interlook-system"
DEPLOYMENT = "interlook"
POOL = "198.51.100.0/24"
SWEEP_S = 1
HOW = "make env-up (scripts/components/node.sh up) and export its lines"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0, every: float = 0.5) -> Any:
    """tests/helpers.wait_for with a real node's pace: Pods start and replicas take over in tens of seconds."""
    return helpers.wait_for(check, what, timeout, every)


class Kubectl:
    """``kubectl --kubeconfig <the node's cluster>``, the way a person types it."""

    def __init__(self, kubeconfig: str):
        binary = kubectl_binary()
        require_component(binary is not None, "kubectl", "bash scripts/build-binaries.sh kube-node")
        assert binary is not None
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run([self.binary, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, document: dict[str, Any] | list[dict[str, Any]]) -> None:
        docs = document if isinstance(document, list) else [document]
        self("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def pods(self) -> list[dict[str, Any]]:
        """The controller's Pods that are not being deleted."""
        items = self.json("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=interlook")["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def exec_python(self, pod: str, script: str, *args: str) -> str:
        """Run ``script`` with the image's python3 inside the controller container of ``pod``."""
        return self("-n", NAMESPACE, "exec", "-i", pod, "-c", "interlook", "--", "python3", "-", *args, input=script)

    def logs(self, pod: str) -> str:
        return self("-n", NAMESPACE, "logs", pod, "-c", "interlook", check=False)


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    kubeconfig = os.environ.get("INTERLOOK_NODE_KUBECONFIG", "")
    require_component(bool(kubeconfig) and Path(kubeconfig).is_file(), "the test node (INTERLOOK_NODE_KUBECONFIG)", HOW)
    return Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def host_ip() -> str:
    address = os.environ.get("INTERLOOK_NODE_HOST_IP", "")
    require_component(bool(address), "the test node's bridge address (INTERLOOK_NODE_HOST_IP)", HOW)
    return address


@pytest.fixture(scope="session")
def consul(host_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """A Consul agent on the bridge address: the backend the Pods publish to."""
    binary = consul_binary()
    require_component(binary is not None, "consul binary", "bash scripts/build-binaries.sh consul")
    assert binary is not None
    agent = ConsulAgent(binary, tmp_path_factory.mktemp("incluster-consul"), address=host_ip, name="incluster")
    agent.start()
    try:
        yield agent
    finally:
        agent.cleanup()


def config_map_for(consul: ConsulAgent) -> dict[str, Any]:
    config = {
        "core": {"logLevel": "INFO", "listenPort": 8080,
                 "workflowSteps": "provider.kubernetes,provisioner.ipalloc,provisioner.consul",
                 "workflowHousekeeperInterval": "1s"},
        "provider": {"kubernetes": {"annotationPrefix": "interlook.io"}},
        # Orphan sweeps every second: a standby that is not inert would remove the
        # active replica's records within the takeover test (DESIGN.md: it must not).
        "ipam": {"ipalloc": {"network_cidr": POOL, "reconcileInterval": f"{SWEEP_S}s"}},
        "dns": {"consul": {"url": consul.url, "reconcileInterval": f"{SWEEP_S}s"}},
    }
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "interlook-config", "namespace": NAMESPACE},
            "data": {"config.yml": yaml.safe_dump(config)}}


@pytest.fixture(scope="session")
def deployed(kubectl: Kubectl, consul: ConsulAgent) -> Iterator[Kubectl]:
    """crds/ and manifests/ applied with kubectl, the test ConfigMap in place, both replicas Ready."""
    # As the README says: the CRDs first, established, then what uses them.
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    kubectl("apply", "-f", str(ROOT / "manifests"))
    kubectl.apply(config_map_for(consul))
    # The Pods may have started on the manifests' ConfigMap: start them again on the test's.
    kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{DEPLOYMENT}")
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=300s")
    wait_for(lambda: len([p for p in kubectl.pods() if ready(p)]) == 2, "two Ready replicas")
    try:
        yield kubectl
    finally:
        # What the replicas said, for a failing test's report (pytest shows it only then).
        print(kubectl("-n", NAMESPACE, "logs", "-l", "app.kubernetes.io/name=interlook", "--prefix",
                      "--tail=300", "--timestamps", check=False))
        kubectl("delete", "--ignore-not-found", "--wait=true", "--timeout=120s",
                "-f", str(ROOT / "manifests"), check=False)


@pytest.fixture()
def namespace(deployed: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    deployed("create", "namespace", name)
    yield name
    # Services carry our finalizer: the controller must still run for them to go.
    deployed("delete", "namespace", name, "--wait=false", check=False)


def backend(kubectl: Kubectl, namespace: str, name: str) -> None:
    """A Pod that a Service can select: the node's pause image, Ready as soon as it runs.

    No other image is on the node, and a pause container is enough for the
    EndpointSlice controller to publish a ready endpoint on the node.
    """
    pause = subprocess.run(["bash", str(ROOT / "scripts/build-images.sh"), "pause-name"],
                           capture_output=True, text=True, check=True).stdout.strip()
    kubectl.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "pause", "image": pause, "imagePullPolicy": "Never",
                                 "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                                     "runAsUser": 65534, "capabilities": {"drop": ["ALL"]},
                                                     "seccompProfile": {"type": "RuntimeDefault"}}}],
                 "automountServiceAccountToken": False},
    })


def published_service(kubectl: Kubectl, namespace: str, name: str, host: str) -> None:
    backend(kubectl, namespace, name)
    service(kubectl, namespace, name, host)


def service(kubectl: Kubectl, namespace: str, name: str, host: str) -> None:
    """A LoadBalancer Service that asks to be published as ``host``, selecting the Pod ``name``."""
    kubectl.apply({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"interlook.io/hosts": host, "interlook.io/port": "http"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
