"""`python -m controller run` with a Swarm-only config: no Kubernetes anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.swarm.conftest import ROOT, ServiceFactory, SwarmEnv

pytestmark = [pytest.mark.integration, pytest.mark.swarm]

CONFIG = """\
core:
  logLevel: DEBUG
  listenAddress: 127.0.0.1
  listenPort: {port}
  workflowSteps: provider.swarm,provisioner.ipalloc
  workflowEntriesFile: {entries}
  workflowHousekeeperInterval: 1s
provider:
  swarm:
    endpoint: {endpoint}
    labelSelector:
      - {selector}
    pollInterval: 1h
ipam:
  ipalloc:
    network_cidr: 198.51.100.0/28
    db_file: {db}
"""


def start(config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBERNETES_"))}
    env["INTERLOOK_CONFIG"] = str(config)
    log = (tmp_path / "interlook.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "controller", "run"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(check: Any, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"interlook exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            value = check()
        except (urllib.error.URLError, ConnectionError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_run_deploys_a_swarm_service_visible_in_services(swarm: SwarmEnv, services: ServiceFactory,
                                                         tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "interlook.yml"
    config.write_text(CONFIG.format(port=port, entries=tmp_path / "entries.json", endpoint=swarm.docker_host,
                                    selector=services.selector, db=tmp_path / "ipalloc.json"))
    log = tmp_path / "interlook.log"
    process = start(config, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get_json(f"{base}/health").get("status") == "ok", process, log, "/health ok")
        services.create("cli", hosts="cli.example.com", replicas=2)
        name = services.name("cli")

        def deployed() -> Any:
            entry = get_json(f"{base}/services").get(name)
            return entry if entry and entry["state"] == "deployed" else None

        entry = wait_for(deployed, process, log, f"{name} deployed in /services")
        assert entry["expected_state"] == "deployed"
        assert entry["error"] == ""
        assert entry["service"]["public_ip"].startswith("198.51.100.")
        assert entry["service"]["dns_name"] == ["cli.example.com"]
        assert [t["weight"] for t in entry["service"]["targets"]] == [2]
        assert entry["service"]["provider"] == "provider.swarm"
    finally:
        stop(process)
    assert process.returncode == 0, log.read_text()[-3000:]


def test_run_fails_to_start_when_the_daemon_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "interlook.yml"
    config.write_text(CONFIG.format(port=free_port(), entries=tmp_path / "entries.json",
                                    endpoint=f"unix://{tmp_path}/nothing-here.sock", selector="a=b",
                                    db=tmp_path / "ipalloc.json"))
    env = {**os.environ, "INTERLOOK_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-m", "controller", "run"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "provider.swarm" in result.stderr
    assert "cannot reach the Docker daemon" in result.stderr
    assert "nothing-here.sock" in result.stderr
