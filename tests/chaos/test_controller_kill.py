"""The controller SIGKILLed at random instants during a burst of creations and deletions.

Nothing of the controller survives a SIGKILL but what it wrote: annotations,
finalizers, IPAllocation objects, Consul records, F5 objects.  Each restart
resumes from the cluster, and idempotent steps must converge: every live
Service deployed, every deleted one gone everywhere, no address given twice,
nothing orphaned.  Sizes are the issue's (300 Services, 10 kills);
CHAOS_SERVICES / CHAOS_KILLS / CHAOS_SEED change them.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from tests.chaos.checks import converge, observe, summary
from tests.chaos.conftest import chaos_int
from tests.chaos.harness import ConsulServer, Controller, F5Process, Kube

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]


async def test_sigkill_at_random_instants_converges(kube: Kube, namespace: str, nodes: list[str],
                                                    controller: Controller, consul_server: ConsulServer,
                                                    f5: F5Process, report) -> None:
    services = chaos_int("CHAOS_SERVICES", 300)
    kills = chaos_int("CHAOS_KILLS", 10)
    rate = float(os.environ.get("CHAOS_RATE", "8"))
    seed = chaos_int("CHAOS_SEED", random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"seed {seed} (CHAOS_SEED={seed} replays the same sequence of names and kill delays)")
    await asyncio.to_thread(controller.start)

    live: set[str] = set()
    deleted: set[str] = set()
    worst_duplicates = 0
    duplicates_seen: list[str] = []

    async def burst() -> None:
        for i in range(services):
            name = f"s-{i:04d}"
            await kube.create_published(namespace, name, nodes, hosts=f"{name}.{namespace}.chaos.example",
                                        retry_for=30)
            live.add(name)
            if i % 3 == 2:  # every third step also deletes a random live Service
                victim = rng.choice(sorted(live))
                await kube.delete(f"/api/v1/namespaces/{namespace}/services/{victim}", retry_for=30)
                live.discard(victim)
                deleted.add(victim)
            await asyncio.sleep(1 / rate)

    async def killer() -> None:
        nonlocal worst_duplicates
        # Spread the kills over the burst, at random instants (also while starting up).
        span = services / rate
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 2 * span / kills))
            controller.kill()
            seen = (await observe(kube, namespace, consul_server, f5)).duplicates
            worst_duplicates = max(worst_duplicates, len(seen))
            duplicates_seen.extend(f"after kill {controller.kills}: {d}" for d in seen)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            controller.start(wait=False)

    started = time.monotonic()
    await asyncio.gather(burst(), killer())
    if not controller.alive:
        controller.start(wait=False)
    await asyncio.to_thread(controller.wait_healthy)
    burst_done = time.monotonic()
    took, world, found, duplicates = await converge(kube, namespace, consul_server, f5, live, deleted, timeout=180)
    worst_duplicates = max(worst_duplicates, duplicates)
    report("sigkill", seed=seed, faults_survived=controller.kills, controller_starts=controller.starts,
           services_created=services, services_live=len(live), services_deleted=len(deleted),
           converged=not found, time_to_converge_s=round(burst_done - started + took, 1),
           after_last_restart_s=round(took, 1), duplicates_found=worst_duplicates, problems=len(found))
    assert controller.kills == kills
    assert worst_duplicates == 0, summary(duplicates_seen + world.duplicates)
    assert not found, f"not converged after {took:.0f}s (seed {seed}):\n{summary(found)}"
