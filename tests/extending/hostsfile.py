"""provisioner.hostsfile: publishes a service's DNS names in a hosts file (worked example).

Built from the checklist of docs/EXTENDING.md alone, and run end to end by
``test_worked_example.py`` so that the checklist stays true.  Each record is
one line, ``<public IP> <names...> # interlook:<entry>``: the mark says which
entry made it, so the orphan sweep finds lines of entries that are gone and
never touches a line it did not make.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from controller.config import Section
from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message
from extensions.kit.files import write_atomic
from extensions.kit.orphans import sweep_forever

MARK = " # interlook:"


@dataclass(frozen=True)
class HostsFileConfig:
    path: str
    # How often lines of entries that no longer exist are removed; 0 turns it off.
    reconcile_interval: float = 60.0

    @classmethod
    def from_section(cls, section: Section) -> HostsFileConfig:
        return cls(path=section.str("path", required=True),
                   reconcile_interval=section.duration("reconcileInterval", 60.0))


class HostsFileProvisioner(BaseExtension):
    name = "provisioner.hostsfile"
    kind = PROVISIONER

    def __init__(self, config: HostsFileConfig, context: ExtensionContext | None = None):
        super().__init__(context)
        self.config = config
        # Messages of different entries are handled concurrently, and all of
        # them rewrite the one file: without this a write could be lost.
        self._file_lock = asyncio.Lock()

    async def handle(self, message: Message) -> Message:
        service = message.service
        if message.action == Action.DELETE:
            await self._set_line(service.name, None)
            return message.reply()
        if not service.public_ip:
            return message.failed("no public IP: put an IP pool step before provisioner.hostsfile")
        await self._set_line(service.name, f"{service.public_ip} {' '.join(service.dns_names)}")
        return message.reply()

    async def run_background(self) -> None:
        await sweep_forever(self, self.config.reconcile_interval, self._owners, self._remove, errors=(OSError,))

    async def _owners(self) -> set[str]:
        lines = await asyncio.to_thread(self._read)
        return {owner for owner, _ in lines if owner}

    async def _remove(self, owner: str) -> None:
        await self._set_line(owner, None)

    async def _set_line(self, owner: str, record: str | None) -> None:
        """Make the file hold ``record`` for ``owner`` (None: no line); no write when it already does."""
        async with self._file_lock:
            await asyncio.to_thread(self._rewrite, owner, record)

    def _rewrite(self, owner: str, record: str | None) -> None:
        lines = self._read()
        wanted = [(o, text) for o, text in lines if o != owner]
        if record is not None:
            wanted.append((owner, f"{record}{MARK}{owner}"))
        if wanted != lines:
            write_atomic(self.config.path, "".join(f"{text}\n" for _, text in wanted).encode())

    def _read(self) -> list[tuple[str, str]]:
        """(owner, line) for each line; owner "" for lines we did not make."""
        try:
            text = Path(self.config.path).read_text()
        except FileNotFoundError:
            return []
        return [(line.rpartition(MARK)[2] if MARK in line else "", line) for line in text.splitlines()]
