"""A recording proxy in front of Consul or the F5 simulator: who sent what, per replica.

Two replicas of one Deployment talk to the same Consul and the same BIG-IP
with the same credentials, so neither backend can say which of them wrote.
Each replica gets its own proxy instead: a transparent HTTP(S) forwarder on a
port of its own that notes every request (method, path, status) before
passing it on unchanged.  A standby's proxy then shows exactly what the
standby sent, the way the API server's audit log shows it per client
certificate.

The proxy runs on its own event loop in a thread: the tests block (process
starts, waits) and must not stall the replicas' traffic meanwhile.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

# Hop-by-hop headers, and those aiohttp sets itself for the body it sends.
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                  "trailer", "host", "content-length"}


@dataclass(frozen=True)
class Call:
    time: float       # epoch seconds, when the proxy received it
    method: str
    path: str         # with the query string
    status: int       # 0 when the backend could not be reached


class RecordingProxy:
    """Forward every request to ``upstream``; ``calls`` is what came through, in order.

    ``serve_tls`` is a (certificate, key) pair to serve HTTPS with (the
    simulator's own, so the replica verifies the proxy with the simulator's
    CA, as it would the appliance); ``upstream_ca`` verifies the backend.
    """

    def __init__(self, upstream: str, *, serve_tls: tuple[str, str] | None = None, upstream_ca: str | None = None):
        self.upstream = upstream.rstrip("/")
        self.serve_tls = serve_tls
        self.upstream_ca = upstream_ca
        self.calls: list[Call] = []
        self.url = ""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recording-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> RecordingProxy:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _start(self) -> str:
        client_ssl: ssl.SSLContext | bool = False
        if self.upstream.startswith("https:"):
            client_ssl = ssl.create_default_context(cafile=self.upstream_ca)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        server_ssl = None
        if self.serve_tls is not None:
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(*self.serve_tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=server_ssl)
        await site.start()
        port = int(self._runner.addresses[0][1])
        return f"{'https' if server_ssl else 'http'}://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- forwarding --------------------------------------------------------------
    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        received = time.time()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        body = await request.read()
        status = 0
        try:
            # The raw path, sent as it came: F5 paths hold '~' and '$filter' queries, Consul ':' in its queries.
            url = URL(self.upstream + request.raw_path, encoded=True)
            async with self._session.request(request.method, url, headers=headers, data=body or None,
                                             allow_redirects=False) as answer:
                status = answer.status
                content = await answer.read()
                out = web.Response(status=answer.status, body=content, headers={
                    k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED})
        except (aiohttp.ClientError, OSError):
            # The replica sees what it would see with the backend gone: a dropped connection.
            if request.transport is not None:
                request.transport.close()
            raise
        finally:
            self._record(Call(received, request.method, request.raw_path, status))
        return out

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    # -- what came through -------------------------------------------------------
    def seen(self, since: float = 0.0) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.time >= since]

    def writes(self, since: float = 0.0, *, prefix: str = "/") -> list[Call]:
        """Requests that may change something: every method but GET and HEAD, on paths under ``prefix``."""
        return [c for c in self.seen(since) if c.method not in ("GET", "HEAD") and c.path.startswith(prefix)]

    def count(self, method: str, path: str, since: float = 0.0) -> int:
        """Requests of ``method`` on exactly ``path`` (the query string aside)."""
        return sum(1 for c in self.seen(since) if c.method == method and c.path.split("?", 1)[0] == path)

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        by: dict[str, int] = {}
        for call in self.seen(since):
            key = f"{call.method} {call.path.split('?', 1)[0]}"
            by[key] = by.get(key, 0) + 1
        return dict(sorted(by.items(), key=lambda kv: -kv[1]))
