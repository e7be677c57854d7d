"""Consul agents for the provisioner.consul tests.

``consul_agent``: the agent `make test` started (CONSUL_HTTP_ADDR and
CONSUL_DNS_PORT exported by scripts/components/consul.sh), or one of our own.
``private_agent``: a fresh agent a test may stop and restart (outage tests).
``acl_agent``: an agent with ACLs on, default policy deny, and a bootstrap token.
``consul``: a provisioner on ``consul_agent``, set up; the test's records go after it.
``requests_sent``: the requests the provisioner's client sends, counted by method.
A missing binary fails in CI and skips loudly elsewhere (tests/helpers.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extensions.provisioners.consul import ConsulProvisioner
from extensions.provisioners.consul.client import ConsulCatalog
from tests.consul.agent import ConsulAgent, consul_binary
from tests.consul.support import provisioner, remove_test_records
from tests.helpers import require_component

BUILD_HINT = "bash scripts/build-binaries.sh consul, or make deps"


@dataclass(frozen=True)
class AgentAddress:
    http_addr: str
    dns_port: int

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"


@pytest.fixture(scope="session")
def consul_bin() -> str:
    binary = consul_binary()
    require_component(binary is not None, "consul binary", BUILD_HINT)
    assert binary is not None
    return binary


def _own_agent(binary: str, tmp: Path, acl: bool = False) -> ConsulAgent:
    agent = ConsulAgent(binary, tmp, acl=acl)
    agent.start()
    return agent


@pytest.fixture(scope="session")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentAddress]:
    addr = os.environ.get("CONSUL_HTTP_ADDR", "")
    if addr:
        dns_port = os.environ.get("CONSUL_DNS_PORT", "")
        require_component(dns_port.isdigit(), "CONSUL_DNS_PORT (exported beside CONSUL_HTTP_ADDR)",
                          "scripts/components/consul.sh up")
        yield AgentAddress(addr.removeprefix("http://"), int(dns_port))
        return
    binary = consul_binary()
    require_component(binary is not None, "consul binary", BUILD_HINT)
    assert binary is not None
    agent = _own_agent(binary, tmp_path_factory.mktemp("consul-shared"))
    try:
        yield AgentAddress(agent.http_addr, agent.dns_port)
    finally:
        agent.cleanup()


@pytest.fixture
def private_agent(consul_bin: str, tmp_path: Path) -> Iterator[ConsulAgent]:
    agent = _own_agent(consul_bin, tmp_path / "consul")
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture(scope="module")
def acl_agent(consul_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    agent = _own_agent(consul_bin, tmp_path_factory.mktemp("consul-acl"), acl=True)
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture
async def consul(consul_agent: AgentAddress, unique: str) -> AsyncIterator[ConsulProvisioner]:
    prov = provisioner(consul_agent.url)
    await prov.setup()
    yield prov
    await prov.teardown()
    remove_test_records(consul_agent.url, unique)


@pytest.fixture
def requests_sent(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request the provisioner's client sends, by method."""
    sent: Counter[str] = Counter()
    original = ConsulCatalog._send

    async def counting(self: ConsulCatalog, method: str, *args: Any, **kwargs: Any) -> Any:
        sent[method] += 1
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(ConsulCatalog, "_send", counting)
    return sent


@pytest.fixture
def unique() -> str:
    """A suffix that keeps each test's names apart on a shared agent."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def dig() -> str:
    path = shutil.which("dig")
    require_component(path is not None, "dig (Debian package dnsutils)", "apt-get install -y dnsutils")
    assert path is not None
    return path


def dns_lookup(dig: str, dns_port: int, query: str) -> list[str]:
    """The A records Consul's DNS answers for ``query``."""
    out = subprocess.run([dig, "+short", "+time=2", "+tries=2", "@127.0.0.1", "-p", str(dns_port), query, "A"],
                         capture_output=True, text=True, check=True)
    return sorted(line for line in out.stdout.split() if line[:1].isdigit())
