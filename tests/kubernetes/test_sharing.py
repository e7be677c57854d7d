"""Teams sharing one Interlook, end to end under `kopf run` on a real kube-apiserver.

The provider reads the labels of each Service and of its Namespace, and the
pool annotation; the allocator picks from the pools those admit.  A Namespace
relabelled into a pool is judged again at once.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import yaml

from tests.kubernetes.conftest import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes]

PUBLISHED = {"interlook.io/hosts": "shared.example.com", "interlook.io/port": "http"}


def annotations_in_state(cluster: Cluster, namespace: str, name: str, state: str) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        found = cluster.annotations(namespace, name)
        return found if found.get("interlook.io/state") == state else None
    return dict(wait_for(check, f"{namespace}/{name} {state}"))


def test_pools_are_chosen_by_namespace_labels_service_labels_and_the_pool_annotation(
        cluster: Cluster, make_namespace: Callable[..., str], make_controller: Any, core_api: Any) -> None:
    team_a, team_b, newcomer = make_namespace({"team": "a"}), make_namespace({"team": "b"}), make_namespace()
    node = cluster.node("10.144.9.1")
    controller = make_controller([team_a, team_b, newcomer])
    config = yaml.safe_load(controller.config_path.read_text())
    config["ipam"]["ipalloc"] = {"pools": [
        {"name": "team-a", "network_cidr": "10.144.0.0/29", "namespaceSelector": "team=a", "priority": 1},
        {"name": "web", "network_cidr": "10.144.1.0/29", "serviceSelector": {"matchLabels": {"tier": "web"}},
         "priority": 2},
        {"name": "v6", "network_cidr": "2001:db8:144::/120", "namespaceSelector": "team in (b)"},
    ]}
    controller.config_path.write_text(yaml.safe_dump(config))
    controller.start()
    wanted = [
        (team_a, "app", {}, {}),                                   # team-a: its namespace's pool
        (team_b, "front", {"tier": "web"}, {}),                    # web (priority 2) before v6 (none)
        (team_b, "api", {}, {}),                                   # v6: its namespace's labels
        (team_b, "pinned", {"tier": "web"}, {"interlook.io/pool": "v6"}),  # the annotation wins
        (newcomer, "app", {}, {}),                                 # no pool admits an unlabelled namespace
        (newcomer, "asks", {}, {"interlook.io/pool": "team-a"}),   # asking does not make a pool admit it
    ]
    for namespace, name, labels, extra in wanted:
        cluster.service(namespace, name, annotations={**PUBLISHED, **extra}, labels=labels)
        cluster.endpoints(namespace, name, [node])

    ip = {f"{ns}/{name}": annotations_in_state(cluster, ns, name, "deployed")["interlook.io/public-ip"]
          for ns, name in ((team_a, "app"), (team_b, "front"), (team_b, "api"), (team_b, "pinned"))}
    assert ip[f"{team_a}/app"] == "10.144.0.1"
    assert ip[f"{team_b}/front"] == "10.144.1.1"
    assert {ip[f"{team_b}/api"], ip[f"{team_b}/pinned"]} == {"2001:db8:144::1", "2001:db8:144::2"}
    nowhere = annotations_in_state(cluster, newcomer, "app", "error")["interlook.io/error"]
    assert nowhere.startswith("no IP pool admits this Service"), nowhere
    refused = annotations_in_state(cluster, newcomer, "asks", "error")["interlook.io/error"]
    assert refused.startswith("IP pool team-a does not admit this Service"), refused
    for error in (nowhere, refused):  # another team's Services are none of this namespace's business
        assert team_a not in error and team_b not in error
    assert f"{newcomer}/app" not in cluster.allocations().values()

    core_api.patch_namespace(newcomer, {"metadata": {"labels": {"team": "a"}}})
    moved_in = annotations_in_state(cluster, newcomer, "app", "deployed")["interlook.io/public-ip"]
    assert moved_in in {f"10.144.0.{i}" for i in range(2, 7)}
    owners = cluster.allocations()
    assert owners[moved_in] == f"{newcomer}/app"
    assert owners[ip[f"{team_b}/api"]] == f"{team_b}/api"
