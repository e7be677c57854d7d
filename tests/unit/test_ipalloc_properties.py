"""Property-based checks of the pool: whatever the sequence of adds and deletes,
no address is given twice, none falls outside the range, the network and
broadcast addresses are never given, and a service keeps its address."""

from __future__ import annotations

import asyncio
import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.messages import Action, Message, Service
from extensions.provisioners.ipalloc import IPAllocConfig, IPAllocProvisioner, MemoryStore
from extensions.provisioners.ipalloc.provisioner import STORE_SERVICE

pools = st.sampled_from([
    ("10.0.0.0/29", None, None),
    ("10.0.0.0/28", "10.0.0.0", "10.0.0.15"),   # range names network and broadcast
    ("10.0.0.0/24", "10.0.0.250", None),
    ("192.0.2.0/30", None, None),
])
operations = st.lists(st.tuples(st.sampled_from(["add", "delete"]), st.integers(0, 12)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool=pools, ops=operations)
def test_pool_invariants_hold_for_any_sequence(pool, ops):
    cidr, start, end = pool
    keys = {"network_cidr": cidr}
    if start:
        keys["ip_start"] = start
    if end:
        keys["ip_end"] = end
    report = Report()
    config = IPAllocConfig.from_section(Section(keys, "ipam.ipalloc", report))
    assert not report.errors
    network = ipaddress.ip_network(cidr)
    asyncio.run(_exercise(config, network, ops))


async def _exercise(config: IPAllocConfig, network, ops) -> None:
    store = MemoryStore()
    prov = IPAllocProvisioner(config, ExtensionContext("provisioner.ipalloc", services={STORE_SERVICE: store}))
    await prov.setup()
    held: dict[str, str] = {}
    for op, n in ops:
        name = f"ns/svc{n}"
        if op == "add":
            reply = await prov.handle(Message(Action.ADD, Service(name=name)))
            if reply.error:
                assert "no free address" in reply.error
                assert name not in held
                continue
            ip = ipaddress.ip_address(reply.service.public_ip)
            assert ip in network
            assert ip != network.network_address and ip != network.broadcast_address
            assert config.first <= ip <= config.last
            if name in held:
                assert held[name] == str(ip), "a service must keep its address"
            held[name] = str(ip)
        else:
            reply = await prov.handle(Message(Action.DELETE, Service(name=name)))
            assert reply.error == ""
            held.pop(name, None)
        assert len(set(held.values())) == len(held), "an address was given twice"
        assert {ip: h.entry for ip, h in store.allocations.items()} == {ip: o for o, ip in held.items()}
