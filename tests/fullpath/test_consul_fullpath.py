"""provider.kubernetes -> provisioner.ipalloc -> provisioner.consul, on the real API server and a real Consul.

Issue 4's full path: a managed Service gets one Consul record per host, at the
address Interlook allocated and wrote back on the Service; a changed host list
moves the records; deleting the Service removes them *before* the finalizer is
released, and an unreachable Consul holds the deletion (with the error on the
Service) until it is back.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable

import pytest

from tests.chaos.harness import ConsulServer
from tests.consul.support import catalog_node, owned_nodes
from tests.fullpath.support import (
    ERROR,
    FINALIZER,
    HOSTS,
    PUBLIC_IP,
    DeletionWatch,
    deployed,
    published,
    waiting,
)
from tests.kubernetes.conftest import POOL, Cluster, Controller

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes, pytest.mark.consul]

STEPS = "provider.kubernetes,provisioner.ipalloc,provisioner.consul"


def consul_section(url: str) -> dict[str, Any]:
    return {"consul": {"url": url, "reconcileInterval": "60s"}}


def records(url: str, hosts: list[str]) -> dict[str, tuple[str, dict[str, str], list[tuple[str, int]]] | None]:
    """host -> (node address, node meta, [(service, port)]) as Consul's catalog shows it, or None."""
    out: dict[str, tuple[str, dict[str, str], list[tuple[str, int]]] | None] = {}
    for host in hosts:
        node = catalog_node(url, host)
        if node is None or node.get("Node") is None:
            out[host] = None
            continue
        services = sorted((s["Service"], int(s["Port"])) for s in (node.get("Services") or {}).values())
        out[host] = (node["Node"]["Address"], dict(node["Node"].get("Meta") or {}), services)
    return out


def poll(check: Callable[[], Any], timeout: float) -> Any:
    """check()'s first truthy answer within ``timeout``, else None (an observation, not an assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return None


def expect_records(url: str, hosts: list[str], ip: str, owner: str) -> None:
    found = records(url, hosts)
    for host in hosts:
        record = found[host]
        assert record is not None, f"no Consul node {host}: {found}"
        address, meta, services = record
        assert address == ip
        assert meta.get("interlook-owner") == owner
        assert services == [(host, 80)]  # the Kubernetes Service port asked for by interlook.io/port
    assert owned_nodes(url, owner) == sorted(hosts)


def test_service_gets_consul_records_that_follow_hosts_and_go_before_the_finalizer(
        cluster: Cluster, namespace: str, consul_agent: Any, fullpath_controller: Callable[..., Controller]) -> None:
    url, owner = consul_agent.url, f"{namespace}/web"
    node = cluster.node("10.61.0.1")
    controller = fullpath_controller(STEPS, dns=consul_section(url))
    first = [f"web-{namespace}.example.com"]
    cluster.service(namespace, "web", annotations=published(",".join(first)))
    cluster.endpoints(namespace, "web", [node])

    ann = deployed(cluster, namespace, "web", controller)
    ip = ann[PUBLIC_IP]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POOL)
    expect_records(url, first, ip, owner)

    # A new host list: the records move, the address stays.
    second = sorted([f"www-{namespace}.example.com", f"api-{namespace}.example.com"])
    cluster.core.patch_namespaced_service("web", namespace, {"metadata": {"annotations": {HOSTS: ",".join(second)}}})
    waiting(lambda: owned_nodes(url, owner) == second, "the Consul records to follow the hosts", controller)
    expect_records(url, second, ip, owner)
    assert records(url, first) == {first[0]: None}
    ann = deployed(cluster, namespace, "web", controller)
    assert ann[PUBLIC_IP] == ip

    # Delete: at the instant the Service leaves the API, Consul already has nothing of it.
    watch = DeletionWatch(cluster, namespace, "web", lambda: (owned_nodes(url, owner), records(url, first + second)))
    cluster.core.delete_namespaced_service("web", namespace)
    owned_then, records_then = watch.result(controller)
    assert owned_then == []
    assert records_then == {host: None for host in first + second}
    waiting(lambda: ip not in cluster.allocations(), "the address to be freed", controller)


def test_consul_outage_holds_the_deletion_until_consul_is_back(
        cluster: Cluster, namespace: str, durable_consul: ConsulServer,
        fullpath_controller: Callable[..., Controller]) -> None:
    url, owner = durable_consul.url, f"{namespace}/web"
    hosts = [f"web-{namespace}.example.com"]
    node = cluster.node("10.62.0.1")
    controller = fullpath_controller(STEPS, dns=consul_section(url))
    cluster.service(namespace, "web", annotations=published(hosts[0]))
    cluster.endpoints(namespace, "web", [node])
    ip = deployed(cluster, namespace, "web", controller)[PUBLIC_IP]
    expect_records(url, hosts, ip, owner)

    durable_consul.stop()
    try:
        cluster.core.delete_namespaced_service("web", namespace)

        def failing_entry() -> dict[str, Any] | None:
            entry = controller.entries().get(owner)
            return entry if entry and entry["error"] else None
        entry = waiting(failing_entry, "the Consul error on the entry being undone", controller)
        assert entry["expected_state"] == "undeployed" and "consul" in entry["error"].lower()
        waiting(lambda: [e for e in cluster.events(namespace, "web")
                         if e[:2] == ("Warning", "ProvisioningFailed") and "consul" in e[2].lower()],
                "a Warning ProvisioningFailed Event naming Consul", controller)
        held: Any = cluster.core.read_namespaced_service("web", namespace)
        assert held.metadata.deletion_timestamp is not None
        assert FINALIZER in (held.metadata.finalizers or [])
        assert cluster.allocations().get(ip) == owner  # walking back: the IP step is not undone yet
        # The contract (DESIGN.md output table, docs/kubernetes.md "Deletion"): the error is on the Service.
        error_annotation = poll(lambda: cluster.annotations(namespace, "web").get(ERROR), timeout=20)
        watch = DeletionWatch(cluster, namespace, "web", lambda: (owned_nodes(url, owner), records(url, hosts)))
        assert cluster.exists(namespace, "web"), "the Service went while Consul was unreachable"
    finally:
        durable_consul.start()  # same ports, same data directory: the catalog is as before the outage

    owned_then, records_then = watch.result(controller)
    assert owned_then == []
    assert records_then == {hosts[0]: None}
    waiting(lambda: ip not in cluster.allocations(), "the address to be freed", controller)
    # A deletion held by a failing step shows why on the Service, not only in an Event.
    assert error_annotation, "no interlook.io/error while the deletion was blocked"
    assert "consul" in error_annotation.lower()
