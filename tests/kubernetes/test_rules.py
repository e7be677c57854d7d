"""Name rules and the host limit (core.rules) against a real kube-apiserver, with labelled Namespaces.

A refused Service shows the error and a Warning Event, and nothing is written
for it: no IPAllocation (the first step of the workflow), no entry past `undeployed`.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.kubernetes.conftest import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

HOSTS = "interlook.io/hosts"
PORT = "interlook.io/port"


def rules(namespace_a: str, max_hosts: int = 20) -> dict[str, Any]:
    return {"rules": {"maxHostsPerService": max_hosts, "names": [
        {"namespaces": [namespace_a], "domains": ["a.example.com"]},
        {"namespaceSelector": {"matchLabels": {"team": "shop"}}, "domains": ["shop.example.com"]},
    ]}}


def publish(cluster: Cluster, namespace: str, name: str, hosts: str, node: str) -> None:
    cluster.service(namespace, name, annotations={HOSTS: hosts, PORT: "http"})
    cluster.endpoints(namespace, name, [node])


def state_of(cluster: Cluster, namespace: str, name: str, state: str) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        ann = cluster.annotations(namespace, name)
        return ann if ann.get("interlook.io/state") == state else None
    return dict(wait_for(check, f"{namespace}/{name} {state}"))


def refused(cluster: Cluster, namespace: str, name: str) -> str:
    """The error a refused Service shows; its Warning Event says the same; nothing was allocated for it."""
    ann = state_of(cluster, namespace, name, "error")
    assert ann["interlook.io/step"] == "rules"
    assert "interlook.io/public-ip" not in ann
    wait_for(lambda: ("Warning", "ProvisioningFailed", f"rules: {ann['interlook.io/error']}")
             in cluster.events(namespace, name), f"{namespace}/{name} Warning Event")
    assert f"{namespace}/{name}" not in cluster.allocations().values()
    return ann["interlook.io/error"]


def test_names_are_allowed_by_namespace_name_and_by_namespace_selector_and_others_refused(
        cluster: Cluster, make_namespace: Callable[..., str], make_controller: Any) -> None:
    team_a, shop = make_namespace({"team": "a"}), make_namespace({"team": "shop"})
    node = cluster.node("10.20.0.1")
    controller = make_controller([team_a, shop], extra_core=rules(team_a)).start()
    publish(cluster, team_a, "web", "web.a.example.com,*.api.a.example.com", node)
    publish(cluster, shop, "cart", "cart.shop.example.com", node)
    publish(cluster, team_a, "squatter", "web.a.example.com,pay.shop.example.com", node)

    assert state_of(cluster, team_a, "web", "deployed")["interlook.io/public-ip"]
    assert state_of(cluster, shop, "cart", "deployed")["interlook.io/public-ip"]
    error = refused(cluster, team_a, "squatter")
    assert error == (f"host name pay.shop.example.com is not allowed here: namespace {team_a} may publish names "
                     "under a.example.com (core.rules.names)")
    # What the other team may publish, or who they are, is never shown to this one.
    assert shop not in error and "team=shop" not in error
    entry = controller.entries()[f"{team_a}/squatter"]
    assert (entry["state"], entry["expected_state"]) == ("undeployed", "deployed")


def test_more_host_names_than_the_limit_is_refused_and_nothing_is_written(
        cluster: Cluster, make_namespace: Callable[..., str], make_controller: Any) -> None:
    team_a = make_namespace()
    node = cluster.node("10.20.0.2")
    make_controller([team_a], extra_core=rules(team_a, max_hosts=3)).start()
    publish(cluster, team_a, "many", ",".join(f"h{i}.a.example.com" for i in range(4)), node)
    publish(cluster, team_a, "three", ",".join(f"h{i}.a.example.com" for i in range(3)) + ",h0.a.example.com", node)

    assert refused(cluster, team_a, "many") == "4 host names, more than the limit of 3 (core.rules.maxHostsPerService)"
    state_of(cluster, team_a, "three", "deployed")  # a name given twice counts once


def test_a_namespace_label_change_turns_a_refused_service_into_a_deployed_one(
        cluster: Cluster, core_api: Any, make_namespace: Callable[..., str], make_controller: Any) -> None:
    newcomer = make_namespace({"team": "unknown"})
    node = cluster.node("10.20.0.3")
    make_controller([newcomer], extra_core=rules("nobody")).start()
    publish(cluster, newcomer, "cart", "cart.shop.example.com", node)
    assert refused(cluster, newcomer, "cart").endswith(f"namespace {newcomer} may publish no names (core.rules.names)")

    core_api.patch_namespace(newcomer, {"metadata": {"labels": {"team": "shop"}}})
    ann = state_of(cluster, newcomer, "cart", "deployed")
    assert "interlook.io/error" not in ann
    assert cluster.allocations()[ann["interlook.io/public-ip"]] == f"{newcomer}/cart"
