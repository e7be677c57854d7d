"""The background reconcile: records of entries that no longer exist go, nothing else does."""

from __future__ import annotations

import asyncio

import pytest

from controller.messages import Action, Message, Service
from tests.consul.agent import ConsulAgent
from tests.consul.support import catalog_node, message, provisioner, register_foreign, service

pytestmark = [pytest.mark.integration, pytest.mark.consul]


async def _publish(url: str, *services: Service) -> None:
    writer = provisioner(url)
    for svc in services:
        assert (await writer.handle(message(Action.ADD, svc))).error == ""


async def test_orphans_go_on_the_second_pass_and_live_or_foreign_records_stay(private_agent: ConsulAgent):
    url = private_agent.url
    live = service("shop/live", "live-web")
    await _publish(url, live, service("shop/crashed", "orphan-a", "orphan-b"))
    register_foreign(url, "foreign-web", "192.0.2.20", service_name="foreign-web")
    entries = {"shop/live": live}
    prov = provisioner(url, entries=entries)
    await prov.setup()

    # First pass: only suspects; an entry the core has not loaded yet looks the same.
    sweep = prov.orphan_sweep()
    assert await sweep.run_pass() == set()
    assert sweep.suspects == {"shop/crashed"}
    assert catalog_node(url, "orphan-a") is not None

    assert await sweep.run_pass() == {"shop/crashed"}
    assert catalog_node(url, "orphan-a") is None
    assert catalog_node(url, "orphan-b") is None
    assert catalog_node(url, "live-web") is not None
    assert catalog_node(url, "foreign-web") is not None


async def test_an_entry_that_reappears_between_passes_keeps_its_records(private_agent: ConsulAgent):
    url = private_agent.url
    late = service("shop/late", "late-web")
    await _publish(url, late)
    entries: dict[str, Service] = {}
    prov = provisioner(url, entries=entries)
    sweep = prov.orphan_sweep()
    await sweep.run_pass()
    assert sweep.suspects == {"shop/late"}
    entries["shop/late"] = late  # the core loaded it in the meantime
    assert await sweep.run_pass() == set()
    assert catalog_node(url, "late-web") is not None


async def test_the_running_extension_reconciles_in_the_background(private_agent: ConsulAgent):
    url = private_agent.url
    await _publish(url, service("shop/gone", "gone-web"))
    prov = provisioner(url, reconcile_interval=0.1)
    receive: asyncio.Queue[Message] = asyncio.Queue()
    send: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(prov.start(receive, send))
    try:
        await prov.wait_ready()
        for _ in range(300):  # a deadline for a wait, not a speed requirement
            if catalog_node(url, "gone-web") is None:
                break
            await asyncio.sleep(0.1)
        assert catalog_node(url, "gone-web") is None
    finally:
        await prov.stop()
        await task
