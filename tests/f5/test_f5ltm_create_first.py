"""A new Service's pool and virtual server are created without reading first, and nothing that exists is overwritten.

An entry's first message in a process, when the start-up read showed
nothing at its legacy name, creates its objects straight away (two requests
instead of four).  If the name is taken meanwhile (a person, another
instance, an earlier process of ours), the BIG-IP refuses the create with
409: the entry is then read and handled as before, so the ownership rules
hold exactly as on the read-first path.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.messages import Action
from extensions.provisioners.f5ltm import F5Provisioner
from tests.f5.helpers import mark_of, message, name_of, path_of, service
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

POOLS = "/mgmt/tm/ltm/pool"
VIRTUALS = "/mgmt/tm/ltm/virtual"


def spy(f5: F5Provisioner) -> list[tuple[str, str]]:
    """Every request the provisioner sends from now on, as (method, path without query)."""
    sent: list[tuple[str, str]] = []
    client = f5._bigip
    send = client._send

    async def recording(method: str, path: str, body: Any, token: str | None) -> Any:
        sent.append((method, path.split("?")[0]))
        return await send(method, path, body, token)

    client._send = recording  # type: ignore[method-assign]
    return sent


def pool_path(entry: str = "shop/web") -> str:
    return f"{POOLS}/~Common~{name_of(entry)}"


def virtual_path(entry: str = "shop/web") -> str:
    return f"{VIRTUALS}/~Common~{name_of(entry)}"


async def with_node(f5: F5Provisioner) -> None:
    """The member's node, made once: what a second Service on the same host finds."""
    reply = await f5.handle(message(Action.ADD, service("shop/first", public_ip="192.0.2.11",
                                                        dns=("first.example.com",))))
    assert reply.error == ""


