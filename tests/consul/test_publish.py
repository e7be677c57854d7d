"""provisioner.consul against a real agent: register, rename, delete, re-add, ownership."""

from __future__ import annotations

import pytest

from controller.messages import Action
from tests.consul.conftest import dns_lookup
from tests.consul.support import (
    TEST_INSTANCE,
    catalog_node,
    deregister,
    health_checks,
    message,
    owned_nodes,
    provisioner,
    register_foreign,
    service,
)

pytestmark = [pytest.mark.integration, pytest.mark.consul]


async def test_add_registers_a_node_a_service_and_a_passing_check(consul, consul_agent, unique):
    name = f"app-{unique}"
    reply = await consul.handle(message(Action.ADD, service("shop/web", name, ip="10.20.0.7")))
    assert reply.error == ""
    assert reply.extra == {"generation": "1"}
    node = catalog_node(consul_agent.url, name)
    assert node is not None
    assert node["Node"]["Address"] == "10.20.0.7"
    assert node["Node"]["Meta"] == {"external-node": "true", "interlook-managed": "true",
                                    "interlook-owner": "shop/web", "interlook-instance": TEST_INSTANCE}
    assert [(s["Service"], s["Port"]) for s in node["Services"].values()] == [(name, 80)]
    assert [(c["ServiceID"], c["Status"]) for c in health_checks(consul_agent.url, name)] == [(name, "passing")]


async def test_registration_answers_through_consul_dns(consul, consul_agent, dig, unique):
    plain, dotted = f"app-{unique}", f"app-{unique}.example.com"
    reply = await consul.handle(message(Action.ADD, service("shop/dns", plain, dotted, ip="10.20.0.8")))
    assert reply.error == ""
    assert dns_lookup(dig, consul_agent.dns_port, f"{plain}.service.consul") == ["10.20.0.8"]
    assert dns_lookup(dig, consul_agent.dns_port, f"{plain}.node.consul") == ["10.20.0.8"]
    # Consul's service lookup takes one label as the service name; a dotted
    # name answers as a node (docs/consul.md: the CoreDNS rewrite).
    assert dns_lookup(dig, consul_agent.dns_port, f"{dotted}.node.consul") == ["10.20.0.8"]


async def test_ports_follow_tls_then_the_service_port_then_the_config(consul, consul_agent, unique):
    default = provisioner(consul_agent.url)
    configured = provisioner(consul_agent.url, service_port=8080, tls_service_port=8443)
    cases = [
        (default, service("p/tls", f"tls-{unique}", tls=True), 443),
        (default, service("p/own", f"own-{unique}", port=9000), 9000),
        (configured, service("p/cfg", f"cfg-{unique}", port=9000), 8080),
        (configured, service("p/cfgtls", f"cfgtls-{unique}", tls=True), 8443),
    ]
    for prov, svc, port in cases:
        assert (await prov.handle(message(Action.ADD, svc))).error == ""
        node = catalog_node(consul_agent.url, svc.dns_names[0])
        assert node is not None
        assert [s["Port"] for s in node["Services"].values()] == [port]


async def test_renamed_hosts_remove_the_names_that_left(consul, consul_agent, unique):
    a, b, c = (f"{x}-{unique}" for x in "abc")
    entry = f"shop/rename-{unique}"
    assert (await consul.handle(message(Action.ADD, service(entry, a, b)))).error == ""
    assert owned_nodes(consul_agent.url, entry) == sorted([a, b])
    # The core keeps only the new service: what left is found in Consul, by owner.
    assert (await consul.handle(message(Action.UPDATE, service(entry, b, c)))).error == ""
    assert owned_nodes(consul_agent.url, entry) == sorted([b, c])
    assert catalog_node(consul_agent.url, a) is None


async def test_a_new_public_ip_updates_the_record(consul, consul_agent, unique):
    name = f"moved-{unique}"
    assert (await consul.handle(message(Action.ADD, service("shop/moved", name, ip="10.20.0.1")))).error == ""
    assert (await consul.handle(message(Action.ADD, service("shop/moved", name, ip="10.20.0.2")))).error == ""
    node = catalog_node(consul_agent.url, name)
    assert node is not None and node["Node"]["Address"] == "10.20.0.2"


