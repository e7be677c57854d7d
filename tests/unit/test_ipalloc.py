"""provisioner.ipalloc: the built-in pool, with the memory and file stores."""

from __future__ import annotations

import asyncio
import json

import pytest

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.instance import Identity
from controller.messages import Action, Message, Service
from extensions.kit.orphans import OrphanSweep
from extensions.kit.ownership import Mark
from extensions.provisioners.ipalloc import FileStore, IPAllocConfig, IPAllocProvisioner, MemoryStore
from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE


def config(**keys: str) -> IPAllocConfig:
    report = Report()
    cfg = IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
    assert not report.errors, report.errors
    return cfg


async def started(cfg: IPAllocConfig, store=None) -> IPAllocProvisioner:
    services = {STORE_SERVICE: store} if store is not None else {}
    prov = IPAllocProvisioner(cfg, ExtensionContext("provisioner.ipalloc", services=services))
    await prov.setup()
    return prov


def add(name: str, **kw) -> Message:
    return Message(Action.ADD, Service(name=name, **kw), extra={"generation": "1"})


def delete(name: str) -> Message:
    return Message(Action.DELETE, Service(name=name))


async def test_network_and_broadcast_are_never_given():
    prov = await started(config(network_cidr="192.0.2.0/30"))
    first = await prov.handle(add("a"))
    second = await prov.handle(add("b"))
    third = await prov.handle(add("c"))
    assert {first.service.public_ip, second.service.public_ip} == {"192.0.2.1", "192.0.2.2"}
    assert "no free address" in third.error


async def test_ip_start_and_ip_end_are_honoured():
    prov = await started(config(network_cidr="10.0.0.0/24", ip_start="10.0.0.250", ip_end="10.0.0.255"))
    ips = [(await prov.handle(add(f"s{i}"))).service.public_ip for i in range(6)]
    assert ips[:5] == ["10.0.0.250", "10.0.0.251", "10.0.0.252", "10.0.0.253", "10.0.0.254"]
    assert ips[5] == ""  # .255 is the broadcast address even though ip_end names it


async def test_a_service_keeps_its_address():
    prov = await started(config(network_cidr="10.0.0.0/24"))
    first = await prov.handle(add("ns/web"))
    again = await prov.handle(add("ns/web"))
    assert first.service.public_ip == again.service.public_ip == "10.0.0.1"


async def test_delete_frees_the_address_and_unknown_delete_is_fine():
    prov = await started(config(network_cidr="10.0.0.0/30"))
    await prov.handle(add("a"))
    await prov.handle(add("b"))
    freed = await prov.handle(delete("a"))
    assert freed.error == "" and freed.service.public_ip == ""
    assert (await prov.handle(add("c"))).service.public_ip == "10.0.0.1"
    assert (await prov.handle(delete("never-seen"))).error == ""


async def test_requested_ip_is_given_or_the_step_fails():
    prov = await started(config(network_cidr="10.0.0.0/24", ip_start="10.0.0.10", ip_end="10.0.0.20"))
    ok = await prov.handle(add("a", requested_ip="10.0.0.15"))
    assert ok.service.public_ip == "10.0.0.15"
    taken = await prov.handle(add("b", requested_ip="10.0.0.15"))
    assert "already given to a" in taken.error
    outside = await prov.handle(add("c", requested_ip="10.0.0.99"))
    assert "not in the pool" in outside.error


async def test_no_address_is_given_twice_under_concurrency():
    store = MemoryStore()
    prov = await started(config(network_cidr="10.1.0.0/22"), store)
    replies = await asyncio.gather(*(prov.handle(add(f"svc{i}")) for i in range(500)))
    ips = [r.service.public_ip for r in replies]
    assert all(ips) and len(set(ips)) == 500