async def test_a_new_service_costs_two_creates_and_no_read(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await with_node(f5)
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert sent == [("POST", POOLS), ("POST", VIRTUALS)]
    pool = bigip.state.pools[path_of()]
    assert pool["description"] == mark_of()
    virtual = bigip.state.virtuals[path_of()]
    assert (virtual["destination"], virtual["pool"], virtual["description"]) == (
        "/Common/192.0.2.10:80", path_of(), mark_of())


async def test_a_pool_made_by_hand_at_the_name_is_an_error_and_stays_as_it_was(bigip: F5Simulator,
                                                                                provisioner_factory):
    f5 = await provisioner_factory()  # started with an empty partition: the entry counts as new
    await with_node(f5)
    await f5._bigip.request("POST", POOLS, {"name": name_of(), "partition": "Common", "description": "mine",
                                            "loadBalancingMode": "round-robin"})
    before = dict(bigip.state.pools[path_of()])
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert f"pool {path_of()} exists and is held by something other than Interlook" in reply.error
    assert sent == [("POST", POOLS), ("GET", pool_path())]  # refused, read, judged: nothing written
    assert bigip.state.pools[path_of()] == before
    assert path_of() not in bigip.state.virtuals


async def test_another_instances_pool_at_the_name_is_an_error_and_stays(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await with_node(f5)
    await f5._bigip.request("POST", POOLS, {"name": name_of(), "partition": "Common",
                                            "description": mark_of(instance="site-b")})
    before = dict(bigip.state.pools[path_of()])

    reply = await f5.handle(message(Action.ADD, service()))

    assert "held by another Interlook instance (site-b)" in reply.error
    assert bigip.state.pools[path_of()] == before


async def test_our_objects_made_meanwhile_are_read_and_brought_to_what_is_wanted(bigip: F5Simulator,
                                                                                 provisioner_factory):
    # An earlier process of this instance made them after this one's start-up read (or the read missed them).
    f5 = await provisioner_factory()
    await with_node(f5)
    await f5._bigip.request("POST", POOLS, {"name": name_of(), "partition": "Common", "description": mark_of(),
                                            "loadBalancingMode": "least-connections-member",
                                            "members": [{"name": "10.0.0.1:30080", "ratio": 1}]})
    await f5._bigip.request("POST", VIRTUALS, {
        "name": name_of(), "partition": "Common", "description": mark_of(), "destination": "/Common/192.0.2.99:80",
        "pool": path_of(), "ipProtocol": "tcp", "sourceAddressTranslation": {"type": "automap"}})
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert sent == [("POST", POOLS), ("GET", pool_path()),
                    ("POST", VIRTUALS), ("GET", virtual_path()), ("PATCH", virtual_path())]
    assert bigip.state.virtuals[path_of()]["destination"] == "/Common/192.0.2.10:80"


async def test_a_destination_held_by_another_virtual_server_is_still_named(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    assert (await f5.handle(message(Action.ADD, service("shop/first")))).error == ""  # on 192.0.2.10:80

    reply = await f5.handle(message(Action.ADD, service()))  # the same address and port

    assert "destination 192.0.2.10:80 is already used by a virtual server of another Service" in reply.error


async def test_later_messages_of_an_entry_read_first(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await with_node(f5)
    assert (await f5.handle(message(Action.ADD, service()))).error == ""
    sent = spy(f5)

    reply = await f5.handle(message(Action.UPDATE, service(targets=(("10.0.0.1", 30080, 3),))))

    assert reply.error == ""
    assert sent[0] == ("GET", pool_path())
    assert [m for m, _ in sent].count("POST") == 0
    assert {m["name"]: m["ratio"] for m in bigip.state.members[path_of()].values()} == {"10.0.0.1:30080": 3}


async def test_after_a_delete_the_entry_is_new_again(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await with_node(f5)
    assert (await f5.handle(message(Action.ADD, service()))).error == ""
    assert (await f5.handle(message(Action.DELETE, service()))).error == ""
    assert path_of() not in bigip.state.pools
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    # The node is read again (the delete let it go, and shop/first still uses it), then two creates.
    assert sent == [("GET", "/mgmt/tm/ltm/node/~Common~10.0.0.1"), ("POST", POOLS), ("POST", VIRTUALS)]


async def test_without_a_start_up_read_every_entry_is_read_first(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await with_node(f5)
    f5._legacy = None  # what a failed bulk read at start-up leaves: legacy names must be read too
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert sent[0] == ("GET", pool_path())


async def test_policy_mode_creates_the_pool_first_too(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory(update_mode="policy")
    await with_node(f5)
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    assert ("GET", pool_path()) not in sent
    assert ("POST", POOLS) in sent
    assert bigip.state.pools[path_of()]["description"] == mark_of()


async def test_after_the_start_up_view_expired_a_name_that_held_objects_is_read_first(bigip: F5Simulator,
                                                                                       provisioner_factory):
    first = await provisioner_factory()
    assert (await first.handle(message(Action.ADD, service()))).error == ""
    now = [1000.0]
    f5 = await provisioner_factory(clock=lambda: now[0])  # a restart: the objects are there at start-up
    now[0] += 3600  # a resync longer than the start-up view lives
    sent = spy(f5)

    reply = await f5.handle(message(Action.ADD, service()))

    assert reply.error == ""
    sent = [(m, p) for m, p in sent if not p.startswith("/mgmt/shared/authn")]  # the token expired too
    assert sent[0] == ("GET", pool_path())  # not a refused create
    assert [m for m, _ in sent].count("POST") == 0


async def test_a_refused_create_lets_go_of_the_node_it_made(bigip: F5Simulator, provisioner_factory):
    f5 = await provisioner_factory()
    await f5._bigip.request("POST", POOLS, {"name": name_of(), "partition": "Common", "description": "mine"})

    reply = await f5.handle(message(Action.ADD, service(targets=(("10.0.0.9", 30080, 1),))))

    assert "held by something other than Interlook" in reply.error
    assert "/Common/10.0.0.9" not in bigip.state.nodes  # made for the pool, let go when it was not ours


async def test_a_refused_create_leaves_another_instances_node_alone(bigip: F5Simulator, provisioner_factory):
    """The node another Interlook made for the same host is used, and never let go by us."""
    f5 = await provisioner_factory()
    await f5._bigip.request("POST", "/mgmt/tm/ltm/node", {"name": "10.0.0.9", "partition": "Common",
                                                         "address": "10.0.0.9",
                                                         "description": mark_of("node", instance="site-b")})
    await f5._bigip.request("POST", POOLS, {"name": name_of(), "partition": "Common", "description": "mine"})
    before = dict(bigip.state.nodes["/Common/10.0.0.9"])

    reply = await f5.handle(message(Action.ADD, service(targets=(("10.0.0.9", 30080, 1),))))

    assert "held by something other than Interlook" in reply.error
    assert bigip.state.nodes["/Common/10.0.0.9"] == before
