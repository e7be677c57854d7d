"""The orphan sweep: objects of entries that no longer exist are removed, others are kept."""

from __future__ import annotations

import asyncio

import pytest

from controller.extension import ExtensionContext
from controller.messages import Action, Service
from extensions.kit.orphans import OrphanSweep
from extensions.provisioners.f5ltm import F5Provisioner
from tests.f5.helpers import make_config, message, service
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]


async def test_objects_of_vanished_entries_are_swept_and_live_ones_kept(bigip: F5Simulator):
    live: dict[str, Service] = {}
    f5 = F5Provisioner(make_config(bigip), ExtensionContext("provisioner.f5ltm", entries=lambda: live))
    await f5.setup()
    try:
        kept, lost = service("shop/kept", public_ip="192.0.2.10"), service("shop/lost", public_ip="192.0.2.11")
        live["shop/kept"] = kept
        for svc in (kept, lost):
            assert (await f5.handle(message(Action.ADD, svc))).error == ""
        owners = await f5._owners()
        assert owners == {"shop/kept", "shop/lost"}
        sweep = OrphanSweep()
        assert sweep.confirmed(owners, live) == set()
        assert sweep.confirmed(await f5._owners(), live) == {"shop/lost"}
        await f5._unpublish(Service(name="shop/lost"))
        assert await f5._owners() == {"shop/kept"}
    finally:
        await f5.teardown()


async def test_the_background_sweep_runs_when_the_core_lends_its_entries(bigip: F5Simulator):
    live: dict[str, Service] = {}
    config = make_config(bigip, reconcile_interval=0.05)
    f5 = F5Provisioner(config, ExtensionContext("provisioner.f5ltm", entries=lambda: live))
    await f5.setup()
    try:
        assert (await f5.handle(message(Action.ADD, service("shop/lost")))).error == ""
        task = asyncio.create_task(f5.run_background())
        for _ in range(200):
            if not await f5._owners():
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert await f5._owners() == set()
    finally:
        await f5.teardown()
