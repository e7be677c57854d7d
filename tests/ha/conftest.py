"""Fixtures of the HA tests: private components, and replicas that each run as their own API user.

Several Interlooks side by side (../shared/DESIGN.md, "Ownership, and several
Interlooks side by side"): two replicas under kopf peering, two instances with
their own namespaces and pools, two clusters.  Like tests/chaos, these tests
start their own components (tests/chaos/harness.py): a control plane with an
audit log and one client certificate per replica, so the audit log proves
which replica wrote what; per test a fresh Consul server and F5 simulator,
each replica reaching them through its own recording proxy
(tests/ha/proxy.py).  A missing binary fails in CI and skips loudly elsewhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.chaos import conftest as chaos_fixtures
from tests.chaos.harness import (
    DRIVER_USER,
    ConsulServer,
    Controller,
    ControlPlane,
    F5Process,
    Kube,
    binary,
    free_port,
    write_config,
)
from tests.ha.proxy import RecordingProxy
from tests.ha.support import Replica
from tests.helpers import require_component

BUILD_HINT = "bash scripts/build-binaries.sh all, or make deps"
# The Consul server and F5 simulator fixtures are tests/chaos's own, one per test.
consul_server = chaos_fixtures.consul_server
f5 = chaos_fixtures.f5
# One user per process a test runs at once: the audit log tells them apart.
REPLICA_USERS = ("ha-replica-a", "ha-replica-b", "ha-instance-1", "ha-instance-2")
# Every sweep each second, so that five passes take seconds; fast retries, as in tests/chaos.
SWEEP = "1s"
HA_CORE = {"retryBackoffBase": "500ms", "retryBackoffMax": "5s", "serviceWIPTimeout": "20s"}
# kopf's peering lifetime (provider.kubernetes.peeringLifetime): a standby
# takes over at most this long after the active one's last keepalive.
PEERING_LIFETIME = 15.0


def start_plane(state_dir: Path, users: tuple[str, ...] = REPLICA_USERS) -> ControlPlane:
    present = binary("etcd") is not None and binary("kube-apiserver") is not None
    require_component(present, "etcd / kube-apiserver binaries", BUILD_HINT)
    plane = ControlPlane(state_dir, audit=True, users=users)
    plane.start()
    return plane


@pytest.fixture(scope="session")
def ha_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("ha-kube"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
async def kube(ha_plane: ControlPlane) -> AsyncIterator[Kube]:
    client = Kube(ha_plane, DRIVER_USER)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def admin(ha_plane: ControlPlane) -> AsyncIterator[Kube]:
    """An audited client: the barrier of tests/ha/support.audit_barrier, the peering objects."""
    client = Kube(ha_plane, "admin")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def nodes(kube: Kube) -> list[str]:
    return await kube.ensure_nodes(2, prefix="ha-node")


async def new_namespace(kube: Kube, stem: str) -> str:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    await kube.ensure_namespace(name)
    return name


async def new_peering(admin: Kube) -> str:
    """A ClusterKopfPeering of its own for one test, as manifests/10-rbac.yaml makes one for a Deployment."""
    name = f"ha-{uuid.uuid4().hex[:8]}"
    await admin.create("/apis/kopf.dev/v1/clusterkopfpeerings",
                       {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}},
                       retry_for=30)
    return name


def ha_config(path: Path, *, consul_url: str, f5: F5Process, f5_url: str, namespaces: tuple[str, ...],
              listen_port: int, pool: str, core: dict[str, str] | None = None) -> Path:
    """tests/chaos's config, with every sweep at SWEEP and the F5 reached at ``f5_url``."""
    write_config(path, consul_url=consul_url, f5=f5, namespaces=namespaces, listen_port=listen_port, pool=pool,
                 extra_core={**HA_CORE, **(core or {})}, consul_reconcile=SWEEP)
    config: dict[str, Any] = json.loads(path.read_text())
    config["ipam"]["ipalloc"]["reconcileInterval"] = SWEEP
    config["provider"]["kubernetes"]["peeringLifetime"] = f"{PEERING_LIFETIME:g}s"
    config["lb"]["f5ltm"].update({"httpEndpoint": f5_url, "reconcileInterval": SWEEP})
    path.write_text(json.dumps(config, indent=2))
    return path


MakeReplica = Callable[..., Replica]


@pytest.fixture
def make_replica(consul_server: ConsulServer, f5: F5Process, tmp_path: Path) -> Iterator[MakeReplica]:
    """Build (not start) a replica: its own user on ``plane``, its own proxies to this test's Consul and F5."""
    made: list[Replica] = []

    def make(plane: ControlPlane, user: str, *, namespaces: tuple[str, ...] = (), pool: str = "10.200.0.0/16",
             peering: str = "", priority: int = 0, core: dict[str, str] | None = None) -> Replica:
        consul = RecordingProxy(consul_server.url).start()
        tls = (str(Path(f5.ca).parent / "server.pem"), str(Path(f5.ca).parent / "server-key.pem"))
        bigip = RecordingProxy(f5.url, serve_tls=tls, upstream_ca=f5.ca).start()
        workdir = tmp_path / f"{user}-{len(made)}"
        workdir.mkdir()
        port = free_port()
        config = ha_config(workdir / "config.yml", consul_url=consul.url, f5=f5, f5_url=bigip.url,
                           namespaces=namespaces, listen_port=port, pool=pool, core=core)
        controller = Controller(config, plane.kubeconfig(user), workdir / "controller.log", port,
                                peering=peering, priority=priority)
        replica = Replica(user, controller, consul, bigip)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        replica.controller.stop()
    for replica in made:
        replica.consul.stop()
        replica.f5.stop()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    """Print a test's figures on the terminal even when output is captured."""

    def emit(test: str, **figures: Any) -> None:
        line = f"HA {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
        with capsys.disabled():
            print("\n" + line, flush=True)

    return emit
