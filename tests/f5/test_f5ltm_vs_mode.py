"""provisioner.f5ltm in ``vs`` mode against the BIG-IP simulator: one pool and one virtual server per service."""

from __future__ import annotations

import pytest

from controller.messages import Action
from tests.f5.helpers import INSTANCE, SUFFIX, mark_of, message, path_of, service
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

POOL = path_of()


def members(bigip: F5Simulator, pool: str = POOL) -> dict[str, int]:
    return {m["name"]: m["ratio"] for m in bigip.state.members[pool].values()}


async def test_add_creates_pool_and_virtual_server_marked_as_interlooks(bigip, provisioner_factory):
    f5 = await provisioner_factory(monitor_name="http")
    svc = service(targets=(("10.0.0.1", 30080, 2), ("10.0.0.2", 30080, 1)))

    reply = await f5.handle(message(Action.ADD, svc))

    assert reply.error == ""
    assert reply.extra == {"generation": "1"}
    pool = bigip.state.pools[POOL]
    assert pool["description"] == mark_of()
    assert pool["loadBalancingMode"] == "least-connections-member"
    assert pool["monitor"] == "/Common/http"
    assert members(bigip) == {"10.0.0.1:30080": 2, "10.0.0.2:30080": 1}
    virtual = bigip.state.virtuals[POOL]
    assert virtual["destination"] == "/Common/192.0.2.10:80"
    assert virtual["pool"] == POOL
    assert virtual["ipProtocol"] == "tcp"
    assert virtual["sourceAddressTranslation"] == {"type": "automap"}
    assert virtual["description"] == mark_of()
    assert bigip.state.nodes["/Common/10.0.0.1"]["description"] == f"interlook:{INSTANCE}:node {SUFFIX}"


async def test_second_identical_message_writes_nothing(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    svc = service(targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 3)))
    assert (await f5.handle(message(Action.ADD, svc))).error == ""
    before = bigip.stats.writes

    assert (await f5.handle(message(Action.ADD, svc))).error == ""
    assert (await f5.handle(message(Action.UPDATE, svc))).error == ""

    assert bigip.stats.writes == before


async def test_members_are_compared_as_a_set(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    targets = (("10.0.0.3", 30080, 1), ("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 1))
    await f5.handle(message(Action.ADD, service(targets=targets)))
    # The appliance lists members in its own order: shuffle ours and check nothing is rewritten.
    pool_members = bigip.state.members[POOL]
    bigip.state.members[POOL] = dict(reversed(list(pool_members.items())))
    before = bigip.stats.writes

    reply = await f5.handle(message(Action.ADD, service(targets=tuple(reversed(targets)))))

    assert reply.error == ""
    assert bigip.stats.writes == before


async def test_update_reconciles_members_and_weights(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service(targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 1)))))

    reply = await f5.handle(message(Action.UPDATE, service(targets=(("10.0.0.2", 30080, 4),
                                                                    ("10.0.0.3", 30080, 1)))))

    assert reply.error == ""
    assert members(bigip) == {"10.0.0.2:30080": 4, "10.0.0.3:30080": 1}
    # The node Interlook created for the departed member is gone; the others stay.
    assert "/Common/10.0.0.1" not in bigip.state.nodes
    assert {"/Common/10.0.0.2", "/Common/10.0.0.3"} <= set(bigip.state.nodes)


async def test_tls_change_moves_the_virtual_server_to_the_https_port(bigip, provisioner_factory):
    f5 = await provisioner_factory(https_port=8443)
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.UPDATE, service(tls=True)))

    assert reply.error == ""
    assert bigip.state.virtuals[POOL]["destination"] == "/Common/192.0.2.10:8443"


async def test_public_ip_change_moves_the_destination_and_service_port_does_not(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.UPDATE, service(public_ip="192.0.2.99", port=8080)))

    assert reply.error == ""
    assert bigip.state.virtuals[POOL]["destination"].startswith("/Common/192.0.2.99:")
    assert not bigip.state.virtuals[POOL]["destination"].endswith(":8080")


async def test_dns_name_change_needs_no_write_in_vs_mode(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service()))
    before = bigip.stats.writes

    reply = await f5.handle(message(Action.UPDATE, service(dns=("other.example.com",))))

    assert reply.error == ""
    assert bigip.stats.writes == before


async def test_delete_removes_virtual_server_then_pool_and_its_nodes(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service()))

    reply = await f5.handle(message(Action.DELETE, service()))

    assert reply.error == ""
    assert bigip.state.virtuals == {}
    assert bigip.state.pools == {}
    assert bigip.state.nodes == {}


async def test_deleting_what_is_already_gone_succeeds(bigip, provisioner_factory):
    f5 = await provisioner_factory()

    reply = await f5.handle(message(Action.DELETE, service(name="shop/never-deployed")))

    assert reply.error == ""
    assert bigip.stats.writes == 0


async def test_objects_of_someone_else_are_never_changed(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service()))
    bigip.state.pools[POOL]["description"] = "hand made by the network team"
    before = bigip.stats.writes

    update = await f5.handle(message(Action.UPDATE, service(targets=(("10.0.0.9", 30080, 1),))))
    delete = await f5.handle(message(Action.DELETE, service()))

    assert "held by something other than Interlook" in update.error
    assert delete.error == ""  # only its own virtual server went away
    assert POOL in bigip.state.pools
    assert POOL not in bigip.state.virtuals
    assert bigip.stats.writes == before + 1


async def test_nodes_shared_with_another_pool_stay(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service("shop/web")))
    await f5.handle(message(Action.ADD, service("shop/api", public_ip="192.0.2.11")))

    reply = await f5.handle(message(Action.DELETE, service("shop/web")))

    assert reply.error == ""
    assert "/Common/10.0.0.1" in bigip.state.nodes
    assert list(bigip.state.pools) == [path_of("shop/api")]


async def test_missing_public_ip_is_an_error_before_any_write(bigip, provisioner_factory):
    f5 = await provisioner_factory()

    reply = await f5.handle(message(Action.ADD, service(public_ip="")))

    assert "no public IP" in reply.error
    assert bigip.stats.writes == 0


async def test_partition_is_used_for_every_object(bigip, provisioner_factory):
    bigip.state.partitions.add("Apps")
    f5 = await provisioner_factory(partition="Apps")

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert path_of(partition="Apps") in bigip.state.pools
    assert bigip.state.virtuals[path_of(partition="Apps")]["destination"] == "/Apps/192.0.2.10:80"
    assert "/Apps/10.0.0.1" in bigip.state.nodes


async def test_ipv6_targets_and_public_ip(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    svc = service(targets=(("2001:db8::1", 30080, 1),), public_ip="2001:db8:ffff::10")

    first = await f5.handle(message(Action.ADD, svc))
    before = bigip.stats.writes
    second = await f5.handle(message(Action.ADD, svc))

    assert first.error == "" and second.error == ""
    assert members(bigip) == {"2001:db8::1.30080": 1}
    assert bigip.state.virtuals[POOL]["destination"] == "/Common/2001:db8:ffff::10.80"
    assert bigip.stats.writes == before
