"""Two Interlook instances side by side on one Consul and one F5: neither touches the other's records.

Shared by the "teams" test (two scopes in one cluster) and the "clusters"
test (two control planes): each instance deploys its Services and settles;
its records are read; the other starts, deploys and settles; then both run
their sweeps for at least five passes.  Every record of each instance must be
exactly as it was read (the first one's across the whole life of the second,
start-up included), and the audit log must show no write by either on an
IPAllocation that is not its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.chaos.checks import converge, summary
from tests.chaos.harness import ConsulServer, ControlPlane, F5Process, Kube
from tests.ha.support import Records, Replica, api_writes, audit_barrier, changes, records, wait_sweeps

SWEEP_PASSES = 6


@dataclass
class Side:
    """One instance: its control plane, its driver and admin clients, its namespace, its replica."""

    plane: ControlPlane
    kube: Kube
    admin: Kube
    namespace: str
    replica: Replica
    nodes: list[str]
    names: set[str]
    instance: str = ""
    before: Records = field(default_factory=Records)

    async def deploy(self, consul: ConsulServer, f5: F5Process) -> None:
        """Start the replica, publish the Services, wait until they are everywhere, read its records."""
        await asyncio.to_thread(self.replica.start)
        self.instance = str(self.replica.version()["instance"])
        for name in sorted(self.names):
            await self.kube.create_published(self.namespace, name, self.nodes,
                                             hosts=f"{name}.{self.instance}.ha.example")
        _, _, found, duplicates = await converge(self.kube, self.namespace, consul, f5, self.names, set(),
                                                 timeout=90, instance=self.instance)
        assert duplicates == 0 and not found, f"{self.instance}: {summary(found)}\n{self.replica.log_tail()}"
        self.before = await records(self.kube, consul, f5, self.instance)
        assert len(self.before.allocations) == len(self.names), self.before
        assert len(self.before.consul) == len(self.names), self.before


async def side_by_side(one: Side, two: Side, consul: ConsulServer, f5: F5Process) -> dict[str, object]:
    """Run the scenario; return figures for the report.  Fails on anything of one touched by the other."""
    await one.deploy(consul, f5)
    await two.deploy(consul, f5)
    assert one.instance != two.instance, "two instances with the same id: their records cannot be told apart"
    since = time.time()
    await wait_sweeps(one.replica, SWEEP_PASSES, since, timeout=60)
    await wait_sweeps(two.replica, SWEEP_PASSES, since, timeout=60)
    problems: list[str] = []
    for side in (one, two):
        after = await records(side.kube, consul, f5, side.instance)
        problems += [f"{side.instance}: {change}" for change in changes(side.before, after)]
    for side, other in ((one, two), (two, one)):
        if side.plane is not other.plane:
            continue  # IPAllocations live in each cluster: the other one cannot even reach them
        await audit_barrier(side.plane, side.admin)
        theirs = set(other.before.allocations)
        problems += [f"{side.instance} wrote {r.verb} on {other.instance}'s IPAllocation {r.name}"
                     for r in api_writes(side.plane, side.replica.user)
                     if r.resource == "ipallocations" and r.name in theirs]
    assert not problems, "\n".join(problems) + "\n" + one.replica.log_tail() + "\n" + two.replica.log_tail()
    return {"instances": [one.instance, two.instance], "sweep_window_s": round(time.time() - since, 1),
            "records": [len(one.before), len(two.before)]}