async def test_delete_removes_every_name_and_deleting_again_succeeds(consul, consul_agent, unique):
    entry = f"shop/delete-{unique}"
    names = (f"d1-{unique}", f"d2-{unique}.example.com")
    assert (await consul.handle(message(Action.ADD, service(entry, *names)))).error == ""
    reply = await consul.handle(message(Action.DELETE, service(entry, *names)))
    assert reply.error == ""
    assert owned_nodes(consul_agent.url, entry) == []
    assert all(catalog_node(consul_agent.url, n) is None for n in names)
    assert (await consul.handle(message(Action.DELETE, service(entry, *names)))).error == ""


async def test_readding_an_unchanged_service_writes_nothing(consul, consul_agent, unique, monkeypatch):
    name = f"same-{unique}"
    svc = service("shop/same", name)
    assert (await consul.handle(message(Action.ADD, svc))).error == ""
    before = catalog_node(consul_agent.url, name)
    writes: list[str] = []
    real_write = consul.catalog.write
    monkeypatch.setattr(consul.catalog, "write", lambda record, index: (writes.append(record.name),
                                                                          real_write(record, index)))
    assert (await consul.handle(message(Action.ADD, svc))).error == ""
    after = catalog_node(consul_agent.url, name)
    assert writes == []
    assert before is not None and after is not None
    assert after["Node"]["ModifyIndex"] == before["Node"]["ModifyIndex"]
    assert after["Services"][name]["ModifyIndex"] == before["Services"][name]["ModifyIndex"]


async def test_a_foreign_node_is_an_error_and_stays_untouched(consul, consul_agent, unique):
    name = f"foreign-{unique}"
    register_foreign(consul_agent.url, name, "192.0.2.9", service_name=name)
    before = catalog_node(consul_agent.url, name)
    try:
        reply = await consul.handle(message(Action.ADD, service("shop/thief", name, f"mine-{unique}")))
        assert "something other than Interlook" in reply.error
        assert name in reply.error
        assert catalog_node(consul_agent.url, name) == before
        # Nothing at all was written for the entry: a conflict stops the whole step.
        assert owned_nodes(consul_agent.url, "shop/thief") == []
        assert (await consul.handle(message(Action.DELETE, service("shop/thief", name)))).error == ""
        assert catalog_node(consul_agent.url, name) == before
    finally:
        deregister(consul_agent.url, name)


async def test_a_service_of_that_name_on_another_node_is_an_error(consul, consul_agent, unique):
    name = f"svc-{unique}"
    register_foreign(consul_agent.url, f"host-{unique}", "192.0.2.10", service_name=name)
    try:
        reply = await consul.handle(message(Action.ADD, service("shop/svc", name)))
        assert f"service on node host-{unique}" in reply.error
        assert catalog_node(consul_agent.url, name) is None
    finally:
        deregister(consul_agent.url, f"host-{unique}")


async def test_a_name_owned_by_another_entry_is_an_error(consul, consul_agent, unique):
    name = f"shared-{unique}"
    assert (await consul.handle(message(Action.ADD, service("team-a/web", name, ip="10.20.0.3")))).error == ""
    reply = await consul.handle(message(Action.ADD, service("team-b/web", name, ip="10.20.0.4")))
    assert "held by another Service" in reply.error
    assert "team-a" not in reply.error  # never another namespace's Service
    node = catalog_node(consul_agent.url, name)
    assert node is not None and node["Node"]["Meta"]["interlook-owner"] == "team-a/web"
    assert node["Node"]["Address"] == "10.20.0.3"
    # team-b's delete must not take team-a's record with it.
    assert (await consul.handle(message(Action.DELETE, service("team-b/web", name)))).error == ""
    assert catalog_node(consul_agent.url, name) is not None


async def test_a_service_without_public_ip_is_an_error(consul, unique):
    reply = await consul.handle(message(Action.ADD, service("shop/noip", f"noip-{unique}", ip="")))
    assert "no public IP" in reply.error


async def test_invalid_dns_names_are_an_error(consul):
    reply = await consul.handle(message(Action.ADD, service("shop/bad", "under_score.example.com")))
    assert "not valid DNS names" in reply.error
