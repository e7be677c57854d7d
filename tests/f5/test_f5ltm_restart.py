"""provisioner.f5ltm after a restart: the start-up view of the partition answers unchanged entries (known.py)."""

from __future__ import annotations

import pytest

from controller.messages import Action, Service
from extensions.provisioners.f5ltm import provisioner
from tests.f5.helpers import message, path_of, service, writes
from tests.simulators.f5 import F5Simulator

pytestmark = [pytest.mark.integration, pytest.mark.f5]

NAMES = [f"shop/web-{i}" for i in range(12)]


def requests(bigip: F5Simulator) -> int:
    return bigip.stats.requests


def numbered(i: int) -> Service:
    return service(NAMES[i], public_ip=f"192.0.2.{10 + i}", dns=(f"web-{i}.example.com",))


@pytest.mark.parametrize("mode", ["vs", "policy"])
async def test_a_restart_confirms_unchanged_services_without_a_request(bigip, provisioner_factory, mode,
                                                                        monkeypatch):
    monkeypatch.setattr(provisioner, "PAGE", 5)  # several pages of each collection
    before = await provisioner_factory(update_mode=mode)
    for i in range(len(NAMES)):
        assert (await before.handle(message(Action.ADD, numbered(i)))).error == ""

    after = await provisioner_factory(update_mode=mode)
    start_requests, start_writes = requests(bigip), writes(bigip)
    for i in range(len(NAMES)):
        assert (await after.handle(message(Action.ADD, numbered(i)))).error == ""

    assert requests(bigip) - start_requests == 0
    assert writes(bigip) - start_writes == 0


async def test_a_service_changed_while_down_is_repaired_after_a_restart(bigip, provisioner_factory):
    before = await provisioner_factory()
    await before.handle(message(Action.ADD, service("shop/web")))
    await before.handle(message(Action.ADD, service("shop/api", public_ip="192.0.2.11")))
    del bigip.state.virtuals[path_of("shop/api")]  # someone removed it meanwhile

    after = await provisioner_factory()
    changed = await after.handle(message(Action.ADD, service("shop/web", targets=(("10.0.0.9", 30080, 3),))))
    repaired = await after.handle(message(Action.ADD, service("shop/api", public_ip="192.0.2.11")))

    assert changed.error == "" and repaired.error == ""
    assert {m["name"]: m["ratio"] for m in bigip.state.members[path_of("shop/web")].values()} == {
        "10.0.0.9:30080": 3}
    assert path_of("shop/api") in bigip.state.virtuals


async def test_the_start_up_view_answers_an_entry_once(bigip, provisioner_factory):
    before = await provisioner_factory()
    await before.handle(message(Action.ADD, service("shop/web")))

    after = await provisioner_factory()
    await after.handle(message(Action.ADD, service("shop/web")))
    await after.handle(message(Action.DELETE, service("shop/web")))
    again = await after.handle(message(Action.ADD, service("shop/web")))

    assert again.error == ""
    assert path_of("shop/web") in bigip.state.virtuals and path_of("shop/web") in bigip.state.pools
