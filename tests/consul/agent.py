"""A Consul dev agent the tests can start, stop and restart on their own.

`scripts/components/consul.sh` gives `make test` one shared agent; the tests
that stop the agent (outage) or need ACLs start a private one here, so they
never disturb the shared one.  Ports are picked once and kept across
restarts: the provisioner under test keeps talking to the same address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
# How long an agent may take to elect itself; generous for a busy CI machine.
START_TIMEOUT = float(os.environ.get("CONSUL_START_TIMEOUT", "60"))


def consul_binary() -> str | None:
    """The consul binary scripts/build-binaries.sh would use, or None."""
    try:
        out = subprocess.run(["bash", str(ROOT / "scripts/build-binaries.sh"), "path", "consul"],
                             capture_output=True, text=True, check=False)
    except OSError:
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path else None


@dataclass
class ConsulAgent:
    binary: str
    state_dir: Path
    acl: bool = False
    # With ACLs on: the bootstrap (initial management) token, full rights.
    bootstrap_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = "interlook-test"
    # Where it binds and listens: loopback, or e.g. the test node's bridge so Pods reach it.
    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.http_port, self.dns_port, server, serf_lan, serf_wan, grpc = free_ports(6, self.address, udp=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "node_name": self.name,
            "ports": {"http": self.http_port, "dns": self.dns_port, "server": server,
                      "serf_lan": serf_lan, "serf_wan": serf_wan, "grpc": grpc, "grpc_tls": -1},
        }
        if self.acl:
            config["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                # The agent uses the same token for its own node, so its
                # anti-entropy does not fill the log with denials.
                "tokens": {"initial_management": self.bootstrap_token, "agent": self.bootstrap_token},
            }
        (self.state_dir / "agent.json").write_text(json.dumps(config))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_addr(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "consul.log"

    def start(self) -> None:
        if self.running:
            return
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "agent", "-dev", "-bind", self.address, "-client", self.address,
                 "-config-file", str(self.state_dir / "agent.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_for_leader()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _wait_for_leader(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"consul agent exited at start; see {self.log_file}:\n{self._log_tail()}")
            if self._leader():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"consul agent elected no leader in {START_TIMEOUT}s; see {self.log_file}")

    def _leader(self) -> str:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/status/leader", timeout=2) as response:
                return str(json.loads(response.read()) or "")
        except (OSError, ValueError, urllib.error.URLError):
            return ""

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


if __name__ == "__main__":  # a quick manual check: python -m tests.consul.agent
    import sys
    import tempfile

    binary = consul_binary()
    if binary is None:
        sys.exit("no consul binary (bash scripts/build-binaries.sh consul)")
    agent = ConsulAgent(binary, Path(tempfile.mkdtemp(prefix="consul-agent-")), acl="--acl" in sys.argv)
    # SIGTERM would end Python without running `finally`, orphaning the agent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    agent.start()
    print(f"export CONSUL_HTTP_ADDR={agent.http_addr}\nexport CONSUL_DNS_PORT={agent.dns_port}")
    if agent.acl:
        print(f"export CONSUL_HTTP_TOKEN={agent.bootstrap_token}")
    sys.stdout.flush()
    try:
        signal.pause()
    finally:
        agent.cleanup()
