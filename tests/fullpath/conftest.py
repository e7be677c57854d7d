"""Fixtures of the full-path tests: the real controller, the real API server, and a real DNS / load balancer.

The Kubernetes and Consul fixtures are the ones of tests/kubernetes and
tests/consul, imported here by name (a non-root conftest may not use
``pytest_plugins``).  What is new:

* ``write_config``: the controller's config with a provisioner section
  (``dns.consul`` or ``lb.f5ltm``) beside the Kubernetes provider and ipalloc;
* ``durable_consul``: a private one-node Consul *server with a data directory*
  (tests/chaos/harness.py), which the outage test stops and starts again: its
  catalog survives the outage, so the records Interlook wrote before it are
  still there afterwards and must really be removed;
* ``bigip``: a fresh BIG-IP simulator per test, over HTTPS with its own CA,
  served from a thread of this process (the tests themselves are blocking),
  inspected only through its ``/__sim`` endpoints, verified with the CA.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
import yaml

from tests.chaos.harness import ConsulServer, binary
from tests.consul.conftest import consul_agent, consul_bin  # noqa: F401 - fixtures, by name
from tests.helpers import require_component
from tests.kubernetes.conftest import (  # noqa: F401 - fixtures, by name
    POOL,
    Controller,
    admin,
    cluster,
    core_api,
    kubeconfig,
    make_controller,
    namespace,
)
from tests.simulators.f5 import F5Simulator

# Tighter than the defaults, so a healed outage converges within a test's patience.
FAST_CORE = {"retryBackoffBase": "500ms", "retryBackoffMax": "3s", "serviceWIPTimeout": "30s"}


def write_config(controller: Controller, steps: str, **sections: dict[str, Any]) -> Controller:
    """Give ``controller`` the workflow ``steps`` and the extra config ``sections`` (e.g. ``dns=...``)."""
    config = yaml.safe_load(controller.config_path.read_text())
    config["core"].update({"workflowSteps": steps, **FAST_CORE})
    for key, value in sections.items():
        config[key] = value
    controller.config_path.write_text(yaml.safe_dump(config))
    return controller


@pytest.fixture
def durable_consul(tmp_path: Path) -> Iterator[ConsulServer]:
    require_component(binary("consul") is not None, "consul binary",
                      "bash scripts/build-binaries.sh consul, or make deps")
    server = ConsulServer(tmp_path / "consul-server")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class BigIP:
    """An F5Simulator on its own event loop in a thread, looked at over its HTTPS ``/__sim`` API."""

    def __init__(self, tls_dir: Path):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="f5-simulator", daemon=True)
        self._thread.start()
        self.simulator = F5Simulator(tls_dir=tls_dir, seed=1)
        self.url: str = self._run(self.simulator.start())
        self.ca_file = self.simulator.ca_file

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def _sim(self, what: str, body: dict[str, Any] | None = None) -> Any:
        with httpx.Client(verify=self.ca_file, timeout=30) as client:
            answer = client.get(f"{self.url}/__sim/{what}") if body is None else \
                client.post(f"{self.url}/__sim/{what}", json=body)
            answer.raise_for_status()
            return answer.json()

    def state(self) -> dict[str, Any]:
        return dict(self._sim("state"))

    def stats(self) -> dict[str, Any]:
        return dict(self._sim("stats"))

    def seed_policy(self, full_path: str) -> None:
        """Create a published LTM policy, as the operator would before using policy mode."""
        self._sim("seed", {"policies": [{"fullPath": full_path, "requires": ["http"]}]})

    def close(self) -> None:
        try:
            self._run(self.simulator.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@pytest.fixture
def bigip(tmp_path: Path) -> Iterator[BigIP]:
    simulator = BigIP(tmp_path / "f5-tls")
    try:
        yield simulator
    finally:
        simulator.close()


@pytest.fixture
def fullpath_controller(make_controller: Callable[..., Controller],  # noqa: F811 - the fixture, by name
                        namespace: str) -> Callable[..., Controller]:  # noqa: F811
    """A controller for this test's namespace with the given workflow and sections, started."""

    def build(steps: str, **sections: dict[str, Any]) -> Controller:
        controller = make_controller([namespace])
        return write_config(controller, steps, **sections).start()

    return build


__all__ = ["POOL", "BigIP", "write_config"]
