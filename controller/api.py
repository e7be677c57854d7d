"""The small HTTP API: health, entries, workflow, extensions, version, metrics.

``/services`` keeps the Go program's JSON (entries keyed by name) so existing
dashboards and scripts keep working.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from controller import __version__
from controller.core import Core
from controller.entries import dump_entries

log = logging.getLogger("interlook.api")


def make_app(core: Core) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/health")
    async def health(_: web.Request) -> web.Response:
        if core.standby:
            # A healthy standby is ready to take over: it must pass readiness probes.
            return web.json_response({"status": "standby"})
        problems = core.health_problems()
        if problems:
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    @routes.get("/services")
    async def services(_: web.Request) -> web.Response:
        return web.json_response(dump_entries(core.entries))

    @routes.get("/services/{name:.+}")
    async def one_service(request: web.Request) -> web.Response:
        entry = core.entries.get(request.match_info["name"])
        if entry is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(entry.to_dict())

    @routes.get("/workflow")
    async def workflow(_: web.Request) -> web.Response:
        return web.json_response({"steps": list(core.steps), "provisioners": list(core.provisioners)})

    @routes.get("/extensions")
    async def extensions(_: web.Request) -> web.Response:
        return web.json_response(core.extension_status())

    @routes.get("/version")
    async def version(_: web.Request) -> web.Response:
        identity = core.identity
        return web.json_response({"version": __version__, "name": "interlook",
                                  "instance": identity.instance_id if identity else "",
                                  "instance_source": identity.source if identity else "",
                                  "role": "standby" if core.standby else "active"})

    @routes.get("/metrics")
    async def metrics(_: web.Request) -> web.Response:
        core._update_gauges()
        return web.Response(body=core.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes(routes)
    return app


# How long a client may take from opening a connection (or from the end of
# the previous response) to the end of its request headers.  Without a bound,
# connections that never finish their headers (slowloris) are held open, one
# file descriptor each, until the process runs out of them.
HEADER_TIMEOUT = 5.0


class ApiServer:
    def __init__(self, core: Core, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT):
        self.core, self.host, self.port = core, host, port
        self.header_timeout = header_timeout
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        # aiohttp arms its keep-alive timer when a connection opens and when a
        # response ends, and stops it only once a request's headers are
        # complete: it is the bound on receiving headers (and on idle
        # keep-alive connections, which this small API does not need to keep).
        self._runner = web.AppRunner(make_app(self.core), access_log=None, keepalive_timeout=self.header_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        sockets = server.sockets if server is not None else []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("HTTP API listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