class SlowSharedStore(MemoryStore):
    """A store with a round trip (like the API server), some addresses held by another process."""

    def __init__(self, held_elsewhere: dict[str, str]):
        super().__init__()
        self.elsewhere = dict(held_elsewhere)
        self.in_flight = 0
        self.most_in_flight = 0

    async def claim(self, ip: str, owner: str, pool: str = "") -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if ip in self.elsewhere:
                return self.elsewhere[ip]
            return await super().claim(ip, owner, pool)
        finally:
            self.in_flight -= 1


async def test_allocations_overlap_and_still_never_share_an_address():
    # Addresses another replica took after our start-up: our claims for them fail and we pick on.
    store = SlowSharedStore({"10.3.0.2": "other/a", "10.3.0.5": "other/b"})
    prov = await started(config(network_cidr="10.3.0.0/24"), store)
    replies = await asyncio.gather(*(prov.handle(add(f"svc{i}")) for i in range(100)))
    ips = [r.service.public_ip for r in replies]
    assert all(ips) and len(set(ips)) == 100
    assert not {"10.3.0.2", "10.3.0.5"} & set(ips)
    assert store.most_in_flight > 1  # not one round trip after the other


async def test_a_requested_address_being_claimed_by_another_service_is_refused():
    store = SlowSharedStore({})
    prov = await started(config(network_cidr="10.4.0.0/24"), store)
    first, second = await asyncio.gather(prov.handle(add("a", requested_ip="10.4.0.9")),
                                         prov.handle(add("b", requested_ip="10.4.0.9")))
    assert first.service.public_ip == "10.4.0.9" and first.error == ""
    assert "already given to a" in second.error


async def test_two_processes_sharing_a_file_never_share_an_address(tmp_path):
    path = str(tmp_path / "ipalloc.json")
    one = await started(config(network_cidr="10.2.0.0/29"), FileStore(path))
    two = await started(config(network_cidr="10.2.0.0/29"), FileStore(path))
    a = await one.handle(add("a"))
    b = await two.handle(add("b"))  # `two` loaded before `a` was written: the file lock decides
    assert a.service.public_ip != b.service.public_ip
    records = json.loads((tmp_path / "ipalloc.json").read_text())
    assert {r["host"] for r in records} == {"a", "b"}


async def test_file_store_reloads_allocations(tmp_path):
    path = str(tmp_path / "db.json")
    prov = await started(config(network_cidr="10.3.0.0/24"), FileStore(path))
    ip = (await prov.handle(add("ns/web"))).service.public_ip
    again = await started(config(network_cidr="10.3.0.0/24"), FileStore(path))
    assert (await again.handle(add("ns/web"))).service.public_ip == ip
    assert (await again.handle(add("other"))).service.public_ip != ip


@pytest.mark.parametrize("keys, path", [
    ({"network_cidr": "10.0.0.0/33"}, "ipam.ipalloc.network_cidr"),
    ({"network_cidr": "10.0.0.0/24", "ip_start": "10.0.0.20", "ip_end": "10.0.0.10"}, "ipam.ipalloc.ip_end"),
    ({}, "ipam.ipalloc.network_cidr"),
])
def test_bad_pool_configs_are_errors(keys, path):
    report = Report()
    IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
    assert any(p.path == path for p in report.errors)


def provisioner_with(store: MemoryStore, live: dict[str, Service], instance: str = "il-one",
                     cidr: str = "10.9.0.0/29") -> IPAllocProvisioner:
    context = ExtensionContext("provisioner.ipalloc", entries=lambda: live, services={STORE_SERVICE: store},
                               identity=Identity(configured=instance))
    context.identity.resolve([])
    return IPAllocProvisioner(config(network_cidr=cidr), context)


async def test_allocations_of_entries_that_no_longer_exist_are_freed_after_two_passes():
    live = {"ns/kept": Service(name="ns/kept")}
    store = MemoryStore()
    prov = provisioner_with(store, live)
    await prov.setup()
    await prov.handle(add("ns/kept"))
    await prov.handle(add("ns/gone"))  # its delete was lost in a crash
    sweep = prov.orphan_sweep()
    assert await sweep.run_pass() == set()  # first pass: only suspected
    assert await sweep.run_pass() == {"ns/gone"}
    assert {h.entry for h in store.allocations.values()} == {"ns/kept"}


