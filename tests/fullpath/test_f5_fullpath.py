"""provider.kubernetes -> provisioner.ipalloc -> provisioner.f5ltm, on the real API server and the BIG-IP simulator.

Issue 6's full path, over HTTPS with the simulator's CA handed to the
controller as ``caFile`` (never ``insecureSkipVerify``): a managed Service
gets a pool whose members are the nodes' InternalIP:nodePort with ratio = the
ready endpoints on that node, and (vs mode) a virtual server at the allocated
public IP, port 80, or (policy mode) a rule for its host in the global HTTP
policy; scaling the endpoints changes the members; deleting the Service
removes what was created before the finalizer is released.  In policy mode
with no Consul step, a host name already routed for a Service of another
namespace is an error on the second Service, and the policy keeps only the
first one's rule (issue 14).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from extensions.kit.ownership import Mark, parse_text
from extensions.provisioners.f5ltm.names import object_name
from tests.fullpath.conftest import BigIP, write_config
from tests.fullpath.support import (
    ERROR,
    PUBLIC_IP,
    STATE,
    DeletionWatch,
    deployed,
    instance_of,
    published,
    waiting,
)
from tests.kubernetes.conftest import Cluster, Controller, other_namespace  # noqa: F401 - a fixture, by name

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

STEPS = "provider.kubernetes,provisioner.ipalloc,provisioner.f5ltm"
HTTP_POLICY = "/Common/global-http"


def f5_section(bigip: BigIP, **extra: str) -> dict[str, Any]:
    return {"f5ltm": {"httpEndpoint": bigip.url, "username": "admin", "password": "admin",
                      "caFile": bigip.ca_file, "partition": "Common", **extra}}


def members(state: dict[str, Any], pool: str) -> dict[str, int]:
    return {m["name"]: int(m["ratio"]) for m in (state["members"].get(pool) or {}).values()}


def marks(obj: dict[str, Any]) -> Mark | None:
    return parse_text(obj.get("description"))


def node_port(cluster: Cluster, namespace: str, name: str) -> int:
    service: Any = cluster.core.read_namespaced_service(name, namespace)
    return int(service.spec.ports[0].node_port)


def test_vs_mode_pool_and_virtual_server_follow_the_service(
        cluster: Cluster, namespace: str, bigip: BigIP, fullpath_controller: Callable[..., Controller]) -> None:
    assert "insecureSkipVerify" not in f5_section(bigip)["f5ltm"]
    a, b = cluster.node("10.71.0.1"), cluster.node("10.71.0.2")
    controller = fullpath_controller(STEPS, lb=f5_section(bigip, updateMode="vs"))
    cluster.service(namespace, "web", annotations=published(f"web-{namespace}.example.com"))
    cluster.endpoints(namespace, "web", [a])
    instance, entry = instance_of(controller), f"{namespace}/web"
    pool = f"/Common/{object_name(instance, entry)}"

    ip = deployed(cluster, namespace, "web", controller)[PUBLIC_IP]
    port = node_port(cluster, namespace, "web")
    state = bigip.state()
    assert members(state, pool) == {f"10.71.0.1:{port}": 1}
    assert marks(state["pools"][pool]) == Mark(instance, entry)
    virtual = state["virtuals"][pool]
    assert virtual["destination"] == f"/Common/{ip}:80"
    assert virtual["pool"] == pool
    assert marks(virtual) == Mark(instance, entry)

    # Scale: two more ready endpoints, two of them on the second node.
    cluster.endpoints(namespace, "web", [a, b, b])
    waiting(lambda: members(bigip.state(), pool) == {f"10.71.0.1:{port}": 1, f"10.71.0.2:{port}": 2},
            "the pool members to follow the endpoints", controller)
    cluster.endpoints(namespace, "web", [b])
    waiting(lambda: members(bigip.state(), pool) == {f"10.71.0.2:{port}": 1},
            "the pool members to follow the scale-down", controller)
    assert bigip.state()["virtuals"][pool]["destination"] == f"/Common/{ip}:80"

    # Delete: when the Service leaves the API, the virtual server and the pool are already gone.
    watch = DeletionWatch(cluster, namespace, "web", bigip.state)
    cluster.core.delete_namespaced_service("web", namespace)
    then = watch.result(controller)
    assert pool not in then["virtuals"]
    assert pool not in then["pools"]
    assert pool not in then["members"]
    assert not [n for n, node in then["nodes"].items() if marks(node) is not None]
    waiting(lambda: ip not in cluster.allocations(), "the address to be freed", controller)


def test_policy_mode_rule_for_the_host_then_removed_before_the_finalizer(
        cluster: Cluster, namespace: str, bigip: BigIP, fullpath_controller: Callable[..., Controller]) -> None:
    bigip.seed_policy(HTTP_POLICY)  # the operator's published policy, attached to their own virtual servers
    a = cluster.node("10.72.0.1")
    host = f"web-{namespace}.example.com"
    controller = fullpath_controller(STEPS, lb=f5_section(bigip, updateMode="policy",
                                                            globalHTTPPolicy="global-http"))
    cluster.service(namespace, "web", annotations=published(host))
    cluster.endpoints(namespace, "web", [a, a])
    instance, entry = instance_of(controller), f"{namespace}/web"
    rule_name = object_name(instance, entry)
    pool = f"/Common/{rule_name}"

    deployed(cluster, namespace, "web", controller)
    port = node_port(cluster, namespace, "web")
    state = bigip.state()
    assert members(state, pool) == {f"10.72.0.1:{port}": 2}
    assert state["virtuals"] == {}  # policy mode: the operator owns the virtual servers
    rules = {r["name"]: r for r in state["rules"][HTTP_POLICY]}
    assert set(rules) == {rule_name}
    assert marks(rules[rule_name]) == Mark(instance, entry)
    condition, action = rules[rule_name]["conditions"][0], rules[rule_name]["actions"][0]
    assert condition.get("httpHost") and condition.get("equals") and condition["values"] == [host]
    assert action.get("forward") and action["pool"] == pool
    assert state["policies"][HTTP_POLICY]["status"] == "published"
    assert [p for p, policy in state["policies"].items() if policy.get("status") == "draft"] == []

    watch = DeletionWatch(cluster, namespace, "web", bigip.state)
    cluster.core.delete_namespaced_service("web", namespace)
    then = watch.result(controller)
    assert [r["name"] for r in then["rules"][HTTP_POLICY]] == []
    assert pool not in then["pools"]
    assert then["policies"][HTTP_POLICY]["status"] == "published"
    assert [p for p, policy in then["policies"].items() if policy.get("status") == "draft"] == []


def test_policy_mode_a_host_routed_for_another_namespace_is_an_error_and_the_policy_keeps_one_rule(
        cluster: Cluster, namespace: str, other_namespace: str, bigip: BigIP,  # noqa: F811
        make_controller: Callable[..., Controller]) -> None:
    bigip.seed_policy(HTTP_POLICY)
    node = cluster.node("10.74.0.1")
    host = "shared.example.com"  # the simulator is this test's own: no other test holds it
    controller = write_config(make_controller([namespace, other_namespace]), STEPS,  # no Consul step before F5
                              lb=f5_section(bigip, updateMode="policy", globalHTTPPolicy="global-http")).start()
    cluster.service(namespace, "web", annotations=published(host))
    cluster.endpoints(namespace, "web", [node])
    deployed(cluster, namespace, "web", controller)
    instance = instance_of(controller)

    cluster.service(other_namespace, "web", annotations=published(host))
    cluster.endpoints(other_namespace, "web", [node])
    error = waiting(lambda: cluster.annotations(other_namespace, "web").get(ERROR), "the second Service's error",
                    controller)

    assert f"host name {host} is already routed by a rule of another Service in policy {HTTP_POLICY}" in error
    assert namespace not in error
    assert cluster.annotations(other_namespace, "web")[STATE] == "error"
    warnings = waiting(lambda: [e[2] for e in cluster.events(other_namespace, "web")
                                if e[:2] == ("Warning", "ProvisioningFailed") and "already routed" in e[2]],
                       "a Warning ProvisioningFailed Event on the second Service", controller)
    assert all(namespace not in text for text in warnings)
    state = bigip.state()
    first, second = object_name(instance, f"{namespace}/web"), object_name(instance, f"{other_namespace}/web")
    assert [r["name"] for r in state["rules"][HTTP_POLICY]] == [first]
    assert f"/Common/{second}" not in state["pools"]
    assert cluster.annotations(namespace, "web")[STATE] == "deployed"
