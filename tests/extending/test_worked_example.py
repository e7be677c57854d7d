"""docs/EXTENDING.md's worked example, run by the core end to end: the checklist stays true.

The two example extensions are registered through a map of their own
(nothing in extensions/__init__.py names them) and configured from YAML like
any other step, between them the built-in IP pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.app import App, build_app
from controller.status import DEPLOYED, UNDEPLOYED
from extensions import KNOWN_EXTENSIONS, ExtensionSpec, extension_map
from tests.helpers import eventually

STATIC_FILE = ExtensionSpec("provider.staticfile", section="provider.staticfile",
                            module="tests.extending.staticfile",
                            config_class="StaticFileConfig", extension_class="StaticFileProvider")
HOSTS_FILE = ExtensionSpec("provisioner.hostsfile", section="dns.hostsfile", module="tests.extending.hostsfile",
                           config_class="HostsFileConfig", extension_class="HostsFileProvisioner",
                           aliases=("dns.hostsfile",))
KNOWN = extension_map(*KNOWN_EXTENSIONS.values(), STATIC_FILE, HOSTS_FILE)

WEB = {"shop/web": {"dns_name": ["web.example.com", "www.example.com"],
                    "targets": [{"host": "10.0.0.1", "port": 30080}]}}


class Files:
    def __init__(self, root: Path):
        self.services = root / "services.json"
        self.hosts = root / "hosts"
        self.config = root / "config.yml"

    def list_services(self, services: dict[str, object]) -> None:
        self.services.write_text(json.dumps(services))

    def host_lines(self) -> list[str]:
        return self.hosts.read_text().splitlines() if self.hosts.exists() else []


@pytest.fixture
async def example(tmp_path: Path):
    files = Files(tmp_path)
    # The Go-style step name dns.hostsfile works as the alias the spec declares.
    files.config.write_text(f"""
core:
  workflowSteps: provider.staticfile,ipam.ipalloc,dns.hostsfile
provider:
  staticfile: {{path: "{files.services}", pollInterval: 50ms}}
ipam:
  ipalloc: {{network_cidr: 192.0.2.0/29}}
dns:
  hostsfile: {{path: "{files.hosts}", reconcileInterval: 50ms}}
""")
    return files


async def started(files: Files) -> App:
    app = build_app(str(files.config), known=KNOWN, data_dir=files.config.parent)
    await app.start(serve_api=False)
    return app


async def test_a_listed_service_gets_an_ip_and_a_hosts_line_and_loses_both_when_unlisted(example: Files):
    example.list_services(WEB)
    app = await started(example)
    try:
        assert app.core.steps == ("provider.staticfile", "provisioner.ipalloc", "provisioner.hostsfile")
        await eventually(lambda: getattr(app.core.entry("shop/web"), "state", "") == DEPLOYED)
        assert example.host_lines() == ["192.0.2.1 web.example.com www.example.com # interlook:shop/web"]
        example.list_services({})
        await eventually(lambda: app.core.entry("shop/web").state == UNDEPLOYED)  # type: ignore[union-attr]
        assert example.host_lines() == []
    finally:
        await app.stop()


async def test_the_orphan_sweep_removes_lines_of_gone_entries_and_keeps_lines_it_did_not_make(example: Files):
    example.list_services({})
    example.hosts.write_text("127.0.0.1 localhost\n192.0.2.5 old.example.com # interlook:shop/gone\n")
    app = await started(example)
    try:
        await eventually(lambda: example.host_lines() == ["127.0.0.1 localhost"])
    finally:
        await app.stop()
