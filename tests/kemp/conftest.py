"""Fixtures for the Kemp tests: a LoadMaster simulator over HTTPS, and a provisioner pointed at it.

When ``make env-up`` exported ``INTERLOOK_KEMP_URL`` and ``INTERLOOK_SIM_CA``
the running simulator is used (reset before each test through its control
endpoints); otherwise each test starts its own in this process.  Either way the
provisioner verifies the simulator's certificate with the simulator's CA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from controller.config import Report, Section
from controller.extension import ExtensionContext
from controller.instance import Identity
from extensions.provisioners.kemplm import KempConfig, KempProvisioner
from tests.simulators.kemp import KempSimulator
from tests.simulators.tlsutil import SimulatorTLS, ensure_tls

USERNAME = "admin"
PASSWORD = "admin"
INSTANCE = "site-a"


def kemp_context(instance: str = INSTANCE) -> ExtensionContext:
    return ExtensionContext("provisioner.kemplm", identity=Identity(instance_id=instance))


@dataclass
class Sim:
    """A handle on a simulator, driven through its HTTP control endpoints."""

    url: str
    ca_file: Path
    local: KempSimulator | None = None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=str(self.ca_file), timeout=10)

    async def stats(self) -> dict[str, Any]:
        async with self._client() as client:
            return (await client.get("/__sim/stats")).raise_for_status().json()

    async def writes(self) -> int:
        return int((await self.stats())["writes"])

    async def faults(self, **faults: Any) -> None:
        async with self._client() as client:
            (await client.post("/__sim/faults", json=faults)).raise_for_status()

    async def clear_faults(self) -> None:
        async with self._client() as client:
            (await client.delete("/__sim/faults")).raise_for_status()

    async def reset(self) -> None:
        async with self._client() as client:
            (await client.post("/__sim/reset")).raise_for_status()

    async def access(self, command: str, **params: Any) -> httpx.Response:
        """A raw API call, as an operator (or another tool) would make it."""
        async with self._client() as client:
            return await client.get(f"/access/{command}", params={k: str(v) for k, v in params.items()},
                                    auth=(USERNAME, PASSWORD))


@pytest.fixture(scope="session")
def sim_tls(tmp_path_factory: pytest.TempPathFactory) -> SimulatorTLS:
    return ensure_tls(tmp_path_factory.mktemp("kemp-tls"))


@pytest.fixture
async def sim(sim_tls: SimulatorTLS) -> AsyncIterator[Sim]:
    url, ca = os.environ.get("INTERLOOK_KEMP_URL"), os.environ.get("INTERLOOK_SIM_CA")
    if url and ca:
        handle = Sim(url=url.rstrip("/"), ca_file=Path(ca))
        await handle.reset()
        yield handle
        await handle.reset()
        return
    simulator = KempSimulator(username=USERNAME, password=PASSWORD, api_key="sim-api-key-0123", tls=sim_tls)
    await simulator.start()
    try:
        yield Sim(url=simulator.url, ca_file=simulator.ca_file, local=simulator)
    finally:
        await simulator.stop()


def kemp_config(sim: Sim, **overrides: Any) -> KempConfig:
    data: dict[str, Any] = {"endpoint": sim.url, "username": USERNAME, "password": PASSWORD,
                            "caFile": str(sim.ca_file)}
    data.update(overrides)
    report = Report()
    config = KempConfig.from_section(Section(data, "lb.kemplm", report))
    assert not report.errors, report.errors
    return config


@pytest.fixture
async def provisioner(sim: Sim) -> AsyncIterator[KempProvisioner]:
    extension = KempProvisioner(kemp_config(sim), kemp_context())
    await extension.setup()
    try:
        yield extension
    finally:
        await extension.teardown()
