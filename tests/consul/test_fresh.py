"""provisioner.consul's fresh entries: one that holds no record of ours is published without reading for nodes.

An entry is fresh when the start-up read found no record of it and this
process never wrote for it: its publish is one read per name (the services
of that name) and one transaction that creates every node, or none when one
exists; then the entry is read the full way, so what was there is a conflict
as it always was.  Each test counts the requests the provisioner sends.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from controller.messages import Action, Service
from extensions.provisioners.consul.client import MAX_RECORDS_PER_TXN, ConsulCatalog, ConsulException
from tests.consul.conftest import AgentAddress
from tests.consul.support import (
    TEST_INSTANCE,
    catalog_node,
    deregister,
    health_checks,
    message,
    owned_nodes,
    provisioner,
    register_foreign,
    remove_test_records,
    service,
)

pytestmark = [pytest.mark.integration, pytest.mark.consul]


def node_as_is(url: str, name: str) -> tuple[int, dict[str, str], str]:
    node = catalog_node(url, name)
    assert node is not None, f"{name} should be in Consul"
    return node["Node"]["ModifyIndex"], dict(node["Node"]["Meta"]), node["Node"]["Address"]


async def test_a_new_service_is_published_with_one_read_and_one_transaction(consul, consul_agent, unique,
                                                                            requests_sent: Counter[str]):
    name, entry = f"new-{unique}.example.com", f"shop/new-{unique}"
    requests_sent.clear()
    reply = await consul.handle(message(Action.ADD, service(entry, name, ip="10.20.0.7", port=8080)))
    assert reply.error == ""
    assert requests_sent == Counter({"GET": 1, "PUT": 1})
    node = catalog_node(consul_agent.url, name)
    assert node is not None and node["Node"]["Address"] == "10.20.0.7"
    assert node["Node"]["Meta"] == {"external-node": "true", "interlook-managed": "true",
                                    "interlook-owner": entry, "interlook-instance": TEST_INSTANCE}
    assert [(s["Service"], s["Address"], s["Port"]) for s in node["Services"].values()] == [(name, "10.20.0.7", 8080)]
    assert [(c["ServiceID"], c["Status"]) for c in health_checks(consul_agent.url, name)] == [(name, "passing")]


async def test_a_hand_made_node_at_a_fresh_services_name_is_the_same_conflict_and_stays_untouched(
        consul, consul_agent, unique):
    taken, free = f"hand-{unique}", f"free-{unique}"
    register_foreign(consul_agent.url, taken, "192.0.2.9")  # no Interlook mark, no service
    before = node_as_is(consul_agent.url, taken)
    svc = service(f"shop/hand-{unique}", free, taken)
    try:
        # Today's full read path (no start-up read: every entry is read) says what the error must be.
        expected = (await provisioner(consul_agent.url).handle(message(Action.ADD, svc))).error
        assert "something other than Interlook" in expected

        assert (await consul.handle(message(Action.ADD, svc))).error == expected
        assert node_as_is(consul_agent.url, taken) == before
        # One transaction for every name: the free one was not written either.
        assert catalog_node(consul_agent.url, free) is None
        assert owned_nodes(consul_agent.url, svc.name) == []
    finally:
        deregister(consul_agent.url, taken)


async def test_a_node_of_another_instance_at_a_fresh_services_name_is_a_conflict_and_stays_untouched(
        consul, consul_agent, unique):
    name = f"theirs-{unique}"
    other = provisioner(consul_agent.url, instance="il-other-cluster")
    assert (await other.handle(message(Action.ADD, service(f"shop/theirs-{unique}", name, ip="10.30.0.1")))).error == ""
    before = node_as_is(consul_agent.url, name)

    reply = await consul.handle(message(Action.ADD, service(f"shop/mine-{unique}", name, ip="10.20.0.1")))
    assert "held by another Interlook instance (il-other-cluster)" in reply.error
    assert node_as_is(consul_agent.url, name) == before


async def test_a_fresh_services_delete_makes_no_request(consul, unique, requests_sent: Counter[str]):
    requests_sent.clear()
    reply = await consul.handle(message(Action.DELETE, Service(name=f"shop/never-{unique}")))
    assert reply.error == ""
    assert sum(requests_sent.values()) == 0


async def test_a_published_services_delete_removes_its_nodes(consul, consul_agent, unique):
    entry, names = f"shop/gone-{unique}", (f"g1-{unique}", f"g2-{unique}.example.com")
    assert (await consul.handle(message(Action.ADD, service(entry, *names)))).error == ""
    assert owned_nodes(consul_agent.url, entry) == sorted(names)
    assert (await consul.handle(message(Action.DELETE, Service(name=entry)))).error == ""
    assert owned_nodes(consul_agent.url, entry) == []


async def test_after_a_delete_the_entry_is_fresh_again(consul, consul_agent, unique, requests_sent: Counter[str]):
    entry, name = f"shop/again-{unique}", f"again-{unique}.example.com"
    assert (await consul.handle(message(Action.ADD, service(entry, name)))).error == ""
    assert (await consul.handle(message(Action.UPDATE, service(entry, name, ip="10.20.0.9")))).error == ""
    assert (await consul.handle(message(Action.DELETE, Service(name=entry)))).error == ""
    assert owned_nodes(consul_agent.url, entry) == []
    requests_sent.clear()

    reply = await consul.handle(message(Action.ADD, service(entry, name)))

    assert reply.error == ""
    assert requests_sent == Counter({"GET": 1, "PUT": 1})
    assert owned_nodes(consul_agent.url, entry) == [name]


async def test_a_conflict_on_a_fresh_service_is_read_in_full_once_then_never_fresh(consul, consul_agent, unique,
                                                                                 requests_sent: Counter[str]):
    name = f"busy-{unique}"
    register_foreign(consul_agent.url, name, "192.0.2.11")
    svc = service(f"shop/busy-{unique}", name)
    try:
        requests_sent.clear()
        assert "something other than Interlook" in (await consul.handle(message(Action.ADD, svc))).error
        # Fresh: 1 read + the refused transaction; then the full path: node, service, its checks, entry's nodes.
        assert requests_sent == Counter({"GET": 5, "PUT": 1})
        requests_sent.clear()
        assert (await consul.handle(message(Action.DELETE, Service(name=svc.name)))).error == ""
        assert requests_sent == Counter({"GET": 1})  # no longer fresh: its nodes are listed
    finally:
        deregister(consul_agent.url, name)


async def test_after_a_restart_an_entry_that_held_records_is_not_fresh(consul_agent: AgentAddress, unique: str):
    entry, a, b = f"shop/moved-{unique}", f"a-{unique}.example", f"b-{unique}.example"
    before = provisioner(consul_agent.url)
    await before.setup()
    assert (await before.handle(message(Action.ADD, service(entry, a)))).error == ""
    await before.teardown()

    after = provisioner(consul_agent.url)
    await after.setup()
    try:
        assert (await after.handle(message(Action.ADD, service(entry, b)))).error == ""
        assert owned_nodes(consul_agent.url, entry) == [b]
        assert catalog_node(consul_agent.url, a) is None
    finally:
        await after.teardown()
        remove_test_records(consul_agent.url, unique)


async def test_activating_again_reads_who_holds_records_anew(consul_agent: AgentAddress, unique: str):
    """A standby that becomes active again sees what the other replica published meanwhile."""
    entry, name = f"shop/handover-{unique}", f"handover-{unique}"
    replica = provisioner(consul_agent.url)
    await replica.setup()
    await replica.teardown()  # standby
    assert (await provisioner(consul_agent.url).handle(message(Action.ADD, service(entry, name)))).error == ""

    await replica.setup()  # active again
    try:
        assert (await replica.handle(message(Action.DELETE, Service(name=entry)))).error == ""
        assert catalog_node(consul_agent.url, name) is None
    finally:
        await replica.teardown()
        remove_test_records(consul_agent.url, unique)


async def test_without_the_bulk_read_every_entry_is_read_in_full(consul_agent: AgentAddress, unique: str,
                                                                 requests_sent: Counter[str],
                                                                 monkeypatch: pytest.MonkeyPatch):
    async def refused(self: ConsulCatalog) -> Any:
        raise ConsulException("403 no UI endpoint for this token")

    monkeypatch.setattr(ConsulCatalog, "managed_records", refused)
    prov = provisioner(consul_agent.url)
    await prov.setup()
    name, entry = f"full-{unique}", f"shop/full-{unique}"
    try:
        requests_sent.clear()
        assert (await prov.handle(message(Action.ADD, service(entry, name, ip="10.20.0.8")))).error == ""
        assert requests_sent == Counter({"GET": 3, "PUT": 1})  # node (404), service, entry's nodes; the write
        assert node_as_is(consul_agent.url, name)[2] == "10.20.0.8"
        requests_sent.clear()
        assert (await prov.handle(message(Action.DELETE, Service(name=f"shop/never-{unique}")))).error == ""
        assert requests_sent == Counter({"GET": 1})
    finally:
        await prov.teardown()
        remove_test_records(consul_agent.url, unique)


async def test_more_names_than_one_transaction_holds_are_published_the_full_way(consul, consul_agent, unique,
                                                                               requests_sent: Counter[str]):
    entry = f"shop/many-{unique}"
    names = [f"n{i}-{unique}" for i in range(MAX_RECORDS_PER_TXN + 1)]
    requests_sent.clear()
    assert (await consul.handle(message(Action.ADD, service(entry, *names)))).error == ""
    assert requests_sent["PUT"] == len(names)  # one write per record
    assert owned_nodes(consul_agent.url, entry) == sorted(names)
