"""The extension contract, and a base class that keeps extensions honest.

An extension is anything the core starts and stops: a provider (which sees
services on a platform) or a provisioner (which configures one piece of
infrastructure).  The contract is two coroutines:

* ``start(receive, send)`` runs until stopped.  It reads Messages from
  ``receive`` and puts every processed Message on ``send``, with ``error`` set
  when it failed: no exception ever crosses the boundary.
* ``stop()`` returns only once ``start`` has returned.

``BaseExtension`` implements that loop once, so that an extension only writes
``setup`` (start-up checks: raise to refuse to start), ``handle`` (one message
in, one message out) and ``teardown``.  Its role is declared on the class
(``kind``, ``sets_public_ip``) and read by the core: a step's name says
nothing about what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, ClassVar, Literal, Mapping, Protocol, runtime_checkable

from controller.instance import ClusterIdentity, Identity
from controller.messages import Message, Service

MessageQueue = asyncio.Queue[Message]

# The two roles (DESIGN.md): a provider sees services on a platform and sends
# add/delete; a provisioner is a workflow step the core sends services to.
Kind = Literal["provider", "provisioner"]
PROVIDER: Kind = "provider"
PROVISIONER: Kind = "provisioner"


@runtime_checkable
class Extension(Protocol):
    name: str

    async def start(self, receive: MessageQueue, send: MessageQueue) -> None: ...

    async def stop(self) -> None: ...

    async def wait_ready(self) -> None:
        """Return once start-up checks passed; raise the reason when they failed."""
        ...


def no_entries() -> Mapping[str, Service]:
    """The default: no core to ask (an extension driven on its own); orphan sweeps stay off."""
    return {}


@dataclass
class ExtensionContext:
    """What the core lends an extension besides its config."""

    name: str
    # Live entries of the core by name: lets a provisioner tell its own
    # orphans (records of entries that no longer exist) from live records.
    entries: Callable[[], Mapping[str, Service]] = no_entries
    data_dir: Path = field(default_factory=Path.cwd)
    # Runtime objects the embedding program hands over (e.g. an allocation
    # store backed by the cluster); keys are documented by the extension.
    services: dict[str, Any] = field(default_factory=dict)
    # Which Interlook this is: shared by every extension, settled before any starts.
    identity: Identity = field(default_factory=Identity)

    @property
    def knows_entries(self) -> bool:
        return self.entries is not no_entries


class ExtensionStartError(RuntimeError):
    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"extension {name} failed to start: {reason}")


class BaseExtension:
    """Runs the receive -> handle -> send loop with per-service ordering.

    Messages for different services are handled concurrently (up to
    ``concurrency``); messages for one service are handled in arrival order,
    so an ``add`` and the ``delete`` that follows it never race.
    """

    name: str = "extension"  # replaced by the step name the core runs it under (context.name)
    concurrency: int = 16
    # Every extension class declares its role: PROVIDER or PROVISIONER.
    kind: ClassVar[Kind]
    # Only a step that declares it changes the entry's public IP: the core keeps
    # the ``public_ip`` of its replies and ignores it from every other step.
    sets_public_ip: ClassVar[bool] = False

    def __init__(self, context: ExtensionContext | None = None):
        self.context = context or ExtensionContext(self.name)
        if context is not None:
            self.name = context.name
        self.log = logging.getLogger(f"interlook.{self.name}")
        self._stopping = asyncio.Event()
        self._ready: asyncio.Future[None] | None = None
        self._service_locks: dict[str, asyncio.Lock] = {}
        self._running = False
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    # -- to override ------------------------------------------------------
    async def setup(self) -> None:
        """Connect and check the backend; raise to make start-up fail."""

    async def handle(self, message: Message) -> Message:
        """Process one message and return the reply (``message.failed(...)`` on error)."""
        return message

    async def teardown(self) -> None:
        """Release what setup took."""

    async def run_background(self) -> None:
        """Optional long-running work beside the message loop (polling, reconcile)."""

    async def cluster_identity(self) -> ClusterIdentity | None:
        """Providers: the platform's cluster id and this instance's scope (see controller/instance.py)."""
        return None

    @property
    def instance_id(self) -> str:
        """The instance id every record this extension makes is marked with.

        The program settles it before starting any extension; an extension
        driven on its own (tests, tools) gets the fixed standalone id.
        """
        identity = self.context.identity
        return identity.instance_id or identity.resolve([])

    # -- contract ---------------------------------------------------------
    def _ready_future(self) -> asyncio.Future[None]:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready_future())

    async def start(self, receive: MessageQueue, send: MessageQueue) -> None:
        ready = self._ready_future()
        if ready.done():  # a restart after a crash: a fresh readiness
            self._ready = ready = asyncio.get_running_loop().create_future()
        self._stopping.clear()
        self._stopped.clear()
        self._running = True
        try:
            try:
                await self.setup()
            except Exception as exc:  # start-up refused: tell the core why
                if not ready.done():
                    ready.set_exception(ExtensionStartError(self.name, _reason(exc)))
                    ready.exception()  # mark retrieved; the core reads it via wait_ready
                raise
            if not ready.done():
                ready.set_result(None)
            self.send_queue = send
            background = asyncio.create_task(self.run_background(), name=f"{self.name}-background")
            crashed = False
            try:
                await self._loop(receive, send, background)
            except BaseException:
                crashed = True
                raise
            finally:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await background
                await self._drain(cancel=crashed)
                with contextlib.suppress(Exception):
                    await self.teardown()
        finally:
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    @contextlib.asynccontextmanager
    async def entry_lock(self, name: str) -> AsyncIterator[None]:
        """Hold the lock the message loop takes for ``name``.

        Background work (a reconcile) that touches one entry's records takes
        it so that it never races a message for the same entry.
        """
        lock = self._service_locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
                self._service_locks.pop(name, None)

    # -- internals --------------------------------------------------------
    async def _loop(self, receive: MessageQueue, send: MessageQueue, background: asyncio.Task[Any]) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                getter = asyncio.create_task(receive.get())
                done, _ = await asyncio.wait({getter, stopping, background}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if background in done and not self._stopping.is_set():
                        exc = background.exception()
                        if exc is not None:
                            raise exc  # the background work crashed: let the core restart us
                        background = asyncio.create_task(asyncio.Event().wait())
                    continue
                message = getter.result()
                await limit.acquire()
                task = asyncio.create_task(self._process(message, send, limit))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        finally:
            stopping.cancel()

    async def _drain(self, cancel: bool = False) -> None:
        """Let in-flight messages finish on a clean stop; cut them short after a crash."""
        if not self._background:
            return
        if cancel:
            for task in self._background:
                task.cancel()
        _, pending = await asyncio.wait(set(self._background), timeout=5)
        for task in pending:
            task.cancel()

    async def _process(self, message: Message, send: MessageQueue, limit: asyncio.Semaphore) -> None:
        key = message.service.name
        try:
            async with self.entry_lock(key):
                try:
                    reply = await self.handle(message)
                except asyncio.CancelledError:
                    # Cut short by a crash or a stop: the core marks the entry
                    # (crash error or WIP timeout) and retries it.
                    raise
                except Exception as exc:  # never let an exception cross the boundary
                    self.log.exception("error processing %s %s", message.action, key)
                    reply = message.failed(f"{self.name}: {_reason(exc)}")
                await send.put(reply)
        finally:
            limit.release()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
