"""Test doubles for unit-testing the core (never a substitute for the integration tests)."""

from __future__ import annotations

import asyncio
from typing import Callable

from controller.extension import PROVIDER, PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service


class RecordingProvisioner(BaseExtension):
    """Answers every message; can be told to fail, hang or refuse to start."""

    kind = PROVISIONER

    def __init__(self, name: str, journal: list[tuple[str, str, str]] | None = None):
        super().__init__(ExtensionContext(name))
        self.journal = journal if journal is not None else []
        self.fail_with: str = ""
        self.hang = False
        self.gate: asyncio.Event | None = None  # when set, handling waits for it
        self.refuse_start: str = ""
        self.received: list[Message] = []
        self.transform: Callable[[Message], Message] | None = None

    async def setup(self) -> None:
        if self.refuse_start:
            raise ConnectionError(self.refuse_start)

    async def handle(self, message: Message) -> Message:
        self.received.append(message)
        self.journal.append((self.name, message.action.value, message.service.name))
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            return message.failed(self.fail_with)
        if self.transform:
            return self.transform(message)
        return message.reply()


class RecordingIPAM(RecordingProvisioner):
    """A recording step that declares it sets the public IP, as an IP pool does."""

    sets_public_ip = True


class FakeProvider(BaseExtension):
    """A provider whose services are set by the test; answers refresh like a real one."""

    kind = PROVIDER

    def __init__(self, name: str = "provider.fake"):
        super().__init__(ExtensionContext(name))
        self.services: dict[str, Service] = {}
        self.refreshes: list[str] = []

    async def publish(self, service: Service) -> None:
        self.services[service.name] = service
        await self.send_queue.put(Message(Action.ADD, service))

    async def withdraw(self, name: str) -> None:
        service = self.services.pop(name, Service(name=name))
        await self.send_queue.put(Message(Action.DELETE, service))

    async def handle(self, message: Message) -> Message:
        if message.action != Action.REFRESH:
            return message
        self.refreshes.append(message.service.name)
        current = self.services.get(message.service.name)
        if current is None:
            return Message(Action.DELETE, message.service)
        return Message(Action.ADD, current)
