"""provisioner.ipalloc with several pools: who may take from which, in what order, and how many."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.instance import Identity
from controller.messages import Action, Message, Service
from controller.selectors import labels_of
from extensions.kit.ownership import Mark
from extensions.provisioners.ipalloc import FileStore, IPAllocConfig, IPAllocProvisioner, MemoryStore
from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE

ROOT = Path(__file__).resolve().parents[2]

TEAMS = {
    "pools": [
        {"name": "team-a", "network_cidr": "10.10.0.0/30", "namespaceSelector": "team=a", "priority": 10},
        {"name": "web", "network_cidr": "10.20.0.0/29", "serviceSelector": {"matchLabels": {"tier": "web"}}},
        {"name": "shared", "network_cidr": "10.30.0.0/29", "namespaces": ["team-b", "team-c"], "priority": 20},
        {"name": "v6", "network_cidr": "2001:db8:14::/120", "namespaces": ["team-c"]},
    ],
}


def config(keys: dict[str, Any]) -> IPAllocConfig:
    report = Report()
    cfg = IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
    assert not report.errors, report.errors
    return cfg


def errors(keys: dict[str, Any]) -> dict[str, str]:
    report = Report()
    IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
    return {p.path: p.reason for p in report.errors}


async def started(keys: dict[str, Any], store: Any = None, instance: str = "il-one") -> IPAllocProvisioner:
    context = ExtensionContext("provisioner.ipalloc", services={STORE_SERVICE: store or MemoryStore()},
                               identity=Identity(configured=instance))
    context.identity.resolve([])
    prov = IPAllocProvisioner(config(keys), context)
    await prov.setup()
    return prov


def svc(name: str, *, labels: dict[str, str] | None = None, team: str = "", **kw: Any) -> Service:
    return Service(name=name, labels=labels_of(labels), namespace_labels=labels_of({"team": team} if team else {}),
                   **kw)


async def add(prov: IPAllocProvisioner, service: Service) -> Message:
    return await prov.handle(Message(Action.ADD, service))


async def delete(prov: IPAllocProvisioner, name: str) -> Message:
    return await prov.handle(Message(Action.DELETE, Service(name=name)))


# -- configuration ---------------------------------------------------------------------

def test_pools_are_tried_lowest_priority_value_first_and_unnumbered_ones_last():
    cfg = config({"pools": [{"name": "late", "network_cidr": "10.0.1.0/24"},
                            {"name": "second", "network_cidr": "10.0.2.0/24", "priority": 5},
                            {"name": "first", "network_cidr": "10.0.3.0/24", "priority": -1},
                            {"name": "also-late", "network_cidr": "10.0.4.0/24"},
                            {"name": "tie", "network_cidr": "10.0.5.0/24", "priority": 5}]})
    assert [p.name for p in cfg.pools] == ["first", "second", "tie", "late", "also-late"]


def test_the_legacy_keys_are_one_pool_named_default_that_admits_everyone():
    cfg = config({"network_cidr": "10.0.0.0/24", "ip_start": "10.0.0.10", "ip_end": "10.0.0.20"})
    (pool,) = cfg.pools
    assert (pool.name, pool.range, pool.priority) == ("default", "10.0.0.10-10.0.0.20", None)
    assert pool.admits(svc("any/thing", labels={"x": "y"}, team="z")) and pool.admits(Service(name="swarm-svc"))
    assert cfg.max_addresses_per_namespace == 256


@pytest.mark.parametrize("keys, path, reason", [
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24"}, {"name": "b", "network_cidr": "10.0.0.128/25"}]},
     "ipam.ipalloc.pools[1].network_cidr", "overlaps pool a's 10.0.0.1-10.0.0.254"),
    ({"pools": [{"name": "a", "network_cidr": "2001:db8::/64"}, {"name": "b", "network_cidr": "2001:db8::/48"}]},
     "ipam.ipalloc.pools[1].network_cidr", "overlaps pool a's"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24", "ip_start": "10.0.1.5"}]},
     "ipam.ipalloc.pools[0].ip_start", "10.0.1.5 is outside network_cidr 10.0.0.0/24"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24", "ip_end": "10.0.0.300"}]},
     "ipam.ipalloc.pools[0].ip_end", "not a valid IP address"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24", "ip_start": "10.0.0.9", "ip_end": "10.0.0.3"}]},
     "ipam.ipalloc.pools[0].ip_end", "comes before ip_start"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24", "namespaceSelector": "team in (a"}]},
     "ipam.ipalloc.pools[0].namespaceSelector", "not a valid label selector: unbalanced"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24",
                 "serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "Maybe"}]}}]},
     "ipam.ipalloc.pools[0].serviceSelector", "operator 'Maybe' is not one of"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24"}, {"name": "a", "network_cidr": "10.0.1.0/24"}]},
     "ipam.ipalloc.pools[1].name", "pool a is defined twice"),
    ({"pools": [{"network_cidr": "10.0.0.0/24"}]}, "ipam.ipalloc.pools[0].name", "is required"),
    ({"pools": [{"name": "Team_A", "network_cidr": "10.0.0.0/24"}]}, "ipam.ipalloc.pools[0].name", "DNS label"),
    ({"pools": [{"name": "a"}]}, "ipam.ipalloc.pools[0].network_cidr", "is required"),
    ({"pools": [{"name": "a", "network_cidr": "10.0.0.0/24", "priority": "high"}]},
     "ipam.ipalloc.pools[0].priority", "must be an integer"),
    ({"pools": ["10.0.0.0/24"]}, "ipam.ipalloc.pools[0]", "must be a mapping"),
    ({"pools": []}, "ipam.ipalloc.pools", "non-empty list"),
    ({"network_cidr": "10.0.0.0/24", "pools": [{"name": "a", "network_cidr": "10.0.1.0/24"}]},
     "ipam.ipalloc.pools", "not both"),
    ({"network_cidr": "10.0.0.0/24", "maxAddressesPerNamespace": -1},
     "ipam.ipalloc.maxAddressesPerNamespace", "0 (no limit) or a positive number"),
])
def test_bad_pool_definitions_are_errors_at_their_key_path(keys, path, reason):
    found = errors(keys)
    assert path in found, found
    assert reason in found[path]


def test_check_config_reports_overlapping_pools_with_their_key_path(tmp_path: Path):
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({
        "core": {"workflowSteps": "provider.swarm,provisioner.ipalloc"},
        "ipam": {"ipalloc": {"pools": [{"name": "blue", "network_cidr": "10.0.0.0/24"},
                                       {"name": "green", "network_cidr": "10.0.0.0/16",
                                        "serviceSelector": "tier in (web"}]}},
    }))
    result = subprocess.run([sys.executable, "-m", "controller", "check-config", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "error: ipam.ipalloc.pools[1].network_cidr: its range 10.0.0.1-10.0.255.254 overlaps pool blue's" \
        in result.stderr
    assert "error: ipam.ipalloc.pools[1].serviceSelector: not a valid label selector" in result.stderr


def test_disjoint_ranges_of_one_network_are_two_pools():
    cfg = config({"pools": [{"name": "low", "network_cidr": "10.0.0.0/24", "ip_end": "10.0.0.99"},
                            {"name": "high", "network_cidr": "10.0.0.0/24", "ip_start": "10.0.0.100"}]})
    assert [p.range for p in cfg.pools] == ["10.0.0.1-10.0.0.99", "10.0.0.100-10.0.0.254"]


# -- which pool ----------------------------------------------------------------------------

async def test_pools_are_chosen_by_namespace_labels_names_service_labels_and_priority():
    prov = await started(TEAMS)
    # team=a namespace: team-a (priority 10) before web (no priority), even for a web Service.
    assert (await add(prov, svc("a1/x", team="a", labels={"tier": "web"}))).service.public_ip == "10.10.0.1"
    # By name: shared (priority 20) before web (no priority).
    assert (await add(prov, svc("team-b/x", labels={"tier": "web"}))).service.public_ip == "10.30.0.1"
    # Only its Service labels admit it.
    assert (await add(prov, svc("other/x", labels={"tier": "web"}))).service.public_ip == "10.20.0.1"
    # team-c: shared first, v6 once shared is full.
    ips = [(await add(prov, svc(f"team-c/s{i}"))).service.public_ip for i in range(7)]
    assert ips[:5] == [f"10.30.0.{i}" for i in range(2, 7)]
    assert ips[5:] == ["2001:db8:14::1", "2001:db8:14::2"]


async def test_a_full_pool_gives_way_to_the_next_admitting_one():
    prov = await started(TEAMS)
    ips = [(await add(prov, svc(f"a{i}/x", team="a", labels={"tier": "web"}))).service.public_ip for i in range(4)]
    assert ips == ["10.10.0.1", "10.10.0.2", "10.20.0.1", "10.20.0.2"]
    full = await add(prov, svc("a9/x", team="a"))
    assert full.error == "no free address left in the pool team-a (10.10.0.1-10.10.0.2)"


async def test_a_service_no_pool_admits_gets_an_error_saying_why():
    prov = await started(TEAMS)
    reply = await add(prov, svc("team-x/web", team="x"))
    assert reply.error == (
        "no IP pool admits this Service (team-a: the namespace's labels do not match its namespaceSelector team=a; "
        "shared: namespace team-x is not one of its namespaces; web: the Service's labels do not match its "
        "serviceSelector tier=web; v6: namespace team-x is not one of its namespaces)")
    assert reply.service.public_ip == ""
    assert "admits" in (await add(prov, Service(name="swarm-web"))).error  # no namespace: only unrestricted pools


async def test_the_pool_asked_for_is_the_only_one_tried():
    store = MemoryStore()
    prov = await started(TEAMS, store)
    assert (await add(prov, svc("team-c/x", pool="v6"))).service.public_ip == "2001:db8:14::1"
    unknown = await add(prov, svc("team-c/y", pool="gold"))
    assert unknown.error == "IP pool gold does not exist (the pools are: team-a, shared, web, v6)"
    refused = await add(prov, svc("team-b/y", pool="v6"))
    assert refused.error == "IP pool v6 does not admit this Service: namespace team-b is not one of its namespaces"
    refused = await add(prov, svc("team-b/y", pool="web", labels={"tier": "db"}))
    assert refused.error == ("IP pool web does not admit this Service: the Service's labels do not match its "
                             "serviceSelector tier=web")
    assert {h.entry for h in store.allocations.values()} == {"team-c/x"}  # nothing written for the refused ones
    for i in range(255):
        await add(prov, svc(f"team-c/v{i}", pool="v6"))
    full = await add(prov, svc("team-c/z", pool="v6"))
    assert full.error == "no free address left in the pool v6 (2001:db8:14::1-2001:db8:14::ff)"  # not shared


async def test_a_requested_address_must_lie_in_a_pool_that_admits_the_service():
    prov = await started(TEAMS)
    outside = await add(prov, svc("team-b/x", labels={"tier": "web"}, requested_ip="10.10.0.1"))  # team-a's
    assert outside.error == ("requested IP 10.10.0.1 is not in the pools this Service may use: "
                             "shared (10.30.0.1-10.30.0.6), web (10.20.0.1-10.20.0.6)")
    other_pool = await add(prov, svc("team-c/x", pool="shared", requested_ip="2001:db8:14::9"))
    assert other_pool.error == ("requested IP 2001:db8:14::9 is not in the pool this Service may use: "
                                "shared (10.30.0.1-10.30.0.6)")
    assert (await add(prov, svc("team-c/x", requested_ip="2001:db8:14::9"))).service.public_ip == "2001:db8:14::9"


async def test_errors_about_pools_never_name_another_namespaces_service():
    prov = await started(TEAMS)
    assert (await add(prov, svc("team-b/secret-db", requested_ip="10.30.0.3"))).error == ""
    messages = [(await add(prov, svc("team-c/x", requested_ip="10.30.0.3"))).error,
                (await add(prov, svc("team-x/x", pool="shared"))).error,
                (await add(prov, svc("team-x/y"))).error]
    assert all(messages) and not [m for m in messages if "team-b" in m or "secret" in m], messages


# -- keeping and moving ----------------------------------------------------------------------

async def test_a_service_keeps_its_address_while_its_pool_admits_it():
    prov = await started(TEAMS)
    first = (await add(prov, svc("team-b/x", labels={"tier": "web"}))).service.public_ip
    assert first == "10.30.0.1"
    # Redeployed with a label that would also open another pool: it stays.
    again = await add(prov, svc("team-b/x", labels={"tier": "web", "more": "1"}, public_ip=first))
    assert again.service.public_ip == first


async def test_a_service_its_pool_no_longer_admits_moves_and_frees_the_old_address():
    store = MemoryStore()
    prov = await started(TEAMS, store)
    old = (await add(prov, svc("moving/x", labels={"tier": "web"}))).service.public_ip
    assert old == "10.20.0.1"
    # Its labels change: web no longer admits it, and no other pool does: error, the address is kept.
    stuck = await add(prov, svc("moving/x", labels={"tier": "db"}, public_ip=old))
    assert "no IP pool admits this Service" in stuck.error
    assert store.allocations[old] == Mark("il-one", "moving/x")
    # Its namespace becomes team=a: it moves to team-a, and web's address is freed.
    moved = await add(prov, svc("moving/x", labels={"tier": "db"}, team="a", public_ip=old))
    assert moved.service.public_ip == "10.10.0.1"
    assert store.allocations == {"10.10.0.1": Mark("il-one", "moving/x")}
    assert store.pools == {"10.10.0.1": "team-a"}


async def test_asking_for_another_pool_moves_the_service():
    store = MemoryStore()
    prov = await started(TEAMS, store)
    old = (await add(prov, svc("team-c/x"))).service.public_ip
    moved = await add(prov, svc("team-c/x", pool="v6", public_ip=old))
    assert (old, moved.service.public_ip) == ("10.30.0.1", "2001:db8:14::1")
    assert list(store.allocations) == ["2001:db8:14::1"]


async def test_a_move_that_finds_no_address_keeps_the_old_one():
    store = MemoryStore()
    prov = await started(TEAMS, store)
    old = (await add(prov, svc("team-c/x"))).service.public_ip
    store.allocations.update({f"2001:db8:14::{i:x}": Mark("il-other", f"else/s{i}") for i in range(1, 256)})
    await prov.setup()  # sees the other instance's allocations
    failed = await add(prov, svc("team-c/x", pool="v6", public_ip=old))
    assert "no free address left in the pool v6" in failed.error
    assert store.allocations[old] == Mark("il-one", "team-c/x")


# -- the namespace limit -------------------------------------------------------------------

LIMITED = {"network_cidr": "10.50.0.0/24", "maxAddressesPerNamespace": 2}


async def test_a_namespace_at_its_limit_gets_no_more_addresses_and_nothing_is_written():
    store = MemoryStore()
    prov = await started(LIMITED, store)
    assert (await add(prov, svc("busy/a"))).error == ""
    assert (await add(prov, svc("busy/b"))).error == ""
    writes = store.writes
    over = await add(prov, svc("busy/c"))
    assert over.error == "namespace busy holds 2 addresses, the limit of ipam.ipalloc.maxAddressesPerNamespace (2)"
    requested = await add(prov, svc("busy/c", requested_ip="10.50.0.77"))
    assert requested.error == over.error
    assert store.writes == writes and over.service.public_ip == ""
    # Its own re-deploy is no new address; another namespace has its own count; a delete makes room.
    assert (await add(prov, svc("busy/a"))).error == ""
    assert (await add(prov, svc("quiet/a"))).error == ""
    await delete(prov, "busy/a")
    assert (await add(prov, svc("busy/c"))).error == ""


class SlowStore(MemoryStore):
    """Claims take a round trip, as with the API server: many are in flight at once."""

    async def claim(self, ip: str, holder: Mark, pool: str = "") -> Mark:
        await asyncio.sleep(0.01)
        return await super().claim(ip, holder, pool)


async def test_the_limit_holds_under_concurrent_adds():
    store = SlowStore()
    prov = await started({"network_cidr": "10.51.0.0/24", "maxAddressesPerNamespace": 10}, store)
    replies = await asyncio.gather(*(add(prov, svc(f"rush/s{i}")) for i in range(40)))
    given = [r for r in replies if not r.error]
    assert len(given) == 10 and len(store.allocations) == 10
    assert all("holds 10 addresses" in r.error for r in replies if r.error)


async def test_the_limit_counts_this_instances_addresses_only_and_not_swarm_services():
    store = MemoryStore()
    store.allocations.update({f"10.52.0.{i}": Mark("il-other", f"shared/o{i}") for i in range(1, 5)})
    prov = await started({"network_cidr": "10.52.0.0/24", "maxAddressesPerNamespace": 1}, store)
    assert (await add(prov, svc("shared/mine"))).error == ""
    assert "holds 1 address," in (await add(prov, svc("shared/second"))).error
    assert all([(await add(prov, Service(name=f"swarm-{i}"))).service.public_ip for i in range(3)])


async def test_no_limit_with_zero():
    prov = await started({"network_cidr": "10.53.0.0/23", "maxAddressesPerNamespace": 0})
    replies = [await add(prov, svc(f"big/s{i}")) for i in range(300)]
    assert not [r.error for r in replies if r.error]


async def test_a_service_that_moves_pools_at_the_limit_is_not_refused():
    prov = await started({**TEAMS, "maxAddressesPerNamespace": 1})
    old = (await add(prov, svc("team-c/x"))).service.public_ip
    moved = await add(prov, svc("team-c/x", pool="v6", public_ip=old))
    assert moved.error == "" and moved.service.public_ip == "2001:db8:14::1"


# -- stores and sweeps ---------------------------------------------------------------------

async def test_the_file_store_records_the_pool_and_reads_files_written_before_pools(tmp_path: Path):
    path = tmp_path / "ipalloc.json"
    path.write_text(json.dumps([{"ip": "10.30.0.1", "host": "team-b/old", "instance": "il-one"},
                                {"ip": "10.99.0.1", "host": "go-service"}]))
    prov = await started(TEAMS, FileStore(str(path)))
    assert (await add(prov, svc("team-b/old"))).service.public_ip == "10.30.0.1"  # still its own
    assert (await add(prov, svc("team-c/new", pool="v6"))).service.public_ip == "2001:db8:14::1"
    records = {r["ip"]: r for r in json.loads(path.read_text())}
    assert records["2001:db8:14::1"] == {"ip": "2001:db8:14::1", "host": "team-c/new", "instance": "il-one",
                                         "pool": "v6"}
    assert records["10.99.0.1"] == {"ip": "10.99.0.1", "host": "go-service"}  # untouched, still readable
    again = await started(TEAMS, FileStore(str(path)))  # a restart
    assert (await add(again, svc("team-c/new", pool="v6"))).service.public_ip == "2001:db8:14::1"


async def test_a_sweep_frees_orphans_of_every_own_pool_and_nothing_outside_them():
    store = MemoryStore()
    store.allocations.update({
        "10.10.0.1": Mark("il-one", "a1/gone"),        # ours, pool team-a
        "2001:db8:14::5": Mark("il-one", "team-c/gone"),  # ours, pool v6
        "10.30.0.1": Mark("il-two", "team-b/theirs"),  # another instance, in our range
        "10.77.0.1": Mark("il-one", "far/away"),       # our id, a pool we do not have
    })
    context = ExtensionContext("provisioner.ipalloc", entries=lambda: {}, services={STORE_SERVICE: store},
                               identity=Identity(configured="il-one"))
    context.identity.resolve([])
    prov = IPAllocProvisioner(config(TEAMS), context)
    await prov.setup()
    sweep = prov.orphan_sweep()
    await sweep.run_pass()
    assert await sweep.run_pass() == {"a1/gone", "team-c/gone"}
    assert set(store.allocations) == {"10.30.0.1", "10.77.0.1"}
