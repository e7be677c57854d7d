"""provisioner.consul after a restart: the start-up read of our records answers unchanged entries (records.Known)."""

from __future__ import annotations

from collections import Counter

import pytest

from controller.messages import Action
from tests.consul.conftest import AgentAddress
from tests.consul.support import catalog_node, deregister, message, provisioner, remove_test_records, service

pytestmark = [pytest.mark.integration, pytest.mark.consul]


async def test_a_restart_confirms_unchanged_entries_without_a_request(consul_agent: AgentAddress, unique: str,
                                                                      requests_sent: Counter[str]):
    entries = [service(f"shop/web-{i}", f"web-{i}.{unique}.example.com", f"www-{i}.{unique}.example.com")
               for i in range(5)]
    before = provisioner(consul_agent.url)
    await before.setup()
    for svc in entries:
        assert (await before.handle(message(Action.ADD, svc))).error == ""
    await before.teardown()

    after = provisioner(consul_agent.url)
    await after.setup()
    requests_sent.clear()
    try:
        for svc in entries:
            assert (await after.handle(message(Action.ADD, svc))).error == ""
        assert sum(requests_sent.values()) == 0
    finally:
        await after.teardown()
        remove_test_records(consul_agent.url, unique)


async def test_an_entry_changed_or_tampered_with_while_down_is_repaired(consul_agent: AgentAddress, unique: str):
    web, api = f"web.{unique}.example.com", f"api.{unique}.example.com"
    before = provisioner(consul_agent.url)
    await before.setup()
    await before.handle(message(Action.ADD, service("shop/web", web)))
    await before.handle(message(Action.ADD, service("shop/api", api)))
    await before.teardown()
    deregister(consul_agent.url, api)  # someone removed it meanwhile

    after = provisioner(consul_agent.url)
    await after.setup()
    try:
        moved = await after.handle(message(Action.ADD, service("shop/web", web, ip="10.20.0.9")))
        repaired = await after.handle(message(Action.ADD, service("shop/api", api)))
        assert moved.error == "" and repaired.error == ""
        assert (catalog_node(consul_agent.url, web) or {})["Node"]["Address"] == "10.20.0.9"
        assert catalog_node(consul_agent.url, api) is not None
    finally:
        await after.teardown()
        remove_test_records(consul_agent.url, unique)
