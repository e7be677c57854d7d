"""Fixtures of the fault-injection tests: private components these tests may break.

The chaos tests kill the controller, stop Consul and restart the API server,
so none of them touches the components `make test` shares: one private
control plane per session (tests/chaos/harness.py), and per test a fresh
Consul server (with a data directory, so an outage keeps the catalog), a fresh
F5 simulator, its own namespace and its own controller process watching only
that namespace.  A missing binary fails in CI and skips loudly elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.chaos.harness import (
    CONTROLLER_USER,
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
from tests.helpers import require_component
from tests.swarm.conftest import services, swarm  # noqa: F401 (fixtures of the Swarm malformed-labels test)

BUILD_HINT = "bash scripts/build-binaries.sh all, or make deps"
# Tighter than the defaults, so faults heal within a test's patience.
CHAOS_CORE = {"retryBackoffBase": "500ms", "retryBackoffMax": "5s", "serviceWIPTimeout": "20s"}


def chaos_int(name: str, default: int) -> int:
    """Sizes default to the issue's; e.g. CHAOS_SERVICES=100 CHAOS_KILLS=3 make chaos for a quick run."""
    return int(os.environ.get(name, default))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    present = binary("etcd") is not None and binary("kube-apiserver") is not None
    require_component(present, "etcd / kube-apiserver binaries", BUILD_HINT)
    plane = ControlPlane(tmp_path_factory.mktemp("chaos-kube"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def consul_server(tmp_path: Path) -> Iterator[ConsulServer]:
    require_component(binary("consul") is not None, "consul binary", BUILD_HINT)
    server = ConsulServer(tmp_path / "consul")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def f5(tmp_path: Path) -> Iterator[F5Process]:
    simulator = F5Process(tmp_path / "f5")
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    client = Kube(control_plane, DRIVER_USER)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def namespace(kube: Kube) -> str:
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    await kube.ensure_namespace(name)
    return name


@pytest.fixture
async def nodes(kube: Kube) -> list[str]:
    return await kube.ensure_nodes(2, prefix="chaos-node")


@pytest.fixture
def controller(control_plane: ControlPlane, consul_server: ConsulServer, f5: F5Process, namespace: str,
               tmp_path: Path) -> Iterator[Controller]:
    """A controller for this test's namespace, not started yet; stopped at the end."""
    port = free_port()
    config = write_config(tmp_path / "config.yml", consul_url=consul_server.url, f5=f5, namespaces=(namespace,),
                          listen_port=port, extra_core=CHAOS_CORE, consul_reconcile="5s")
    process = Controller(config, control_plane.kubeconfig(CONTROLLER_USER), tmp_path / "controller.log", port)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    """Print a test's figures on the terminal even when output is captured."""

    def emit(test: str, **figures: Any) -> None:
        line = f"CHAOS {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
        with capsys.disabled():
            print("\n" + line, flush=True)

    return emit
