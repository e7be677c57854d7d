"""provisioner.ipalloc: gives each service a public IP from its pools, and takes it back.

Which pools a service may take from: the one it asks for by name
(``Service.pool``, Kubernetes ``interlook.io/pool``) if that pool admits it,
otherwise every pool that admits it, tried in priority order (config.py).
A service keeps its address for as long as it exists and the address's pool
still admits it (and is the one asked for): an ``add`` for a service that
holds one returns that one.  When its pool no longer fits, a new address is
taken first and the old one freed after, so a service is never left without
an address because the move failed.  A requested address
(``Service.requested_ip``) is given if it is in an admitting pool and free,
otherwise the step fails: silently handing out another address would
publish the service somewhere the user did not ask for.  A new address for
a namespace that already holds ``maxAddressesPerNamespace`` of ours fails
too, before anything is written.

Allocations run concurrently (one store round trip each, in parallel): an
address is picked and reserved in memory with no ``await`` in between (and
the namespace limit checked in the same breath), so two services of this
process never pick the same one nor overrun the limit together, and the
store's claim (a create that the API server refuses the second time) settles
it against every other process.  Messages for one service are ordered by the
base class, so one owner never races itself.

Every allocation carries our instance's mark (extensions/kit/ownership.py):
only ours, in our own pools' ranges, are ever swept; an allocation written
before instance ids is adopted (re-marked) for its own entry only, and an
address another instance holds is an error that names no Service.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message, Service
from extensions.kit.orphans import OrphanSweep
from extensions.kit.ownership import Ownership, Verdict
from extensions.provisioners.ipalloc.config import IPAllocConfig, PoolConfig
from extensions.provisioners.ipalloc.store import AllocationStore, FileStore, Holder, MemoryStore

# Key of context.services under which an embedding program hands a store
# (the Kubernetes layer gives a cluster-backed one).
STORE_SERVICE = "ipalloc.store"
LIMIT_KEY = "ipam.ipalloc.maxAddressesPerNamespace"

Pools = Sequence[PoolConfig]


class PoolExhausted(Exception):
    pass


class Holdings(dict[str, Holder]):
    """ip -> holder, with the addresses of each entry and the counts of each namespace and pool at hand.

    Finding what one entry holds, or how many addresses a namespace holds,
    must not scan every allocation: after a restart 10,000 entries each ask
    once, and 10,000 scans of 10,000 allocations were most of the resync's CPU.
    Likewise a full pool is passed over without scanning it.
    """

    def __init__(self, items: Mapping[str, Holder] | None = None, pool_of: Callable[[str], str] = lambda ip: ""):
        super().__init__()
        self._pool_of = pool_of
        # entry -> its addresses: almost always one, so a tuple (a set costs 216 bytes for each of 10,000).
        self._by_entry: dict[str, tuple[str, ...]] = {}
        self._per_namespace: Counter[tuple[str, str]] = Counter()  # (instance, namespace) -> addresses
        self._per_pool: Counter[str] = Counter()  # pool name ("" outside our pools) -> addresses
        for ip, holder in (items or {}).items():
            self[ip] = holder

    def __setitem__(self, ip: str, holder: Holder) -> None:
        self._unindex(ip)
        super().__setitem__(ip, holder)
        entry = _entry_of(holder)
        held = self._by_entry.get(entry, ())
        if ip not in held:
            self._by_entry[entry] = (*held, ip)
        self._per_namespace[_namespace_key(holder)] += 1
        self._per_pool[self._pool_of(ip)] += 1

    def __delitem__(self, ip: str) -> None:
        self._unindex(ip)
        super().__delitem__(ip)

    def pop(self, ip: str, default: Any = None) -> Any:  # type: ignore[override]
        self._unindex(ip)
        return super().pop(ip, default)

    def of_entry(self, entry: str) -> list[str]:
        return sorted(self._by_entry.get(entry, ()))

    def in_namespace(self, instance: str, namespace: str) -> int:
        """How many addresses ``instance`` gave to entries of ``namespace``."""
        return self._per_namespace.get((instance, namespace), 0)

    def in_pool(self, pool: str) -> int:
        """How many addresses of ``pool`` anyone holds."""
        return self._per_pool.get(pool, 0)

    def _unindex(self, ip: str) -> None:
        old = self.get(ip)
        if old is None:
            return
        self._per_namespace[_namespace_key(old)] -= 1
        self._per_pool[self._pool_of(ip)] -= 1
        entry = _entry_of(old)
        rest = tuple(held for held in self._by_entry.get(entry, ()) if held != ip)
        if rest:
            self._by_entry[entry] = rest
        else:
            self._by_entry.pop(entry, None)


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
        self._holders = self._holdings({})  # ip -> holder, our view of the store
        self._claiming: dict[str, Holder] = {}  # ip -> holder, claims sent and not answered yet
        # Per pool, where the next search for a free address starts.
        self._cursors: dict[str, int] = {pool.name: 0 for pool in config.pools}

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.instance_id)

    async def setup(self) -> None:
        self._holders = self._holdings(await self.store.load())
        self._claiming.clear()
        for pool in self.config.pools:
            held = [h for ip, h in self._holders.items() if pool.contains(ip)]
            mine = sum(1 for h in held if self.ownership.is_own(h))
            self.log.info("pool %s: %d addresses (%s in %s), %d given by this instance (%s), %d held elsewhere",
                          pool.name, pool.size, pool.range, pool.network, mine, self.instance_id, len(held) - mine)

    def _holdings(self, items: Mapping[str, Holder]) -> Holdings:
        return Holdings(items, pool_of=self._pool_name)

    def _is_own(self, ip: str, holder: Holder) -> bool:
        """Ours to sweep: marked by this instance, and in one of our pools (another pool's are never ours)."""
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
        if await self.store.remark(ip, holder, mark, self._pool_name(ip)):
            self._holders[ip] = mark
            self.log.info("adopted %s for %s (allocated before instance ids)", ip, owner)
            return True
        self._holders = self._holdings(await self.store.load())  # changed meanwhile: read again
        return self.ownership.judge(self._holders.get(ip), owner) is Verdict.OURS

    # -- which pools ------------------------------------------------------------
    def _pools_for(self, service: Service) -> tuple[Pools, str]:
        """The pools ``service`` may take from, in the order to try them; or none and why.

        The reasons name the pools (configuration) and the asker's own
        namespace and labels: never another Service.
        """
        config = self.config
        if service.pool:
            pool = config.pool_named(service.pool)
            if pool is None:
                return (), (f"IP pool {service.pool} does not exist (the pools are: "
                            f"{', '.join(p.name for p in config.pools)})")
            refusal = pool.refusal(service)
            return ((), f"IP pool {pool.name} does not admit this Service: {refusal}") if refusal else ((pool,), "")
        admitted = tuple(p for p in config.pools if p.admits(service))
        if admitted:
            return admitted, ""
        reasons = "; ".join(f"{p.name}: {p.refusal(service)}" for p in config.pools)
        return (), f"no IP pool admits this Service ({reasons})"

    def _pool_name(self, ip: str) -> str:
        pool = self.config.pool_of(ip)
        return pool.name if pool is not None else ""

    def _over_limit(self, service: Service) -> str:
        """Why ``service`` may not get one more address; "" when it may.

        Counts this instance's addresses and claims in flight in the
        service's namespace, except the service's own: an address that
        moves to another pool is not one more.  Swarm services (no
        namespace) are not counted.
        """
        limit, namespace = self.config.max_addresses_per_namespace, service.namespace
        if not limit or not namespace:
            return ""
        instance = self.instance_id
        own = sum(1 for ip in self._holders.of_entry(service.name)
                  if _namespace_key(self._holders[ip]) == (instance, namespace))
        in_flight = sum(1 for h in self._claiming.values() if _namespace_key(h) == (instance, namespace))
        held = self._holders.in_namespace(instance, namespace) + in_flight - own
        if held < limit:
            return ""
        addresses = "1 address" if held == 1 else f"{held} addresses"
        return f"namespace {namespace} holds {addresses}, the limit of {LIMIT_KEY} ({limit})"

    # -- giving -------------------------------------------------------------------
    async def _allocate(self, message: Message) -> Message:
        service = message.service
        pools, refusal = self._pools_for(service)
        if not pools:
            return message.failed(refusal)
        if service.requested_ip:
            return await self._allocate_requested(message, pools)
        owner = service.name
        held = await self._held_in(owner, pools)
        if held:
            ip = service.public_ip if service.public_ip in held else held[0]
        else:
            over = self._over_limit(service)
            if over:
                return message.failed(over)
            try:
                ip = await self._first_free(owner, pools)
            except PoolExhausted as exc:
                return message.failed(str(exc))
        await self._release_others(owner, keep=ip)
        return message.reply(service=_with_ip(service, ip))

    async def _allocate_requested(self, message: Message, pools: Pools) -> Message:
        service, owner, requested = message.service, message.service.name, message.service.requested_ip
        pool = next((p for p in pools if p.contains(requested)), None)
        if pool is None:
            return message.failed(f"requested IP {requested} is not in the pool{'s' if len(pools) > 1 else ''} "
                                  f"this Service may use: {_describe(pools)}")
        if requested not in self._owned_by(owner):
            over = self._over_limit(service)
            if over:
                return message.failed(over)
        ip = await self._claim(requested, owner, pool)
        if ip is None:
            holder = self._holders.get(requested) or self._claiming.get(requested)
            return message.failed(f"requested IP {requested} is already given to "
                                  f"{self.ownership.holder(holder, owner)}")
        await self._release_others(owner, keep=ip)
        return message.reply(service=_with_ip(service, ip))

    async def _held_in(self, owner: str, pools: Pools) -> list[str]:
        """What ``owner`` holds (adopting legacy records) in ``pools``, the preferred first."""
        order = {pool.name: index for index, pool in enumerate(pools)}
        held = [ip for ip in self._owned_by(owner) if self._pool_name(ip) in order]
        held = [ip for ip in held if await self._adopt(ip, owner)]
        return sorted(held, key=lambda ip: (order[self._pool_name(ip)], _ip_key(ip)))

    async def _first_free(self, owner: str, pools: Pools) -> str:
        for pool in pools:
            while True:
                ip = self._reserve_next(owner, pool)
                if ip is None:
                    break  # this pool is full: the next one
                got = await self._claim(ip, owner, pool)
                if got is not None:
                    return got
                # Another process holds it (now in _holders): pick on.
        raise PoolExhausted(f"no free address left in the pool{'s' if len(pools) > 1 else ''} {_describe(pools)}")

    def _reserve_next(self, owner: str, pool: PoolConfig) -> str | None:
        """The next address of ``pool`` nobody holds or claims, reserved for ``owner`` (no await: atomic here).

        The search goes on from the last address given, wrapping around, so
        a pool with thousands of allocations is not rescanned from its start.
        """
        first, size, cursor = int(pool.first), pool.size, self._cursors.get(pool.name, 0)
        if self._holders.in_pool(pool.name) >= size:
            return None  # full (what is being claimed is a handful: the scan finds that quickly)
        make = ipaddress.IPv4Address if pool.version == 4 else ipaddress.IPv6Address
        for offset in range(size):
            index = (cursor + offset) % size
            ip = str(make(first + index))
            if ip in self._holders or ip in self._claiming:
                continue
            self._claiming[ip] = self.ownership.mark(owner)
            self._cursors[pool.name] = (index + 1) % size
            return ip
        return None

    async def _claim(self, ip: str, owner: str, pool: PoolConfig) -> str | None:
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
            holder = await self.store.claim(ip, mark, pool.name)
        finally:
            self._claiming.pop(ip, None)
        self._holders[ip] = holder
        return ip if holder == mark else None

    # -- taking back --------------------------------------------------------------
    async def _release_others(self, owner: str, keep: str) -> None:
        """Free what ``owner`` held before ``keep``: ours anywhere, legacy records only in our pools."""
        for ip in self._owned_by(owner):
            if ip != keep and (self.ownership.is_own(self._holders[ip]) or self.config.contains(ip)):
                await self.store.release(ip, self._holders[ip])
                self._holders.pop(ip, None)
                self.log.info("freed %s of %s: it now has %s", ip, owner, keep)

    async def _release(self, message: Message) -> Message:
        owner = message.service.name
        for ip in self._owned_by(owner):
            await self.store.release(ip, self._holders[ip])
            self._holders.pop(ip, None)
        # Nothing held is fine: deleting what is already gone is a success.
        return message.reply(service=_with_ip(message.service, ""))


def _describe(pools: Pools) -> str:
    return ", ".join(f"{p.name} ({p.range})" for p in pools)


def _entry_of(holder: Any) -> str:
    # A store may hand back a bare name for a holder it cannot read (a test double, a hand-made object).
    return sys.intern(str(getattr(holder, "entry", holder)))  # one copy of each name across the tables


def _namespace_of(entry: str) -> str:
    return entry.rpartition("/")[0]


def _namespace_key(holder: Any) -> tuple[str, str]:
    return str(getattr(holder, "instance", "")), _namespace_of(_entry_of(holder))


def _with_ip(service: Any, ip: str) -> Any:
    return service.but(public_ip=ip)


def _ip_key(ip: str) -> int:
    return int(ipaddress.ip_address(ip))
