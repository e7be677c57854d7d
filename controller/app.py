"""Assembles the program: config -> extensions -> core -> HTTP API.

Both entry points use it: ``python -m controller run`` (no Kubernetes needed)
and the kopf layer in ``controller/main.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from controller.api import ApiServer
from controller.config import Config, load_config
from controller.core import Core
from controller.extension import BaseExtension, ExtensionContext, ExtensionStartError
from controller.instance import Identity
from controller.memory import trim_forever

if TYPE_CHECKING:
    from extensions import ExtensionSpec

log = logging.getLogger("interlook")

DEFAULT_CONFIG = "config.yml"


def config_path_from_env() -> str:
    return os.environ.get("INTERLOOK_CONFIG", DEFAULT_CONFIG)


def read_config(path: str | None = None, *, known: Mapping[str, ExtensionSpec] | None = None) -> Config:
    """The config at ``path``, with the steps of ``known`` (default: the known-extensions map)."""
    from extensions import KNOWN_EXTENSIONS, resolve

    known = KNOWN_EXTENSIONS if known is None else known
    return load_config(path or config_path_from_env(), lambda step: resolve(step, known),
                       all_sections=list(known.values()))


def setup_logging(level: str = "INFO", log_file: str = "") -> None:
    handler: logging.Handler
    if log_file and log_file not in ("stdout", "stderr"):
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stdout if log_file == "stdout" else sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Not shown by the format, so not collected for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None  # type: ignore[attr-defined]  # noqa: SLF001  # the caller's file and line
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _Formatter(logging.Formatter):
    """The standard format; the date and time formatted once per second, not once per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._second, self._text = second, time.strftime(self.default_time_format, self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"  # as logging.Formatter's default_msec_format


@dataclass
class App:
    """The program: a core, its extensions and the HTTP API.

    Under kopf peering a replica waits as a standby: the API answers (the
    readiness probe, ``/version``), the core and its extensions do not run,
    so nothing is read or written for any Service until ``activate()``.
    ``deactivate()`` stops them at once when a peer takes over; a later
    ``activate()`` starts from nothing and is fed again from the cluster.
    """

    config: Config
    core: Core
    extensions: dict[str, BaseExtension]
    api: ApiServer | None = None
    services: dict[str, Any] = field(default_factory=dict)
    identity: Identity = field(default_factory=Identity)
    trimming: asyncio.Task[None] | None = None

    async def resolve_identity(self) -> str:
        """Settle the instance id (configured, or derived from the providers' clusters and scopes)."""
        found = []
        for name in self.config.core.workflow_steps if not self.identity.configured else ():
            try:
                identity = await self.extensions[name].cluster_identity()
            except Exception as exc:  # noqa: BLE001 - any reason is reported the same way
                raise ExtensionStartError(name, f"cannot read the cluster id for the instance id ({exc}); "
                                                "set core.instanceId, or let it read it") from None
            if identity is not None:
                found.append(identity)
        instance = self.identity.resolve(found)
        log.info("instance id %s (%s)", instance, self.identity.source)
        return instance

    async def start(self, *, serve_api: bool = True, active: bool = True) -> None:
        if not self.identity.instance_id:
            await self.resolve_identity()
        self.core.standby = not active
        if self.trimming is None:
            self.trimming = asyncio.create_task(trim_forever(), name="malloc-trim")
        if active:
            await self.core.start()
        if serve_api:
            self.api = ApiServer(self.core, self.config.core.listen_address, self.config.core.listen_port)
            try:
                await self.api.start()
            except OSError as exc:
                await self.core.stop()
                raise RuntimeError(f"cannot listen on port {self.config.core.listen_port}: {exc}") from exc

    async def activate(self) -> None:
        """Become the active replica: start the core and its extensions (start-up checks included)."""
        if self.core.started:
            return
        await self.core.start()
        self.core.standby = False

    async def deactivate(self) -> None:
        """Become a standby at once: in-flight steps are cut short, the entries forgotten."""
        self.core.standby = True
        if self.core.started:
            await self.core.stop(abandon=True)

    async def stop(self) -> None:
        if self.trimming is not None:
            self.trimming.cancel()
            self.trimming = None
        if self.api is not None:
            await self.api.stop()
        if self.core.started:
            await self.core.stop()


def build_app(config: Config | str | None = None, *, services: dict[str, Any] | None = None,
              data_dir: Path | None = None, known: Mapping[str, ExtensionSpec] | None = None) -> App:
    """Build (not start) the core and its extensions from a config or config path.

    ``known`` replaces the known-extensions map, e.g. to run an extension of
    a test; a ``Config`` given must have been read with the same map.
    """
    from extensions import KNOWN_EXTENSIONS

    known = KNOWN_EXTENSIONS if known is None else known
    if not isinstance(config, Config):
        config = read_config(config, known=known)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    services = dict(services or {})
    identity = Identity(configured=config.core.instance_id)
    extensions: dict[str, BaseExtension] = {}
    core_ref: dict[str, Core] = {}

    def live_entries() -> Any:
        core = core_ref.get("core")
        return core.live_services() if core else {}

    for name in config.core.workflow_steps:
        spec = known[name]
        context = ExtensionContext(name=name, entries=live_entries, data_dir=data_dir or Path.cwd(),
                                   services=services, identity=identity)
        extensions[name] = spec.build(config.extensions[name], context)
    core = Core(config.core, extensions)
    core.identity = identity
    core_ref["core"] = core
    return App(config=config, core=core, extensions=extensions, services=services, identity=identity)
