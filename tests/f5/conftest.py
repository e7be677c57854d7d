"""Fixtures for the F5 tests: a fresh BIG-IP simulator per test, over HTTPS with its own CA.

The simulator runs in-process on a free port, so every test starts from an
empty appliance and reads exact write counts; nothing here needs
``make env-up``.  The provisioner always verifies the simulator's certificate
with the simulator's CA, never with ``insecureSkipVerify``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import pytest

from controller.extension import no_entries
from controller.messages import Service
from extensions.provisioners.f5ltm import F5Provisioner
from tests.f5.helpers import HTTP_POLICY, INSTANCE, SSL_POLICY, context, make_config
from tests.simulators.f5 import F5Simulator
from tests.simulators.tlsutil import SimulatorTLS, ensure_tls


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "f5: runs against the F5 BIG-IP simulator")


@pytest.fixture(scope="session")
def sim_tls(tmp_path_factory: pytest.TempPathFactory) -> SimulatorTLS:
    return ensure_tls(tmp_path_factory.mktemp("f5-tls"))


@pytest.fixture
async def bigip(sim_tls: SimulatorTLS) -> AsyncIterator[F5Simulator]:
    simulator = F5Simulator(tls=sim_tls, seed=1)
    simulator.state.add_policy(HTTP_POLICY, requires=("http",))
    simulator.state.add_policy(SSL_POLICY, requires=("ssl-persistence",))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


ProvisionerFactory = Callable[..., Awaitable[F5Provisioner]]


@pytest.fixture
async def provisioner_factory(bigip: F5Simulator) -> AsyncIterator[ProvisionerFactory]:
    started: list[F5Provisioner] = []

    async def build(clock: Callable[[], float] | None = None, instance: str = INSTANCE,
                    entries: Callable[[], Mapping[str, Service]] = no_entries, **overrides: Any) -> F5Provisioner:
        config = make_config(bigip, **overrides)
        kwargs = {"clock": clock} if clock is not None else {}
        provisioner = F5Provisioner(config, context(instance, entries), **kwargs)
        await provisioner.setup()
        started.append(provisioner)
        return provisioner

    yield build
    for provisioner in started:
        await provisioner.teardown()
