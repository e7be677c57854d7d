"""The HTTP API: Go-compatible /services, health, workflow, extensions, version, metrics."""

from __future__ import annotations

import aiohttp

from controller.api import ApiServer
from controller.config import CoreConfig
from controller.core import Core
from controller.messages import Service, Target
from controller.status import DEPLOYED
from tests.helpers import eventually
from tests.unit.fakes import FakeProvider, RecordingProvisioner


async def test_api_serves_entries_in_the_go_shape_and_metrics():
    provider = FakeProvider()
    dns = RecordingProvisioner("provisioner.dns")
    core = Core(CoreConfig(workflow_steps=("provider.fake", "provisioner.dns")),
                {"provider.fake": provider, "provisioner.dns": dns})
    await core.start()
    api = ApiServer(core, "127.0.0.1", 0)
    await api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        await provider.publish(Service(name="ns/web", targets=(Target("10.0.0.1", 30000),),
                                       dns_names=("web.example.com",)))
        await eventually(lambda: getattr(core.entries.get("ns/web"), "state", "") == DEPLOYED)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
            async with http.get(f"{base}/services") as r:
                body = await r.json()
            entry = body["ns/web"]
            for key in ("state", "expected_state", "work_in_progress", "wip_time", "error", "info",
                        "time_detected", "last_update", "close_time", "service"):
                assert key in entry
            assert entry["state"] == "deployed"
            assert entry["service"]["dns_name"] == ["web.example.com"]
            assert entry["service"]["targets"] == [{"host": "10.0.0.1", "port": 30000, "weight": 1}]
            async with http.get(f"{base}/workflow") as r:
                assert (await r.json())["steps"] == ["provider.fake", "provisioner.dns"]
            async with http.get(f"{base}/extensions") as r:
                assert (await r.json())["provisioner.dns"]["status"] == "running"
            async with http.get(f"{base}/version") as r:
                assert "version" in await r.json()
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'interlook_entries{state="deployed"} 1.0' in text
            assert 'interlook_messages_total{action="add",extension="provisioner.dns"} 1.0' in text
            assert "interlook_step_duration_seconds_bucket" in text
    finally:
        await api.stop()
        await core.stop()
