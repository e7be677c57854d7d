"""provider.staticfile: services listed in a JSON file (worked example of docs/EXTENDING.md).

The file maps entry names to services in the ``/services`` shape, e.g.
``{"shop/web": {"dns_name": ["web.example.com"], "targets": [{"host": "10.0.0.1", "port": 30080}]}}``.
The provider polls it: a new or changed service is an ``add``, one that left
the file a ``delete``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from controller.config import Section
from controller.extension import PROVIDER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service


@dataclass(frozen=True)
class StaticFileConfig:
    path: str
    poll_interval: float = 5.0

    @classmethod
    def from_section(cls, section: Section) -> StaticFileConfig:
        return cls(path=section.str("path", required=True),
                   poll_interval=section.duration("pollInterval", 5.0) or 5.0)


class StaticFileProvider(BaseExtension):
    name = "provider.staticfile"
    kind = PROVIDER

    def __init__(self, config: StaticFileConfig, context: ExtensionContext | None = None):
        super().__init__(context)
        self.config = config

    async def run_background(self) -> None:
        sent: dict[str, Service] = {}
        while True:
            current = await asyncio.to_thread(self._read)
            for name, service in current.items():
                if sent.get(name) != service:
                    await self.send_queue.put(Message(Action.ADD, service))
            for name in sent.keys() - current.keys():
                await self.send_queue.put(Message(Action.DELETE, sent[name]))
            sent = current
            await asyncio.sleep(self.config.poll_interval)

    async def handle(self, message: Message) -> Message:
        """Answer the core's ``refresh``: ``add`` while the file lists the service, ``delete`` once it does not."""
        if message.action != Action.REFRESH:
            return message
        current = (await asyncio.to_thread(self._read)).get(message.service.name)
        return Message(Action.ADD, current) if current else Message(Action.DELETE, message.service)

    def _read(self) -> dict[str, Service]:
        try:
            data = json.loads(Path(self.config.path).read_text() or "{}")
        except FileNotFoundError:
            return {}
        return {name: Service.from_dict({**body, "name": name}) for name, body in data.items()}
