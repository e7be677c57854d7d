"""Several Interlooks on one BIG-IP partition: each changes only what carries its own instance mark.

Two provisioners with different instance ids share one simulator, as two
clusters (or two teams) sharing one partition do.  Objects from before
instance ids (``interlook_<ns>_<name>``, marked ``interlook:<entry>``) are
adopted in place for their own entry and never swept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.messages import Action, Service
from extensions.provisioners.f5ltm import F5Provisioner
from tests.f5.helpers import HTTP_POLICY, SUFFIX, mark_of, message, name_of, path_of, service
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

LEGACY = "/Common/interlook_shop_web"
LEGACY_MARK = f"interlook:shop/web {SUFFIX}"


async def two_instances(provisioner_factory, **overrides: Any) -> tuple[F5Provisioner, F5Provisioner]:
    live: dict[str, Service] = {}  # neither has any live entry: every sweep pass looks for orphans
    a = await provisioner_factory(instance="site-a", entries=lambda: live, **overrides)
    b = await provisioner_factory(instance="site-b", entries=lambda: live, **overrides)
    return a, b


async def make_legacy(f5: F5Provisioner, *, entry: str = "shop/web", public_ip: str = "192.0.2.10") -> str:
    """Objects as the version before instance ids made them: legacy name, legacy mark, a legacy node."""
    name = "interlook_" + entry.replace("/", "_")
    bigip = f5._bigip
    await bigip.request("POST", "/mgmt/tm/ltm/node", {
        "name": "10.0.0.1", "partition": "Common", "address": "10.0.0.1", "description": f"interlook:node {SUFFIX}"})
    await bigip.request("POST", "/mgmt/tm/ltm/pool", {
        "name": name, "partition": "Common", "description": f"interlook:{entry} {SUFFIX}",
        "loadBalancingMode": "least-connections-member", "members": [{"name": "10.0.0.1:30080", "ratio": 1}]})
    await bigip.request("POST", "/mgmt/tm/ltm/virtual", {
        "name": name, "partition": "Common", "description": f"interlook:{entry} {SUFFIX}",
        "destination": f"/Common/{public_ip}:80", "pool": f"/Common/{name}", "ipProtocol": "tcp",
        "sourceAddressTranslation": {"type": "automap"}})
    return f"/Common/{name}"


async def sweep(f5: F5Provisioner) -> None:
    """Let the background sweep (reconcileInterval 0.02 s) run a dozen passes: orphans go on the second."""
    task = asyncio.create_task(f5.run_background())
    await asyncio.sleep(0.3)
    task.cancel()


# -- two instances, one partition ----------------------------------------------------------

async def test_two_instances_publish_the_same_entry_side_by_side(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory)

    replies = [await a.handle(message(Action.ADD, service(public_ip="192.0.2.10"))),
               await b.handle(message(Action.ADD, service(public_ip="192.0.2.20")))]

    assert [r.error for r in replies] == ["", ""]
    assert set(bigip.state.pools) == {path_of(instance="site-a"), path_of(instance="site-b")}
    assert bigip.state.pools[path_of(instance="site-a")]["description"] == mark_of(instance="site-a")
    assert bigip.state.virtuals[path_of(instance="site-b")]["description"] == mark_of(instance="site-b")
    assert bigip.state.virtuals[path_of(instance="site-b")]["destination"] == "/Common/192.0.2.20:80"


async def test_deleting_on_one_instance_leaves_the_other_alone(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory)
    await a.handle(message(Action.ADD, service(public_ip="192.0.2.10")))
    await b.handle(message(Action.ADD, service(public_ip="192.0.2.20")))

    reply = await a.handle(message(Action.DELETE, service(public_ip="192.0.2.10")))

    assert reply.error == ""
    assert set(bigip.state.pools) == {path_of(instance="site-b")}
    assert set(bigip.state.virtuals) == {path_of(instance="site-b")}
    # The node both pools used was made by site-a; site-b's member still holds it, so it stays.
    assert "/Common/10.0.0.1" in bigip.state.nodes


async def test_a_sweep_considers_only_its_own_instance(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory, reconcile_interval=0.02)
    await a.handle(message(Action.ADD, service("shop/web", public_ip="192.0.2.10")))
    await b.handle(message(Action.ADD, service("shop/web", public_ip="192.0.2.20")))
    await b.handle(message(Action.ADD, service("shop/api", public_ip="192.0.2.21")))

    assert await a._owners() == {"shop/web"}
    assert await b._owners() == {"shop/web", "shop/api"}
    await sweep(a)

    assert set(bigip.state.pools) == {path_of("shop/web", "site-b"), path_of("shop/api", "site-b")}
    assert set(bigip.state.virtuals) == {path_of("shop/web", "site-b"), path_of("shop/api", "site-b")}


async def test_nodes_are_deleted_only_by_the_instance_that_made_them(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory)
    await a.handle(message(Action.ADD, service(public_ip="192.0.2.10")))  # makes node 10.0.0.1, marked site-a
    await b.handle(message(Action.ADD, service(public_ip="192.0.2.20")))  # uses it as it is

    assert (await b.handle(message(Action.DELETE, service(public_ip="192.0.2.20")))).error == ""
    assert bigip.state.nodes["/Common/10.0.0.1"]["description"].startswith("interlook:site-a:node ")

    assert (await a.handle(message(Action.DELETE, service(public_ip="192.0.2.10")))).error == ""
    assert bigip.state.nodes == {}


async def test_a_destination_held_by_another_instance_is_an_error_naming_that_instance(bigip, provisioner_factory):
    a, b = await two_instances(provisioner_factory)
    await b.handle(message(Action.ADD, service("team/shop", public_ip="192.0.2.10")))
    before = dict(bigip.state.virtuals)

    reply = await a.handle(message(Action.ADD, service("shop/web", public_ip="192.0.2.10")))

    assert "192.0.2.10:80 is already used by a virtual server of another Interlook instance (site-b)" in reply.error
    assert "team" not in reply.error and "shop" not in reply.error.split("instance (site-b)")[1]
    assert bigip.state.virtuals == before


async def test_an_object_of_another_instance_at_our_name_is_never_changed(bigip, provisioner_factory):
    a, _ = await two_instances(provisioner_factory)
    await a.handle(message(Action.ADD, service()))
    bigip.state.pools[path_of()]["description"] = mark_of(instance="site-b")
    before = bigip.stats.writes

    update = await a.handle(message(Action.UPDATE, service(targets=(("10.0.0.9", 30080, 1),))))

    assert "held by another Interlook instance (site-b)" in update.error
    assert bigip.stats.writes == before


# -- hand-made objects -------------------------------------------------------------------

async def test_a_hand_made_virtual_server_on_the_destination_is_an_error_naming_no_service(bigip,
                                                                                          provisioner_factory):
    f5 = await provisioner_factory()
    await f5._bigip.request("POST", "/mgmt/tm/ltm/virtual", {
        "name": "team-web-prod", "partition": "Common", "description": "the web team's",
        "destination": "/Common/192.0.2.10:80", "ipProtocol": "tcp"})

    reply = await f5.handle(message(Action.ADD, service()))

    assert "already used by a virtual server of something other than Interlook" in reply.error
    assert "team-web-prod" not in reply.error
    assert bigip.state.virtuals["/Common/team-web-prod"]["description"] == "the web team's"


async def test_a_hand_made_pool_at_our_name_is_an_error_and_left_alone(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5._bigip.request("POST", "/mgmt/tm/ltm/pool", {"name": name_of(), "partition": "Common",
                                                           "description": "made by hand"})

    added = await f5.handle(message(Action.ADD, service()))
    deleted = await f5.handle(message(Action.DELETE, service()))

    assert "held by something other than Interlook" in added.error
    assert deleted.error == ""
    assert bigip.state.pools[path_of()]["description"] == "made by hand"


# -- objects from before instance ids -----------------------------------------------------

async def test_legacy_objects_of_the_entry_are_adopted_in_place_and_re_marked(bigip: F5Simulator,
                                                                              provisioner_factory):
    f5 = await provisioner_factory()
    await make_legacy(f5)
    f5 = await provisioner_factory()  # the upgraded version starts with them there

    first = await f5.handle(message(Action.ADD, service(targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 1)))))

    assert first.error == ""
    assert set(bigip.state.pools) == {LEGACY} and set(bigip.state.virtuals) == {LEGACY}  # kept its name
    assert bigip.state.pools[LEGACY]["description"] == mark_of()
    assert bigip.state.virtuals[LEGACY]["description"] == mark_of()
    assert {m["name"] for m in bigip.state.members[LEGACY].values()} == {"10.0.0.1:30080", "10.0.0.2:30080"}
    before = bigip.stats.writes
    again = await f5.handle(message(Action.ADD, service(targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 1)))))
    assert again.error == "" and bigip.stats.writes == before

    deleted = await f5.handle(message(Action.DELETE, service()))

    assert deleted.error == ""
    assert bigip.state.pools == {} and bigip.state.virtuals == {}
    # The legacy node names no instance: it might be any Interlook's, so it stays.
    assert set(bigip.state.nodes) == {"/Common/10.0.0.1"}


async def test_legacy_objects_are_never_swept_nor_taken_for_another_entry(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory, reconcile_interval=0.02)
    await make_legacy(a)  # for shop/web, which neither instance has

    other = await a.handle(message(Action.ADD, service("shop/other", public_ip="192.0.2.10")))
    await sweep(a)
    await sweep(b)

    assert "already used by a virtual server of another Service" in other.error
    assert await a._owners() == set() and await b._owners() == set()
    assert set(bigip.state.virtuals) == {LEGACY}
    assert bigip.state.pools[LEGACY]["description"] == LEGACY_MARK
    assert bigip.state.virtuals[LEGACY]["description"] == LEGACY_MARK


async def test_an_adopted_object_is_swept_as_ours_once_its_entry_is_gone(bigip: F5Simulator, provisioner_factory):
    live: dict[str, Service] = {}
    f5 = await provisioner_factory(entries=lambda: live, reconcile_interval=0.02)
    await make_legacy(f5)
    f5 = await provisioner_factory(entries=lambda: live, reconcile_interval=0.02)  # upgraded with them there
    assert (await f5.handle(message(Action.ADD, service()))).error == ""

    await sweep(f5)

    assert bigip.state.pools == {} and bigip.state.virtuals == {}


# -- policy mode ------------------------------------------------------------------------------

async def test_policy_mode_instances_get_their_own_rules(bigip: F5Simulator, provisioner_factory):
    a, b = await two_instances(provisioner_factory, update_mode="policy")

    replies = [await a.handle(message(Action.ADD, service(dns=("a.example.com",)))),
               await b.handle(message(Action.ADD, service(dns=("b.example.com",))))]
    deleted = await a.handle(message(Action.DELETE, service()))

    assert [r.error for r in replies] == ["", ""] and deleted.error == ""
    assert [r["name"] for r in bigip.state.rules[HTTP_POLICY]] == [name_of(instance="site-b")]
    assert set(bigip.state.pools) == {path_of(instance="site-b")}


async def test_a_host_routed_by_another_instance_is_an_error_naming_that_instance(bigip, provisioner_factory):
    a, b = await two_instances(provisioner_factory, update_mode="policy")
    await b.handle(message(Action.ADD, service("team/shop", dns=("shop.example.com",))))
    generation = bigip.state.policies[HTTP_POLICY]["generation"]

    reply = await a.handle(message(Action.ADD, service(dns=("www.example.com", "shop.example.com"))))

    assert ("host name shop.example.com is already routed by a rule of another Interlook instance (site-b)"
            in reply.error)
    assert "team" not in reply.error
    assert [r["name"] for r in bigip.state.rules[HTTP_POLICY]] == [name_of("team/shop", "site-b")]
    assert bigip.state.policies[HTTP_POLICY]["generation"] == generation
    assert bigip.state.drafts() == []


async def test_a_host_routed_by_a_hand_made_rule_is_an_error(bigip, provisioner_factory):
    bigip.state.rules[HTTP_POLICY].append({
        "name": "www-to-legacy-farm", "ordinal": 0, "description": "", "generation": 1,
        "conditions": [{"name": "0", "httpHost": True, "host": True, "equals": True, "request": True,
                        "values": ["web.example.com"]}], "actions": []})
    f5 = await provisioner_factory(update_mode="policy")

    reply = await f5.handle(message(Action.ADD, service()))

    assert "already routed by a rule of something other than Interlook" in reply.error
    assert [r["name"] for r in bigip.state.rules[HTTP_POLICY]] == ["www-to-legacy-farm"]


async def test_a_legacy_rule_is_adopted_in_place(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory(update_mode="policy")
    await f5._bigip.request("POST", "/mgmt/tm/ltm/pool", {"name": "interlook_shop_web", "partition": "Common",
                                                           "description": LEGACY_MARK})
    bigip.state.rules[HTTP_POLICY].append({
        "name": "interlook_shop_web", "ordinal": 0, "description": LEGACY_MARK, "generation": 1,
        "conditions": [{"name": "0", "httpHost": True, "host": True, "equals": True, "request": True,
                        "values": ["web.example.com"]}],
        "actions": [{"name": "0", "forward": True, "select": True, "pool": LEGACY, "request": True}]})
    f5 = await provisioner_factory(update_mode="policy")  # the upgraded version starts with them there

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    rules = bigip.state.rules[HTTP_POLICY]
    assert [(r["name"], r["description"]) for r in rules] == [("interlook_shop_web", mark_of())]
    assert set(bigip.state.pools) == {LEGACY}
    assert bigip.state.drafts() == []


async def test_legacy_names_are_not_read_when_none_existed_at_start_up(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    start = bigip.stats.requests

    await f5.handle(message(Action.ADD, service()))

    # Read and create the node, create the pool and the virtual server: nothing read at the legacy
    # name (before: two more reads for every new Service), nor at our own (test_f5ltm_create_first.py).
    assert bigip.stats.requests - start == 4
