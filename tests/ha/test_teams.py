"""Two instances in one cluster, one per team: their own namespaces, their own pools, one Consul, one F5 partition.

Neither sets ``core.instanceId``: their scopes differ, so their derived ids
do.  Neither may change or remove a record of the other's, not at start-up,
not in a step, not in a sweep (the issue's second report: the second freed
the first's address in the other pool and removed its DNS record).
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.chaos.harness import ConsulServer, ControlPlane, F5Process, Kube
from tests.ha.conftest import MakeReplica, new_namespace
from tests.ha.side_by_side import Side, side_by_side

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes, pytest.mark.consul, pytest.mark.timeout(300)]

POOLS = ("10.125.0.0/28", "10.125.0.16/28")


async def test_two_teams_with_their_own_namespaces_and_pools_touch_nothing_of_each_other(
        ha_plane: ControlPlane, kube: Kube, admin: Kube, nodes: list[str], make_replica: MakeReplica,
        consul_server: ConsulServer, f5: F5Process, report) -> None:
    sides = []
    for n, (user, pool) in enumerate(zip(("ha-instance-1", "ha-instance-2"), POOLS, strict=True)):
        namespace = await new_namespace(kube, f"ha-team{n + 1}")
        replica = make_replica(ha_plane, user, namespaces=(namespace,), pool=pool)
        # The same Service names in both teams' namespaces.
        sides.append(Side(ha_plane, kube, admin, namespace, replica, nodes, {"web", "api", "db"}))
    figures = await side_by_side(sides[0], sides[1], consul_server, f5)
    for side, pool in zip(sides, POOLS, strict=True):
        addresses = {a["spec"]["ip"] for a in side.before.allocations.values()}
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(pool) for ip in addresses), (pool, addresses)
    report("teams", **figures)