async def test_a_sweep_never_frees_another_instances_or_a_legacy_allocation():
    store = MemoryStore()
    store.allocations["10.9.0.1"] = Mark("il-other", "ns/theirs")  # another cluster's, same pool
    store.allocations["10.9.0.2"] = Mark("", "ns/old")  # written before instance ids
    prov = provisioner_with(store, {})
    await prov.setup()
    sweep = prov.orphan_sweep()
    for _ in range(3):
        assert await sweep.run_pass() == set()
    assert store.allocations == {"10.9.0.1": Mark("il-other", "ns/theirs"), "10.9.0.2": Mark("", "ns/old")}


async def test_an_address_of_another_instance_is_an_error_naming_no_service():
    store = MemoryStore()
    store.allocations["10.9.0.1"] = Mark("il-other", "team-b/secret")
    prov = provisioner_with(store, {})
    await prov.setup()
    reply = await prov.handle(add("ns/web", requested_ip="10.9.0.1"))
    assert "another Interlook instance (il-other)" in reply.error
    assert "team-b" not in reply.error and "secret" not in reply.error
    # A free address is given instead when none is asked for; the other's stays theirs.
    assert (await prov.handle(add("ns/web"))).service.public_ip != "10.9.0.1"
    assert (await prov.handle(Message(Action.DELETE, Service(name="team-b/secret")))).error == ""
    assert store.allocations["10.9.0.1"] == Mark("il-other", "team-b/secret")


async def test_a_legacy_allocation_is_adopted_for_its_own_entry_only():
    store = MemoryStore()
    store.allocations["10.9.0.3"] = Mark("", "ns/web")
    prov = provisioner_with(store, {"ns/web": Service(name="ns/web")})
    await prov.setup()
    reply = await prov.handle(add("team-b/other", requested_ip="10.9.0.3"))
    assert "another Service" in reply.error and "ns/web" not in reply.error  # another namespace's
    reply = await prov.handle(add("ns/web"))
    assert reply.service.public_ip == "10.9.0.3"
    assert store.allocations["10.9.0.3"] == Mark("il-one", "ns/web")  # re-marked: ours from now on


async def test_another_pools_allocations_of_the_same_instance_are_not_swept():
    store = MemoryStore()
    store.allocations["10.8.0.1"] = Mark("il-one", "ns/elsewhere")  # same id, another pool (another process)
    prov = provisioner_with(store, {})
    await prov.setup()
    sweep = prov.orphan_sweep()
    await sweep.run_pass()
    assert await sweep.run_pass() == set()
    assert "10.8.0.1" in store.allocations


def test_an_owner_that_comes_back_between_passes_is_not_an_orphan():
    sweep = OrphanSweep(None, None, None)  # type: ignore[arg-type]
    assert sweep.confirmed({"a"}, set()) == set()
    assert sweep.confirmed({"a"}, {"a"}) == set()
    assert sweep.confirmed({"a"}, set()) == set()
    assert sweep.confirmed({"a"}, set()) == {"a"}


async def test_a_requested_address_held_in_another_namespace_does_not_name_that_service():
    # The error goes to the requester's annotations and Events: another namespace's names stay private.
    prov = await started(config(network_cidr="10.0.0.0/24"))
    assert (await prov.handle(add("team-a/db", requested_ip="10.0.0.15"))).error == ""
    taken = await prov.handle(add("team-b/web", requested_ip="10.0.0.15"))
    assert taken.error == "requested IP 10.0.0.15 is already given to another Service"
    same_namespace = await prov.handle(add("team-a/web", requested_ip="10.0.0.15"))
    assert same_namespace.error == "requested IP 10.0.0.15 is already given to team-a/db"
