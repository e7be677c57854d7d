"""Several Interlooks on one Consul: each changes and sweeps only its own records.

Two provisioners with different instance ids stand for two clusters (or two
teams) sharing one agent; a record without an instance mark stands for one
written by the version before instance ids.
"""

from __future__ import annotations

import pytest

from controller.messages import Action, Service
from tests.consul.agent import ConsulAgent
from tests.consul.support import catalog_node, message, provisioner, register_foreign, service

pytestmark = [pytest.mark.integration, pytest.mark.consul]


def meta(url: str, name: str) -> dict[str, str]:
    node = catalog_node(url, name)
    assert node is not None, f"{name} should be in Consul"
    return dict(node["Node"]["Meta"])


async def test_a_name_held_by_another_instance_is_an_error_and_left_alone(private_agent: ConsulAgent):
    url = private_agent.url
    cluster_a, cluster_b = provisioner(url, instance="il-cluster-a"), provisioner(url, instance="il-cluster-b")
    assert (await cluster_a.handle(message(Action.ADD, service("shop/web", "web-a", ip="10.20.0.1")))).error == ""

    # The same entry name in another cluster, asking for the same DNS name.
    reply = await cluster_b.handle(message(Action.ADD, service("shop/web", "web-a", ip="10.30.0.1")))
    assert "held by another Interlook instance (il-cluster-a)" in reply.error
    assert "shop/web" not in reply.error
    # Its delete undoes only what it holds: nothing of cluster A's.
    assert (await cluster_b.handle(message(Action.DELETE, Service(name="shop/web")))).error == ""
    assert meta(url, "web-a")["interlook-instance"] == "il-cluster-a"
    assert catalog_node(url, "web-a")["Node"]["Address"] == "10.20.0.1"


async def test_sweeps_take_only_their_own_instances_records(private_agent: ConsulAgent):
    url = private_agent.url
    writer_a, writer_b = provisioner(url, instance="il-team-a"), provisioner(url, instance="il-team-b")
    assert (await writer_a.handle(message(Action.ADD, service("team-a/web", "a-web")))).error == ""
    assert (await writer_b.handle(message(Action.ADD, service("team-b/web", "b-web")))).error == ""
    register_foreign(url, "legacy-web", "10.20.0.9", service_name="legacy-web",
                     meta={"external-node": "true", "interlook-managed": "true", "interlook-owner": "team-c/web"})

    # Team A's instance knows none of these entries: only its own record is an orphan.
    sweep = provisioner(url, instance="il-team-a", entries={}).orphan_sweep()
    for _ in range(5):
        await sweep.run_pass()
    assert catalog_node(url, "a-web") is None
    assert catalog_node(url, "b-web") is not None
    assert catalog_node(url, "legacy-web") is not None  # written before instance ids: never swept


async def test_a_record_from_before_instance_ids_is_adopted_for_its_own_entry(private_agent: ConsulAgent):
    url = private_agent.url
    register_foreign(url, "old-web", "10.20.0.5", service_name="old-web",
                     meta={"external-node": "true", "interlook-managed": "true", "interlook-owner": "shop/old"})
    upgraded = provisioner(url, instance="il-upgraded")

    reply = await upgraded.handle(message(Action.ADD, service("team-x/other", "old-web")))
    assert "held by another Service" in reply.error and "shop/old" not in reply.error  # another namespace's

    assert (await upgraded.handle(message(Action.ADD, service("shop/old", "old-web", ip="10.20.0.5")))).error == ""
    assert meta(url, "old-web")["interlook-instance"] == "il-upgraded"  # re-marked: ours from now on
    assert (await upgraded.handle(message(Action.DELETE, Service(name="shop/old")))).error == ""
    assert catalog_node(url, "old-web") is None
