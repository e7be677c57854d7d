"""provisioner.ipalloc: gives each service a public IP from a pool, and takes it back.

A service keeps its address for as long as it exists: an ``add`` for a
service that already holds one returns that one.  A requested address
(``Service.requested_ip``) is given if it is in the pool and free, otherwise
the step fails: silently handing out another address would publish the
service somewhere the user did not ask for.

Allocations run concurrently (one store round trip each, in parallel): an
address is picked and reserved in memory with no ``await`` in between, so
two services of this process never pick the same one, and the store's claim
(a create that the API server refuses the second time) settles it against
every other process.  Messages for one service are ordered by the base
class, so one owner never races itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message
from extensions.kit.orphans import sweep_forever
from extensions.provisioners.ipalloc.config import IPAllocConfig
from extensions.provisioners.ipalloc.store import AllocationStore, FileStore, MemoryStore

# Key of context.services under which an embedding program hands a store
# (the Kubernetes layer gives a cluster-backed one).
STORE_SERVICE = "ipalloc.store"


class PoolExhausted(Exception):
    pass


class IPAllocProvisioner(BaseExtension):
    name = "provisioner.ipalloc"
    kind = PROVISIONER
    sets_public_ip = True  # the IPAM step: the core keeps the public_ip of its replies

    def __init__(self, config: IPAllocConfig, context: ExtensionContext | None = None):
        super().__init__(context)
        self.config = config
        store: Any = self.context.services.get(STORE_SERVICE)
        if store is None:
            store = FileStore(config.db_file) if config.db_file else MemoryStore()
        self.store: AllocationStore = store
        self._holders: dict[str, str] = {}  # ip -> owner, our view of the store
        self._claiming: dict[str, str] = {}  # ip -> owner, claims sent and not answered yet
        self._first = int(config.first)
        self._size = int(config.last) - int(config.first) + 1
        self._cursor = 0  # where the next search for a free address starts

    async def setup(self) -> None:
        self._holders = await self.store.load()
        self.log.info("pool %s: %d addresses (%s-%s), %d allocated", self.config.network, self._size,
                      self.config.first, self.config.last, len(self._holders))

    async def run_background(self) -> None:
        """Free the addresses of entries that no longer exist (see extensions/kit/orphans.py)."""
        await sweep_forever(self, self.config.reconcile_interval, self._owners, self._free_orphan)

    async def _owners(self) -> set[str]:
        # From our cache (loaded at start-up, kept by every claim and
        # release): a sweep costs no request in steady state, so 10,000
        # idle Services cost no periodic LIST.
        return set(self._holders.values())

    async def _free_orphan(self, owner: str) -> None:
        # sweep_forever holds the owner's entry lock: no message for it runs meanwhile.
        for ip in self._owned_by(owner):
            await self.store.release(ip, owner)
            self._holders.pop(ip, None)
            self.log.info("freed %s: its entry %s no longer exists", ip, owner)

    async def handle(self, message: Message) -> Message:
        if message.action in (Action.ADD, Action.UPDATE):
            return await self._allocate(message)
        if message.action == Action.DELETE:
            return await self._release(message)
        return message

    def _owned_by(self, owner: str) -> list[str]:
        return [ip for ip, holder in self._holders.items() if holder == owner]

    async def _allocate(self, message: Message) -> Message:
        service = message.service
        owner = service.name
        requested = service.requested_ip
        if requested:
            if not self.config.contains(requested):
                return message.failed(
                    f"requested IP {requested} is not in the pool {self.config.first}-{self.config.last}")
            ip = await self._claim(requested, owner)
            if ip is None:
                holder = self._holders.get(requested) or self._claiming.get(requested)
                return message.failed(f"requested IP {requested} is already given to {holder}")
            await self._release_others(owner, keep=ip)
            return message.reply(service=_with_ip(service, ip))
        held = [ip for ip in self._owned_by(owner) if self.config.contains(ip)]
        if service.public_ip in held:
            return message.reply(service=service)
        if held:
            return message.reply(service=_with_ip(service, sorted(held, key=_ip_key)[0]))
        try:
            ip = await self._first_free(owner)
        except PoolExhausted as exc:
            return message.failed(str(exc))
        return message.reply(service=_with_ip(service, ip))

    async def _first_free(self, owner: str) -> str:
        while True:
            ip = self._reserve_next(owner)
            if ip is None:
                raise PoolExhausted(f"no free address left in the pool {self.config.first}-{self.config.last}")
            got = await self._claim(ip, owner)
            if got is not None:
                return got
            # Another process holds it (now in _holders): pick on.

    def _reserve_next(self, owner: str) -> str | None:
        """The next address nobody holds or claims, reserved for ``owner`` (no await: atomic here).

        The search goes on from the last address given, wrapping around, so
        a pool with thousands of allocations is not rescanned from its start.
        """
        version = self.config.first.version
        for offset in range(self._size):
            index = (self._cursor + offset) % self._size
            ip = str(ipaddress.IPv4Address(self._first + index)) if version == 4 else str(
                ipaddress.IPv6Address(self._first + index))
            if ip in self._holders or ip in self._claiming:
                continue
            self._claiming[ip] = owner
            self._cursor = (index + 1) % self._size
            return ip
        return None

    async def _claim(self, ip: str, owner: str) -> str | None:
        """Ask the store for ``ip``; None when another owner holds it or is claiming it."""
        holder = self._holders.get(ip)
        if holder == owner:
            self._claiming.pop(ip, None)
            return ip
        if holder is not None or self._claiming.get(ip, owner) != owner:
            return None
        self._claiming[ip] = owner
        try:
            holder = await self.store.claim(ip, owner)
        finally:
            self._claiming.pop(ip, None)
        self._holders[ip] = holder
        return ip if holder == owner else None

    async def _release_others(self, owner: str, keep: str) -> None:
        for ip in self._owned_by(owner):
            if ip != keep:
                await self.store.release(ip, owner)
                self._holders.pop(ip, None)

    async def _release(self, message: Message) -> Message:
        owner = message.service.name
        for ip in self._owned_by(owner):
            await self.store.release(ip, owner)
            self._holders.pop(ip, None)
        # Nothing held is fine: deleting what is already gone is a success.
        return message.reply(service=_with_ip(message.service, ""))


def _with_ip(service: Any, ip: str) -> Any:
    return replace(service, public_ip=ip)


def _ip_key(ip: str) -> int:
    return int(ipaddress.ip_address(ip))
