"""The active replica SIGKILLed at random instants during a burst, while a standby runs.

Two replicas under kopf peering; a burst of Services created (every third
step also deletes one) for as long as the kills go on.  At random instants
the active replica is SIGKILLed and started again at once, as a Deployment
would: with a lower priority it comes back as the standby and the survivor
takes over within kopf's peering lifetime; with a higher one it takes over at
once and the survivor stays the standby.  Either way the new active one
resumes from the cluster.  Afterwards everything
must converge: every live Service deployed and in Consul and on the F5,
every deleted one gone everywhere, no address given twice (at any look), no
orphan.  HA_SERVICES / HA_KILLS / HA_SEED change the sizes and replay a run
(the same names and kill delays).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from tests.chaos.checks import converge, observe, summary
from tests.chaos.harness import ConsulServer, ControlPlane, F5Process, Kube
from tests.ha.conftest import PEERING_LIFETIME, MakeReplica, new_namespace, new_peering
from tests.ha.support import Replica, wait_role

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes, pytest.mark.consul, pytest.mark.chaos,
              pytest.mark.timeout(420)]


MAX_BURST = 150


def ha_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def test_sigkill_of_the_active_replica_during_a_burst_converges(
        ha_plane: ControlPlane, kube: Kube, admin: Kube, nodes: list[str], make_replica: MakeReplica,
        consul_server: ConsulServer, f5: F5Process, report) -> None:
    services = ha_int("HA_SERVICES", 12)
    kills = ha_int("HA_KILLS", 2)
    seed = ha_int("HA_SEED", random.randrange(1 << 30))
    print(f"seed {seed} (HA_SEED={seed} replays the same names, deletions and kill delays)")
    kill_rng, delete_rng = random.Random(seed), random.Random(seed + 1)
    namespace = await new_namespace(kube, "ha-chaos")
    peering = await new_peering(admin)
    replicas = [make_replica(ha_plane, user, namespaces=(namespace,), peering=peering, priority=priority)
                for user, priority in (("ha-replica-a", 100), ("ha-replica-b", 90))]
    await asyncio.to_thread(replicas[0].start)
    await wait_role(replicas[0], "active", timeout=60)
    await asyncio.to_thread(replicas[1].start)
    await wait_role(replicas[1], "standby", timeout=60)

    live: set[str] = set()
    deleted: set[str] = set()
    worst_duplicates = 0
    takeovers: list[float] = []
    killing = True

    async def burst() -> None:
        i = 0
        # At least `services` Services, and one a second for as long as the kills go on (takeovers
        # after a kill take up to kopf's peering lifetime); MAX_BURST bounds a run of slow takeovers.
        while (i < services or killing) and i < MAX_BURST:
            name = f"s-{i:03d}"
            await kube.create_published(namespace, name, nodes, hosts=f"{name}.{namespace}.ha.example",
                                        retry_for=30)
            live.add(name)
            if i % 3 == 2:
                victim = delete_rng.choice(sorted(live))
                await kube.delete(f"/api/v1/namespaces/{namespace}/services/{victim}", retry_for=30)
                live.discard(victim)
                deleted.add(victim)
            i += 1
            await asyncio.sleep(1.0)

    async def killer() -> None:
        nonlocal worst_duplicates, killing
        low, high = 90, 100
        try:
            for k in range(kills):
                await asyncio.sleep(kill_rng.uniform(0.5, 6.0))
                victim = next(r for r in replicas if r.role() == "active")
                survivor = next(r for r in replicas if r is not victim)
                victim.kill()
                killed = time.monotonic()
                worst_duplicates = max(worst_duplicates,
                                       len((await observe(kube, namespace, consul_server, f5)).duplicates))
                # Back at once, as a Deployment's new Pod would be, with a priority of its own (controller/main.py
                # draws one at random).  Below the survivor, the survivor takes over once the dead one's peering
                # lifetime is up; above every priority so far (the dead one's included), the newcomer does at once
                # and the survivor stays the standby.  The kills alternate between the two, the first the former.
                if k % 2 == 0:
                    low -= 10
                    victim.controller.priority, heir = low, survivor
                else:
                    high += 10
                    victim.controller.priority, heir = high, victim
                await asyncio.to_thread(victim.start, False)
                await wait_role(heir, "active", timeout=PEERING_LIFETIME + 30)
                takeovers.append(round(time.monotonic() - killed, 1))
        finally:
            killing = False

    started = time.monotonic()
    await asyncio.gather(burst(), killer())
    active = next(r for r in replicas if r.role() == "active")
    standby: Replica = next(r for r in replicas if r is not active)
    await wait_role(standby, "standby", timeout=60)
    took, world, found, duplicates = await converge(kube, namespace, consul_server, f5, live, deleted, timeout=120)
    worst_duplicates = max(worst_duplicates, duplicates)
    report("replica-kill", seed=seed, kills=sum(r.controller.kills for r in replicas), takeovers_s=takeovers,
           services_created=len(live) + len(deleted), services_live=len(live), services_deleted=len(deleted),
           converged=not found, time_to_converge_s=round(time.monotonic() - started, 1), problems=len(found),
           duplicates_found=worst_duplicates)
    assert sum(r.controller.kills for r in replicas) == kills
    assert worst_duplicates == 0, summary(world.duplicates)
    assert not found, (f"not converged (seed {seed}):\n{summary(found)}\n"
                       + "\n".join(r.log_tail() for r in replicas))
