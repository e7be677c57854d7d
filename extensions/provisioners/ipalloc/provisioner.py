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

Every allocation carries our instance's mark (extensions/kit/ownership.py):
only ours, in our own range, are ever released or swept; an allocation
written before instance ids is adopted (re-marked) for its own entry only,
and an address another instance holds is an error that names no Service.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any, Mapping

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message
from extensions.kit.orphans import OrphanSweep
from extensions.kit.ownership import Ownership, Verdict
from extensions.provisioners.ipalloc.config import IPAllocConfig
from extensions.provisioners.ipalloc.store import AllocationStore, FileStore, Holder, MemoryStore

# Key of context.services under which an embedding program hands a store
# (the Kubernetes layer gives a cluster-backed one).
STORE_SERVICE = "ipalloc.store"


class PoolExhausted(Exception):
    pass


class Holdings(dict[str, Holder]):
    """ip -> holder, with the addresses of each entry at hand.

    Finding what one entry holds must not scan every allocation: after a
    restart 10,000 entries each ask once, and 10,000 scans of 10,000
    allocations were most of the resync's CPU.
    """

    def __init__(self, items: Mapping[str, Holder] | None = None):
        super().__init__()
        self._by_entry: dict[str, set[str]] = {}
        for ip, holder in (items or {}).items():
            self[ip] = holder

    def __setitem__(self, ip: str, holder: Holder) -> None:
        self._unindex(ip)
        super().__setitem__(ip, holder)
        self._by_entry.setdefault(_entry_of(holder), set()).add(ip)

    def __delitem__(self, ip: str) -> None:
        self._unindex(ip)
        super().__delitem__(ip)

    def pop(self, ip: str, default: Any = None) -> Any:  # type: ignore[override]
        self._unindex(ip)
        return super().pop(ip, default)

    def of_entry(self, entry: str) -> list[str]:
        return sorted(self._by_entry.get(entry, ()))

    def _unindex(self, ip: str) -> None:
        old = self.get(ip)
        if old is None:
            return
        entry = _entry_of(old)
        ips = self._by_entry.get(entry)
        if ips is not None:
            ips.discard(ip)
            if not ips:
                del self._by_entry[entry]


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
        self._holders = Holdings()  # ip -> holder, our view of the store
        self._claiming: dict[str, Holder] = {}  # ip -> holder, claims sent and not answered yet
        self._first = int(config.first)
        self._size = int(config.last) - int(config.first) + 1
        self._cursor = 0  # where the next search for a free address starts

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.instance_id)

    async def setup(self) -> None:
        self._holders = Holdings(await self.store.load())
        self._claiming.clear()
        mine = sum(1 for ip, h in self._holders.items() if self._is_own(ip, h))
        self.log.info("pool %s: %d addresses (%s-%s), %d given by this instance (%s), %d held elsewhere",
                      self.config.network, self._size, self.config.first, self.config.last, mine,
                      self.instance_id, sum(1 for ip in self._holders if self.config.contains(ip)) - mine)

    def _is_own(self, ip: str, holder: Holder) -> bool:
        """Ours to sweep: marked by this instance, and in this pool (another pool's are never ours)."""
        return self.ownership.is_own(holder) and self.config.contains(ip)

    async def run_background(self) -> None:
        """Free the addresses of entries that no longer exist (see extensions/kit/orphans.py)."""
        await self.orphan_sweep().forever(self.config.reconcile_interval)

    def orphan_sweep(self) -> OrphanSweep:
        return OrphanSweep(self, self._owners, self._free_orphan)

    async def _owners(self) -> set[str]:
        # From our cache (loaded at start-up, kept by every claim and
        # release): a sweep costs no request in steady state, so 10,000
        # idle Services cost no periodic LIST.
        return {h.entry for ip, h in self._holders.items() if self._is_own(ip, h)}

    async def _free_orphan(self, owner: str) -> None:
        # sweep_forever holds the owner's entry lock: no message for it runs meanwhile.
        mark = self.ownership.mark(owner)
        for ip in [ip for ip in self._holders.of_entry(owner)
                   if self._holders[ip] == mark and self.config.contains(ip)]:
            await self.store.release(ip, mark)
            self._holders.pop(ip, None)
            self.log.info("freed %s: its entry %s no longer exists", ip, owner)

    async def handle(self, message: Message) -> Message:
        if message.action in (Action.ADD, Action.UPDATE):
            return await self._allocate(message)
        if message.action == Action.DELETE:
            return await self._release(message)
        return message

    def _owned_by(self, owner: str) -> list[str]:
        """The addresses ``owner`` holds that this instance may change: ours, and legacy ones for it."""
        return [ip for ip in self._holders.of_entry(owner)
                if self.ownership.judge(self._holders[ip], owner) is not Verdict.FOREIGN]

    async def _adopt(self, ip: str, owner: str) -> bool:
        """Make ``ip`` ours if it is a legacy allocation of ``owner``; True when it is ours now."""
        holder = self._holders.get(ip)
        verdict = self.ownership.judge(holder, owner)
        if verdict is Verdict.OURS:
            return True
        if verdict is not Verdict.ADOPT or holder is None:
            return False
        mark = self.ownership.mark(owner)
        if await self.store.remark(ip, holder, mark):
            self._holders[ip] = mark
            self.log.info("adopted %s for %s (allocated before instance ids)", ip, owner)
            return True
        self._holders = Holdings(await self.store.load())  # changed meanwhile: read again
        return self.ownership.judge(self._holders.get(ip), owner) is Verdict.OURS
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
                return message.failed(f"requested IP {requested} is already given to "
                                      f"{self.ownership.holder(holder, owner)}")
            await self._release_others(owner, keep=ip)
            return message.reply(service=_with_ip(service, ip))
        held = [ip for ip in self._owned_by(owner) if self.config.contains(ip)]
        held = [ip for ip in held if await self._adopt(ip, owner)]
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
            self._claiming[ip] = self.ownership.mark(owner)
            self._cursor = (index + 1) % self._size
            return ip
        return None

    async def _claim(self, ip: str, owner: str) -> str | None:
        """Ask the store for ``ip``; None when another holder has it or is claiming it."""
        mark = self.ownership.mark(owner)
        holder = self._holders.get(ip)
        if holder is not None:
            self._claiming.pop(ip, None)
            return ip if await self._adopt(ip, owner) else None
        if self._claiming.get(ip, mark) != mark:
            return None
        self._claiming[ip] = mark
        try:
            holder = await self.store.claim(ip, mark)
        finally:
            self._claiming.pop(ip, None)
        self._holders[ip] = holder
        return ip if holder == mark else None

    async def _release_others(self, owner: str, keep: str) -> None:
        for ip in self._owned_by(owner):
            if ip != keep:
                await self.store.release(ip, self._holders[ip])
                self._holders.pop(ip, None)

    async def _release(self, message: Message) -> Message:
        owner = message.service.name
        for ip in self._owned_by(owner):
            await self.store.release(ip, self._holders[ip])
            self._holders.pop(ip, None)
        # Nothing held is fine: deleting what is already gone is a success.
        return message.reply(service=_with_ip(message.service, ""))


def _entry_of(holder: Any) -> str:
    # A store may hand back a bare name for a holder it cannot read (a test double, a hand-made object).
    return str(getattr(holder, "entry", holder))


def _with_ip(service: Any, ip: str) -> Any:
    return replace(service, public_ip=ip)


def _ip_key(ip: str) -> int:
    return int(ipaddress.ip_address(ip))
