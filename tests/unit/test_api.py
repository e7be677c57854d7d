"""The HTTP API: Go-compatible /services, health, workflow, extensions, version, metrics."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp

from controller.api import ApiServer
from controller.config import CoreConfig
from controller.core import Core
from controller.messages import Action, Message, Service, Target
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


async def test_services_and_health_answer_while_a_provider_error_exists(tmp_path):
    provider = FakeProvider()
    dns = RecordingProvisioner("provisioner.dns")
    core = Core(CoreConfig(workflow_steps=("provider.fake", "provisioner.dns"),
                           workflow_entries_file=str(tmp_path / "entries.json")),
                {"provider.fake": provider, "provisioner.dns": dns})
    await core.start()
    api = ApiServer(core, "127.0.0.1", 0)
    await api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        await provider.send_queue.put(Message(Action.ADD, Service(name="bad"), error="interlook.port: 'http'"))
        await eventually(lambda: "bad" in core.entries)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/services") as r:
                assert r.status == 200
                entry = (await r.json())["bad"]
            async with http.get(f"{base}/services/bad") as r:
                assert r.status == 200
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
        assert entry["error"] == "interlook.port: 'http'"
        assert entry["error_step"] == "provider.fake"
        assert entry["next_retry"] == "0001-01-01T00:00:00Z"
    finally:
        await api.stop()
        await core.stop()


async def test_health_names_a_core_task_that_is_not_working():
    provider = FakeProvider()
    core = Core(CoreConfig(workflow_steps=("provider.fake",)), {"provider.fake": provider})
    await core.start()
    api = ApiServer(core, "127.0.0.1", 0)
    await api.start()
    try:
        core._task_failing("persister", "cannot write /data/entries.json: OSError: disk full")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api.port}/health") as r:
                assert r.status == 503
                body = await r.json()
        assert body["problems"] == {"persister": "cannot write /data/entries.json: OSError: disk full"}
    finally:
        await api.stop()
        await core.stop()


async def test_connections_that_never_finish_their_headers_are_closed():
    # Slowloris: 300 connections send a header line now and then but never
    # the blank line that ends the headers.  A bound on idle time alone would
    # keep them open for ever; the server must close every one of them while
    # it goes on answering real requests.
    provider = FakeProvider()
    core = Core(CoreConfig(workflow_steps=("provider.fake",)), {"provider.fake": provider})
    await core.start()
    api = ApiServer(core, "127.0.0.1", 0, header_timeout=1.0)
    await api.start()
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            writer.write(b"GET /services HTTP/1.1\r\nHost: interlook\r\n")
            connections.append((reader, writer))
        trickling = asyncio.create_task(_trickle(connections))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api.port}/health") as r:
                assert r.status == 200
        started = time.monotonic()
        # 60 s guards against a hang; it is not what is measured.
        answers = await asyncio.wait_for(asyncio.gather(*(_until_closed(reader) for reader, _ in connections)),
                                         timeout=60)
        print(f"300 slow connections closed {time.monotonic() - started:.1f}s after the first request")
        trickling.cancel()
        assert answers == [b""] * 300  # closed, never answered
    finally:
        for _, writer in connections:
            writer.close()
        await api.stop()
        await core.stop()


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before closing.  A close with our trickled bytes
    still unread in its socket is a reset rather than an end of stream: both
    are the server closing."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def _trickle(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for n in itertools.count():
        for _, writer in connections:
            if not writer.is_closing():
                writer.write(f"X-Slow-{n}: 1\r\n".encode())
        await asyncio.sleep(0.2)
