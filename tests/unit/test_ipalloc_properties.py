"""Property-based checks of the pools: whatever the sequence of adds and deletes,
no address is given twice, each lies in a pool that admits its service (and
in the one it asked for), the network and broadcast addresses are never
given, a service keeps its address while its pool admits it, no namespace
ever holds more than its limit, and an add fails only for a reason."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.messages import Action, Message, Service
from controller.selectors import labels_of
from extensions.provisioners.ipalloc import IPAllocConfig, IPAllocProvisioner, MemoryStore
from extensions.provisioners.ipalloc.config import PoolConfig
from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE

single_pools = st.sampled_from([
    {"network_cidr": "10.0.0.0/29"},
    {"network_cidr": "10.0.0.0/28", "ip_start": "10.0.0.0", "ip_end": "10.0.0.15"},  # names network and broadcast
    {"network_cidr": "10.0.0.0/24", "ip_start": "10.0.0.250"},
    {"network_cidr": "192.0.2.0/30"},
])
# Several pools: small, so that they fill up; rules on namespaces and Service labels; v4 and v6.
pool_sets = st.sampled_from([
    {"pools": [{"name": "a", "network_cidr": "10.1.0.0/29", "namespaces": ["ns0"], "priority": 1},
               {"name": "shared", "network_cidr": "10.2.0.0/30"}]},
    {"pools": [{"name": "web", "network_cidr": "10.3.0.0/29", "serviceSelector": "tier=web"},
               {"name": "v6", "network_cidr": "2001:db8::/125", "namespaceSelector": {"matchLabels": {"team": "a"}}},
               {"name": "rest", "network_cidr": "10.3.0.8/30", "priority": 5}]},
])
operations = st.lists(st.tuples(st.sampled_from(["add", "add", "delete"]), st.integers(0, 12),
                                st.sampled_from(["", "web"]), st.sampled_from(["", "a", "shared", "web", "v6"])),
                      min_size=1, max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.one_of(single_pools, pool_sets), ops=operations, limit=st.sampled_from([0, 2, 256]))
def test_pool_invariants_hold_for_any_sequence(keys: dict[str, Any], ops, limit: int) -> None:
    report = Report()
    config = IPAllocConfig.from_section(Section({**keys, "maxAddressesPerNamespace": limit}, "ipam.ipalloc", report))
    assert not report.errors
    asyncio.run(_exercise(config, ops))


def service(n: int, tier: str, pool: str) -> Service:
    # Namespaces ns0..ns2; ns0 and ns1 are labelled team=a.
    namespace = f"ns{n % 3}"
    return Service(name=f"{namespace}/svc{n}", labels=labels_of({"tier": tier} if tier else {}),
                   namespace_labels=labels_of({"team": "a"} if n % 3 < 2 else {}), pool=pool)


async def _exercise(config: IPAllocConfig, ops) -> None:
    store = MemoryStore()
    prov = IPAllocProvisioner(config, ExtensionContext("provisioner.ipalloc", services={STORE_SERVICE: store}))
    await prov.setup()
    held: dict[str, str] = {}
    for op, n, tier, asked in ops:
        asked = asked if len(config.pools) > 1 else ""  # the one legacy pool is "default"
        svc = service(n, tier, asked)
        if op == "delete":
            assert (await prov.handle(Message(Action.DELETE, svc))).error == ""
            held.pop(svc.name, None)
        else:
            reply = await prov.handle(Message(Action.ADD, svc))
            check_reply(config, svc, reply, held)
        assert len(set(held.values())) == len(held), "an address was given twice"
        assert {ip: h.entry for ip, h in store.allocations.items()} == {ip: o for o, ip in held.items()}
        assert store.pools == {ip: config.pool_of(ip).name for ip in store.allocations}  # type: ignore[union-attr]
        if config.max_addresses_per_namespace:
            per_namespace = [o.partition("/")[0] for o in held]
            assert max((per_namespace.count(ns) for ns in per_namespace), default=0) <= \
                config.max_addresses_per_namespace


def check_reply(config: IPAllocConfig, svc: Service, reply: Message, held: dict[str, str]) -> None:
    before = held.get(svc.name)
    admitting = [p for p in config.pools if p.admits(svc) and (not svc.pool or p.name == svc.pool)]
    if reply.error:
        assert justified(config, svc, reply.error, admitting, held), reply.error
        assert held.get(svc.name) == before, "a failed add keeps what the service held"
        return
    ip = reply.service.public_ip
    pool = config.pool_of(ip)
    assert pool in admitting, f"{ip} is not in a pool that admits {svc}"
    network = pool.network
    address = ipaddress.ip_address(ip)
    assert address != network.network_address and (network.version == 6 or address != network.broadcast_address)
    if before is not None and config.pool_of(before) in admitting:
        assert before == ip, "a service keeps its address while its pool admits it"
    held[svc.name] = ip


def justified(config: IPAllocConfig, svc: Service, error: str, admitting: list[PoolConfig],
              held: dict[str, str]) -> bool:
    """An add may fail only when no pool admits the service, its pools are full, or its namespace is at its limit."""
    if not admitting:
        return "admit" in error or "does not exist" in error
    others = {owner: ip for owner, ip in held.items() if owner != svc.name}
    if "no free address" in error:
        return all(sum(1 for ip in others.values() if p.contains(ip)) == p.size for p in admitting)
    in_namespace = sum(1 for owner in others if owner.partition("/")[0] == svc.namespace)
    return "holds" in error and 0 < config.max_addresses_per_namespace <= in_namespace
