"""A real Docker Engine in Swarm mode for the provider.swarm tests.

``swarm``: the daemon `make test` started (DOCKER_HOST and INTERLOOK_TEST_IMAGE
exported by scripts/components/docker.sh), or one this session starts with the
same script (and stops at the end).  No dockerd, or a daemon that does not
answer: a failure in CI, a loud skip elsewhere (tests/helpers.py).

``services``: creates labelled services with unique names, published ports
and a per-test label, and removes them after the test.  Each test's provider
selects on that label, so tests never see each other's services.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import EndpointSpec, ServiceMode

from tests.helpers import require_component

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "components" / "docker.sh"
HINT = "apt-get install -y docker.io busybox-static, then scripts/components/docker.sh up (or make env-up)"
TEST_LABEL = "interlook.test"

pytestmark = [pytest.mark.integration, pytest.mark.swarm]


@dataclass
class SwarmEnv:
    docker_host: str
    image: str
    # True when the daemon is the one our script manages (so a test may restart it).
    restartable: bool
    state_dir: str

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=30)

    def restart_daemon(self) -> None:
        """Stop and start dockerd, keeping the swarm (scripts/components/docker.sh restart)."""
        env = {**os.environ, "INTERLOOK_STATE": self.state_dir}
        subprocess.run(["bash", str(SCRIPT), "restart"], check=True, env=env, stdout=subprocess.DEVNULL,
                       timeout=180)


def _exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


def _answers(docker_host: str) -> bool:
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=10)
        try:
            swarm = client.info().get("Swarm") or {}
            return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def swarm() -> Iterator[SwarmEnv]:
    state_dir = os.environ.get("INTERLOOK_STATE", str(ROOT / ".env"))
    our_socket = f"unix://{state_dir}/docker/docker.sock"
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        require_component(_answers(host), f"Docker Swarm manager at DOCKER_HOST={host}", HINT)
        yield SwarmEnv(host, os.environ.get("INTERLOOK_TEST_IMAGE", "interlook-test/busybox:latest"),
                       restartable=host == our_socket, state_dir=state_dir)
        return
    require_component(shutil.which("dockerd") is not None, "dockerd (Debian docker.io)", HINT)
    env = {**os.environ, "INTERLOOK_STATE": state_dir}
    already = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True).returncode == 0
    result = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    require_component(result.returncode == 0, "dockerd in Swarm mode (scripts/components/docker.sh up failed: "
                      + result.stderr.strip()[-500:] + ")", HINT)
    exports = _exports(result.stdout)
    try:
        yield SwarmEnv(exports["DOCKER_HOST"], exports["INTERLOOK_TEST_IMAGE"], restartable=True,
                       state_dir=state_dir)
    finally:
        if not already:
            subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


_ports = itertools.count(random.randint(20000, 40000))


@dataclass
class ServiceFactory:
    env: SwarmEnv
    client: docker.DockerClient
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    @property
    def selector(self) -> str:
        """The labelSelector item that picks this test's services only."""
        return f"{TEST_LABEL}={self.run_id}"

    def name(self, base: str) -> str:
        return f"ilt-{self.run_id}-{base}"

    def create(self, base: str, *, hosts: str | None = "app.example.com", port: str | None = "80",
               ssl: str | None = None, replicas: int = 1, publish: dict[int, int] | None = None,
               mode: str = "ingress", extra_labels: dict[str, str] | None = None, selected: bool = True) -> Any:
        """A busybox httpd service; ``publish`` maps published -> target port (default one free port -> 80)."""
        labels = {TEST_LABEL: self.run_id if selected else "other"}
        if hosts is not None:
            labels["interlook.hosts"] = hosts
        if port is not None:
            labels["interlook.port"] = port
        if ssl is not None:
            labels["interlook.ssl"] = ssl
        labels.update(extra_labels or {})
        if publish is None:
            publish = {next(_ports): 80}
        ports = [{"Protocol": "tcp", "PublishedPort": p, "TargetPort": t, "PublishMode": mode}
                 for p, t in publish.items()]
        name = self.name(base)
        service = self.client.services.create(
            self.env.image, ["httpd", "-f", "-p", "80", "-h", "/www"], name=name, labels=labels,
            endpoint_spec=EndpointSpec(ports=ports), mode=ServiceMode("replicated", replicas=replicas),
            # busybox httpd as PID 1 ignores SIGTERM: do not wait the default 10 s for it.
            stop_grace_period=1_000_000_000,
        )
        self.created.append(service.id)
        return service

    def scale(self, service: Any, replicas: int) -> None:
        """Change the replica count only (as `docker service scale`: no rolling update)."""
        self.update_spec(service, lambda spec: spec.update(Mode={"Replicated": {"Replicas": replicas}}))

    def set_labels(self, service: Any, labels: dict[str, str]) -> None:
        self.update_spec(service, lambda spec: spec.update(Labels=labels))

    def update_spec(self, service: Any, change: Any) -> None:
        api = self.client.api
        current = api.inspect_service(service.id)
        spec = dict(current["Spec"])
        change(spec)
        # The raw endpoint: the SDK's update_service rebuilds parts of the spec,
        # which makes the swarm replace every task.
        response = api._post_json(api._url("/services/{0}/update", service.id), data=spec,
                                  params={"version": current["Version"]["Index"]})
        api._raise_for_status(response)

    def remove(self, service: Any) -> None:
        service.remove()

    def cleanup(self) -> None:
        for service_id in self.created:
            try:
                self.client.api.remove_service(service_id)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException:
                time.sleep(1)


@pytest.fixture
def services(swarm: SwarmEnv) -> Iterator[ServiceFactory]:
    client = swarm.client()
    factory = ServiceFactory(swarm, client)
    try:
        yield factory
    finally:
        factory.cleanup()
        client.close()
