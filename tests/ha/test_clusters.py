"""Two clusters, each with the default config, publishing the same namespace/name into one Consul and one F5.

No ``core.instanceId`` anywhere: each instance derives its id from its own
cluster (the kube-system namespace UID), so the two differ without any
configuration.  Both clusters hold ``shop/web``, ``shop/api`` and ``shop/db``:
on the shared F5 partition the same entry must not give the same object
name, and neither instance may change or remove the other's records.  Only
the pools differ (two clusters behind one BIG-IP cannot hand out the same
virtual address).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from extensions.provisioners.f5ltm.names import object_name
from tests.chaos.harness import DRIVER_USER, ConsulServer, ControlPlane, F5Process, Kube
from tests.ha.conftest import MakeReplica, start_plane
from tests.ha.side_by_side import Side, side_by_side

pytestmark = [pytest.mark.integration, pytest.mark.kubernetes, pytest.mark.consul, pytest.mark.timeout(300)]

NAMESPACE = "shop"
NAMES = {"web", "api", "db"}
POOLS = ("10.126.0.0/24", "10.127.0.0/24")


@pytest.fixture(scope="module")
def two_planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    """Two fresh control planes, started side by side: two clusters with nothing but this test in them."""
    dirs = [tmp_path_factory.mktemp(f"ha-cluster{n}") for n in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_plane, d) for d in dirs]
        planes = [f.result() for f in starting]
    try:
        yield planes[0], planes[1]
    finally:
        for plane in planes:
            plane.stop()


@pytest.fixture
async def clients(two_planes: tuple[ControlPlane, ControlPlane]) -> AsyncIterator[list[tuple[Kube, Kube]]]:
    made = [(Kube(plane, DRIVER_USER), Kube(plane, "admin")) for plane in two_planes]
    try:
        yield made
    finally:
        for kube, admin in made:
            await kube.close()
            await admin.close()


async def test_two_clusters_with_default_configs_touch_nothing_of_each_other(
        two_planes: tuple[ControlPlane, ControlPlane], clients: list[tuple[Kube, Kube]], make_replica: MakeReplica,
        consul_server: ConsulServer, f5: F5Process, report) -> None:
    sides = []
    for plane, (kube, admin), pool, user in zip(two_planes, clients, POOLS, ("ha-instance-1", "ha-instance-2"),
                                               strict=True):
        await kube.ensure_namespace(NAMESPACE)
        nodes = await kube.ensure_nodes(2, prefix="ha-node")
        replica = make_replica(plane, user, pool=pool)  # every namespace, no instanceId: the default config
        sides.append(Side(plane, kube, admin, NAMESPACE, replica, nodes, set(NAMES)))
    figures = await side_by_side(sides[0], sides[1], consul_server, f5)
    # Same entries, two instances: two sets of F5 objects, each at its own name.
    for name in sorted(NAMES):
        paths = [f"pools /Common/{object_name(side.instance, f'{NAMESPACE}/{name}')}" for side in sides]
        assert paths[0] != paths[1]
        for side, path in zip(sides, paths, strict=True):
            assert path in side.before.f5, (path, sorted(side.before.f5))
    report("clusters", **figures)
