"""The controller against a real kube-apiserver: Services in, results back on the Service."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import free_port
from tests.kubernetes.conftest import POOL, ROOT, Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

HOSTS = "interlook.io/hosts"
PORT = "interlook.io/port"


def published(ann: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    return {HOSTS: "web.example.com", PORT: "http", **(ann or {}), **extra}


def deployed(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        ann = cluster.annotations(namespace, name)
        return ann if ann.get("interlook.io/state") == "deployed" else None
    return dict(wait_for(check, f"{namespace}/{name} deployed"))


def test_managed_service_is_deployed_and_results_come_back(cluster: Cluster, namespace: str, other_namespace: str,
                                                           make_controller: Any) -> None:
    node = cluster.node("10.1.0.1")
    controller = make_controller([namespace, other_namespace]).start()
    for ns in (namespace, other_namespace):  # the same name in two namespaces: two entries
        cluster.service(ns, "web", annotations=published(), type="LoadBalancer")
        cluster.endpoints(ns, "web", [node, node])
    cluster.service(namespace, "plain", type="NodePort")  # not ours
    cluster.service(namespace, "legacy", labels={"interlook.hosts": "legacy.example.com", "interlook.port": "80"})
    cluster.endpoints(namespace, "legacy", [node])
    cluster.endpoints(namespace, "plain", [node])

    ann = deployed(cluster, namespace, "web")
    ip = ann["interlook.io/public-ip"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL)
    assert "interlook.io/error" not in ann and "interlook.io/step" not in ann
    other_ip = deployed(cluster, other_namespace, "web")["interlook.io/public-ip"]
    assert other_ip != ip
    assert deployed(cluster, namespace, "legacy")["interlook.io/public-ip"] not in (ip, other_ip)

    svc = cluster.core.read_namespaced_service("web", namespace)
    assert [i.ip for i in svc.status.load_balancer.ingress] == [ip]
    assert "interlook.io/finalizer" in svc.metadata.finalizers
    wait_for(lambda: ("Normal", "Provisioned") in [e[:2] for e in cluster.events(namespace, "web")], "Provisioned")
    assert cluster.allocations()[ip] == f"{namespace}/web"

    entries = controller.entries()
    assert entries[f"{namespace}/web"]["service"]["targets"] == [
        {"host": "10.1.0.1", "port": svc.spec.ports[0].node_port, "weight": 2}]
    assert f"{other_namespace}/web" in entries
    assert entries[f"{namespace}/legacy"]["service"]["dns_name"] == ["legacy.example.com"]

    plain = cluster.core.read_namespaced_service("plain", namespace)
    assert plain.metadata.annotations is None
    assert plain.metadata.finalizers is None
    assert cluster.events(namespace, "plain") == []
    assert f"{namespace}/plain" not in entries


def test_endpoints_and_hosts_are_followed(cluster: Cluster, namespace: str, make_controller: Any) -> None:
    a, b = cluster.node("10.2.0.1"), cluster.node("10.2.0.2")
    controller = make_controller([namespace]).start()
    cluster.service(namespace, "web", annotations=published())
    cluster.endpoints(namespace, "web", [a])
    ip = deployed(cluster, namespace, "web")["interlook.io/public-ip"]
    key = f"{namespace}/web"

    def targets() -> list[tuple[str, int]]:
        return [(t["host"], t["weight"]) for t in controller.entries()[key]["service"]["targets"]]

    cluster.endpoints(namespace, "web", [a, b, b])
    wait_for(lambda: targets() == [("10.2.0.1", 1), ("10.2.0.2", 2)], "targets to follow the scale-up")
    cluster.core.patch_namespaced_service("web", namespace, {"metadata": {"annotations": {
        HOSTS: "web.example.com,www.example.com"}}})
    wait_for(lambda: controller.entries()[key]["service"]["dns_name"] == ["web.example.com", "www.example.com"],
             "hosts change")
    assert deployed(cluster, namespace, "web")["interlook.io/public-ip"] == ip  # same address all along

    # No ready endpoint left: not published, and the annotations say why.
    cluster.endpoints(namespace, "web", [a, b], ready=False)
    wait_for(lambda: cluster.annotations(namespace, "web").get("interlook.io/state") == "pending", "pending")
    ann = cluster.annotations(namespace, "web")
    assert ann["interlook.io/info"] == "no ready endpoints"
    assert "interlook.io/public-ip" not in ann
    wait_for(lambda: ip not in cluster.allocations(), "the address to be freed")


def test_service_without_ready_endpoints_is_never_published(cluster: Cluster, namespace: str,
                                                            make_controller: Any) -> None:
    make_controller([namespace]).start()
    cluster.service(namespace, "idle", annotations=published())
    wait_for(lambda: cluster.annotations(namespace, "idle").get("interlook.io/state") == "pending", "pending")
    assert f"{namespace}/idle" not in cluster.allocations().values()


def test_malformed_input_is_an_error_on_that_service_only(cluster: Cluster, namespace: str,
                                                         make_controller: Any) -> None:
    node = cluster.node("10.3.0.1")
    controller = make_controller([namespace]).start()
    cluster.service(namespace, "bad-port", annotations=published(**{PORT: "nope"}))
    cluster.service(namespace, "no-hosts", annotations=published(**{HOSTS: " , "}))
    cluster.service(namespace, "far-ip", annotations=published(**{"interlook.io/ip": "203.0.113.9"}))
    cluster.service(namespace, "good", annotations=published())
    for name in ("bad-port", "no-hosts", "far-ip", "good"):
        cluster.endpoints(namespace, name, [node])

    deployed(cluster, namespace, "good")
    for name, words in (("bad-port", "port 'nope'"), ("no-hosts", "hosts is empty"), ("far-ip", "not in the pool")):
        wait_for(lambda n=name: cluster.annotations(namespace, n).get("interlook.io/state") == "error", f"{name} error")
        assert words in cluster.annotations(namespace, name)["interlook.io/error"]
        wait_for(lambda n=name: ("Warning", "ProvisioningFailed") in [e[:2] for e in cluster.events(namespace, n)],
                 f"{name} Warning Event")

    # Healing the input heals the Service: the error annotation goes.
    cluster.core.patch_namespaced_service("bad-port", namespace, {"metadata": {"annotations": {PORT: "http"}}})
    ann = deployed(cluster, namespace, "bad-port")
    assert "interlook.io/error" not in ann
    assert controller.proc.poll() is None


def test_requested_ip_is_given(cluster: Cluster, namespace: str, make_controller: Any) -> None:
    node = cluster.node("10.4.0.1")
    make_controller([namespace]).start()
    cluster.service(namespace, "pinned", annotations=published(**{"interlook.io/ip": "198.51.100.200"}))
    cluster.endpoints(namespace, "pinned", [node])
    assert deployed(cluster, namespace, "pinned")["interlook.io/public-ip"] == "198.51.100.200"


def test_delete_waits_for_the_finalizer_then_frees_the_address(cluster: Cluster, namespace: str,
                                                               make_controller: Any) -> None:
    node = cluster.node("10.5.0.1")
    controller = make_controller([namespace]).start()
    cluster.service(namespace, "web", annotations=published())
    cluster.endpoints(namespace, "web", [node])
    ip = deployed(cluster, namespace, "web")["interlook.io/public-ip"]

    # With the controller away, the deletion is held by our finalizer.
    controller.stop()
    cluster.core.delete_namespaced_service("web", namespace)
    held = cluster.core.read_namespaced_service("web", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert cluster.allocations()[ip] == f"{namespace}/web"

    controller.start()
    wait_for(lambda: not cluster.exists(namespace, "web"), "the Service to be released and gone")
    assert ip not in cluster.allocations()
    assert ("Normal", "Deprovisioned") in [e[:2] for e in cluster.events(namespace, "web")]


def test_service_that_stops_asking_is_undone_and_cleaned(cluster: Cluster, namespace: str,
                                                         make_controller: Any) -> None:
    node = cluster.node("10.6.0.1")
    make_controller([namespace]).start()
    cluster.service(namespace, "web", annotations=published())
    cluster.endpoints(namespace, "web", [node])
    ip = deployed(cluster, namespace, "web")["interlook.io/public-ip"]
    cluster.core.patch_namespaced_service("web", namespace, {"metadata": {"annotations": {HOSTS: None}}})

    def clean() -> bool:
        svc = cluster.core.read_namespaced_service("web", namespace)
        ours = [k for k in (svc.metadata.annotations or {}) if k.startswith("interlook.io/") and k != PORT]
        return not ours and not svc.metadata.finalizers
    wait_for(clean, "our annotations and finalizer to be removed")
    assert ip not in cluster.allocations()


def test_sigkill_during_a_burst_converges_without_double_allocation(cluster: Cluster, namespace: str,
                                                                     make_controller: Any) -> None:
    node = cluster.node("10.7.0.1")
    controller = make_controller([namespace]).start()
    names = [f"svc-{i}" for i in range(12)]
    for name in names:
        cluster.service(namespace, name, annotations=published())
        cluster.endpoints(namespace, name, [node])
    wait_for(lambda: any(o.startswith(f"{namespace}/") for o in cluster.allocations().values()),
             "the burst to be under way")
    controller.kill()
    controller.start()
    ips = {name: deployed(cluster, namespace, name)["interlook.io/public-ip"] for name in names}
    assert len(set(ips.values())) == len(names)
    ours = {ip: owner for ip, owner in cluster.allocations().items() if owner.startswith(f"{namespace}/")}
    assert ours == {ip: f"{namespace}/{name}" for name, ip in ips.items()}


def test_an_extension_that_refuses_to_start_stops_the_process_with_the_reason(namespace: str,
                                                                              make_controller: Any) -> None:
    controller = make_controller([namespace])
    config = yaml.safe_load(controller.config_path.read_text())
    config["core"]["workflowSteps"] = "provider.kubernetes,provisioner.ipalloc,provisioner.consul"
    config["dns"] = {"consul": {"url": f"http://127.0.0.1:{free_port()}"}}  # nothing listens there
    controller.config_path.write_text(yaml.safe_dump(config))
    kopf = Path(sys.executable).parent / "kopf"
    # kopf alone would retry a failed start-up handler forever; the Pod must crash-loop with the reason.
    result = subprocess.run([str(kopf), "run", "--standalone", "--all-namespaces", str(ROOT / "controller/main.py")],
                            cwd=ROOT, env={**controller_env(controller)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "provisioner.consul" in result.stdout + result.stderr
    assert "cannot reach Consul" in result.stdout + result.stderr


def controller_env(controller: Any) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": controller.kubeconfig, "INTERLOOK_CONFIG": str(controller.config_path),
            "PYTHONPATH": str(ROOT)}
