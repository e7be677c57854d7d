"""Two replicas of one Deployment under kopf peering: the standby does nothing, then takes over.

Both run the same config, so they share the derived instance id; the standby
is the one with the lower ``--priority``.  Every sweep runs each second.  The
standby must make no write at all (../shared/DESIGN.md: "no step, no sweep,
no write, until it becomes the active one"): the API server's audit log, read
per client certificate, and its own proxies to Consul and the F5 count them.
When the active one is SIGKILLed, the standby takes over within kopf's
peering lifetime and resumes everything from the cluster.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.checks import converge, summary
from tests.chaos.harness import ConsulServer, ControlPlane, F5Process, Kube, classify, read_audit
from tests.ha.conftest import PEERING_LIFETIME, MakeReplica, new_namespace, new_peering
from tests.ha.support import Replica, api_writes, audit_barrier, changes, describe, records, wait_role, wait_sweeps

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes, pytest.mark.consul, pytest.mark.timeout(300)]

SWEEP_PASSES = 6   # at least five full passes after the first look


async def start_pair(plane: ControlPlane, admin: Kube, make_replica: MakeReplica,
                     namespace: str) -> tuple[Replica, Replica]:
    """The active replica first, then the standby with the lower priority, on a peering of their own.

    Both watch this test's namespace only, so the Services other tests leave
    behind are none of theirs (and their instance id is this test's own).
    """
    peering = await new_peering(admin)
    active = make_replica(plane, "ha-replica-a", namespaces=(namespace,), peering=peering, priority=100)
    standby = make_replica(plane, "ha-replica-b", namespaces=(namespace,), peering=peering, priority=50)
    await asyncio.to_thread(active.start)
    await wait_role(active, "active", timeout=60)
    await asyncio.to_thread(standby.start)
    await wait_role(standby, "standby", timeout=60)
    assert active.version()["instance"] == standby.version()["instance"], "replicas must share the instance id"
    return active, standby


async def deploy(kube: Kube, namespace: str, nodes: list[str], names: set[str], consul: ConsulServer,
                 f5: F5Process, *replicas: Replica) -> None:
    for name in sorted(names):
        await kube.create_published(namespace, name, nodes, hosts=f"{name}.{namespace}.ha.example")
    _, _, found, duplicates = await converge(kube, namespace, consul, f5, names, set(), timeout=90)
    assert duplicates == 0 and not found, summary(found) + "\n" + "\n".join(r.log_tail() for r in replicas)


async def test_standby_makes_no_write_and_changes_nothing_over_five_sweeps(
        ha_plane: ControlPlane, kube: Kube, admin: Kube, nodes: list[str], make_replica: MakeReplica,
        consul_server: ConsulServer, f5: F5Process, report) -> None:
    namespace = await new_namespace(kube, "ha-pair")
    active, standby = await start_pair(ha_plane, admin, make_replica, namespace)
    live = {f"web-{i}" for i in range(4)}
    await deploy(kube, namespace, nodes, live, consul_server, f5, active, standby)

    instance = str(active.version()["instance"])
    before = await records(kube, consul_server, f5, instance)
    assert (len(before.allocations), len(before.consul)) == (4, 4), before
    assert len([k for k in before.f5 if k.startswith("virtuals ")]) == 4, before.f5
    since = time.time()
    await wait_sweeps(active, SWEEP_PASSES, since, timeout=60)
    after = await records(kube, consul_server, f5, instance)
    await audit_barrier(ha_plane, admin)
    ended = time.time()

    assert (active.role(), standby.role()) == ("active", "standby")
    requests = read_audit(ha_plane.audit_log)
    seen = classify(requests, standby.started, ended, standby.user)
    writes = api_writes(ha_plane, standby.user, since=standby.started)
    report("standby", instance=instance, sweep_window_s=round(ended - since, 1),
           active_consul_sweeps=active.consul.count("GET", "/v1/catalog/nodes", since),
           active_f5_sweeps=active.f5.count("GET", "/mgmt/tm/ltm/pool", since),
           standby_api_requests=seen["by_verb_resource"], standby_api_writes=len(writes),
           standby_consul=standby.consul.summary(), standby_f5=standby.f5.summary())
    # The audit log does show this user (kopf's watch of the peering object, its keepalives): we read the right one.
    assert seen["total"] > 0
    assert changes(before, after) == [], "records changed while the standby watched"
    assert writes == [], f"the standby wrote to the API server:\n{describe(writes)}\n{standby.log_tail()}"
    assert standby.consul.writes() == [], f"the standby wrote to Consul: {standby.consul.summary()}"
    assert standby.f5.writes(prefix="/mgmt/tm/") == [], f"the standby wrote to the F5: {standby.f5.summary()}"


async def test_standby_takes_over_after_sigkill_of_the_active(
        ha_plane: ControlPlane, kube: Kube, admin: Kube, nodes: list[str], make_replica: MakeReplica,
        consul_server: ConsulServer, f5: F5Process, report) -> None:
    namespace = await new_namespace(kube, "ha-takeover")
    active, standby = await start_pair(ha_plane, admin, make_replica, namespace)
    await deploy(kube, namespace, nodes, {"stays", "goes"}, consul_server, f5, active, standby)

    active.kill()
    killed = time.monotonic()
    await kube.delete(f"/api/v1/namespaces/{namespace}/services/goes")
    await kube.create_published(namespace, "new", nodes, hosts=f"new.{namespace}.ha.example")
    # Deadlines, not measures: kopf's peering lifetime, and 30 s to do the work.
    deadline = PEERING_LIFETIME + 30
    await wait_role(standby, "active", timeout=deadline)
    promoted = time.monotonic() - killed
    took, world, found, duplicates = await converge(kube, namespace, consul_server, f5, {"stays", "new"}, {"goes"},
                                                    timeout=max(1.0, deadline - promoted))
    report("takeover", active_after_s=round(promoted, 1), converged_after_s=round(promoted + took, 1),
           problems=len(found))
    assert duplicates == 0, summary(world.duplicates)
    assert not found, f"not converged {deadline:.0f}s after the kill:\n{summary(found)}\n{standby.log_tail()}"
