"""Running provider.swarm in a test: alone with its queues, or in a Core with ipalloc."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from controller.config import CoreConfig
from controller.core import Core
from controller.entries import Entry
from controller.extension import ExtensionContext
from controller.messages import Message
from controller.status import EntryStatus
from extensions.providers.swarm import SwarmConfig, SwarmProvider
from extensions.provisioners.ipalloc import IPAllocConfig, IPAllocProvisioner
from extensions.provisioners.ipalloc.config import LEGACY_POOL, PoolConfig

POOL = ipaddress.ip_network("203.0.113.0/28")
# Long enough that a test passing proves detection came from the events stream.
NEVER = 3600.0
WAIT = 60.0


def swarm_config(docker_host: str, selector: list[str], poll_interval: float = NEVER) -> SwarmConfig:
    return SwarmConfig(endpoint=docker_host, label_selector=tuple(selector), poll_interval=poll_interval)


async def eventually(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class ProviderRun:
    provider: SwarmProvider
    to_provider: asyncio.Queue[Message]
    from_provider: asyncio.Queue[Message]
    seen: list[Message] = field(default_factory=list)

    async def next_message(self, where: Callable[[Message], bool] = lambda m: True,
                           timeout: float = WAIT) -> Message:
        """The next message the provider sends that satisfies ``where`` (others are kept in ``seen``)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.from_provider.get()
                self.seen.append(message)
                if where(message):
                    return message


@contextlib.asynccontextmanager
async def running_provider(config: SwarmConfig) -> AsyncIterator[ProviderRun]:
    provider = SwarmProvider(config, ExtensionContext(name="provider.swarm"))
    to_provider: asyncio.Queue[Message] = asyncio.Queue()
    from_provider: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(provider.start(to_provider, from_provider))
    try:
        await provider.wait_ready()
        yield ProviderRun(provider, to_provider, from_provider)
    finally:
        await provider.stop()
        with contextlib.suppress(Exception):
            await task


@dataclass
class CoreRun:
    core: Core
    provider: SwarmProvider
    history: list[EntryStatus] = field(default_factory=list)

    def entry(self, name: str) -> Entry | None:
        return self.core.entry(name)

    async def deployed(self, name: str, check: Callable[[Entry], bool] = lambda e: True,
                       timeout: float = WAIT) -> Entry:
        def ready() -> Entry | None:
            entry = self.core.entry(name)
            if entry and entry.state == "deployed" and not entry.work_in_progress and check(entry):
                return entry
            return None
        return await eventually(ready, timeout, f"{name} deployed")

    async def undeployed(self, name: str, timeout: float = WAIT) -> Entry:
        def gone() -> Entry | None:
            entry = self.core.entry(name)
            if entry and entry.expected_state == "undeployed" and entry.state == "undeployed":
                return entry
            return None
        return await eventually(gone, timeout, f"{name} undeployed")

    async def errored(self, name: str, timeout: float = WAIT) -> Entry:
        return await eventually(lambda: (e := self.core.entry(name)) is not None and e.error and e,
                                timeout, f"{name} in error")


@contextlib.asynccontextmanager
async def running_core(config: SwarmConfig) -> AsyncIterator[CoreRun]:
    """A Core with workflow provider.swarm -> provisioner.ipalloc (in-memory pool)."""
    holder: dict[str, Core] = {}

    def live() -> Any:
        return holder["core"].live_services() if "core" in holder else {}

    provider = SwarmProvider(config, ExtensionContext(name="provider.swarm", entries=live))
    ipalloc = IPAllocProvisioner(IPAllocConfig(pools=(PoolConfig(LEGACY_POOL, POOL, POOL[1], POOL[-2]),)),
                                 ExtensionContext(name="provisioner.ipalloc", entries=live))
    core_config = CoreConfig(workflow_steps=("provider.swarm", "provisioner.ipalloc"),
                             housekeeper_interval=0.5, activity_interval=0.5,
                             retry_backoff_base=0.2, retry_backoff_max=1.0)
    core = Core(core_config, {"provider.swarm": provider, "provisioner.ipalloc": ipalloc})
    holder["core"] = core
    run = CoreRun(core, provider)
    core.add_status_sink(run.history.append)
    await core.start()
    try:
        yield run
    finally:
        await core.stop()
