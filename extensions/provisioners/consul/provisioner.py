"""provisioner.consul: publish each entry's DNS names as Consul external nodes.

Each ``add``/``update`` plans the entry's records against what Consul holds
(for the names it wants, and for every node marked as the entry's) and
applies only the difference; a ``delete`` removes every node marked as the
entry's.  A background reconcile removes the records of entries the core no
longer has (left behind by a crash between two steps).

Reading an entry in full costs, per name, a read of its node and one of its
service, plus a listing of the entry's nodes.  An entry that cannot hold a
record of ours is spared the node reads: the start-up read lists every entry
holding one, and since then only this process (the active replica; a
standby writes nothing) writes records marked with our instance, so an entry
in neither is "fresh".  Its publish reads only the services of its names (a
service of that name on another node is a conflict) and creates every record
in one transaction that Consul refuses if any of the nodes exists; then the
entry is read in full, so a node already there is the same conflict as
always and nothing is overwritten.  A fresh entry's delete has nothing to
remove.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message
from extensions.kit.fresh import MayHold
from extensions.kit.orphans import OrphanSweep
from extensions.provisioners.consul.client import (
    MAX_RECORDS_PER_TXN,
    ACLPermissionDenied,
    ConcurrentChange,
    ConsulCatalog,
    ConsulException,
    ConsulUnreachable,
)
from extensions.provisioners.consul.config import ConsulConfig
from extensions.provisioners.consul.records import Known, NameState, Plan, Record, normalize_names, plan_entry

# How long the start-up view of our records answers unchanged entries (see records.Known).
KNOWN_TTL = 300.0


class ConsulSetupError(RuntimeError):
    """Consul cannot be used as configured; the message says what to fix."""


@dataclass(frozen=True)
class Outcome:
    written: tuple[Record, ...] = ()
    removed: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


class ConsulProvisioner(BaseExtension):
    name = "provisioner.consul"
    kind = PROVISIONER

    def __init__(self, config: ConsulConfig, context: ExtensionContext | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(context)
        self.config = config
        self.clock = clock
        self.catalog = ConsulCatalog(config)
        self._known: Known | None = None
        # Entries that may hold records of ours (see the module docstring and extensions/kit/fresh.py).
        self._may_hold = MayHold()

    # -- lifecycle ------------------------------------------------------------
    async def setup(self) -> None:
        url = self.config.url
        try:
            leader = await self.catalog.leader()
            readable = await self.catalog.can_read_catalog()
        except ACLPermissionDenied as exc:
            await self.catalog.close()
            raise ConsulSetupError(f"Consul at {url} refused the token ({self._clean(exc)}); "
                                   "check dns.consul.token / tokenFile") from None
        except (ConsulUnreachable, ConsulException) as exc:
            await self.catalog.close()
            raise ConsulSetupError(f"cannot reach Consul at {url}: {self._clean(exc)}") from None
        if not leader:
            raise ConsulSetupError(f"Consul at {url} answers but has no cluster leader")
        if not readable:
            raise ConsulSetupError(
                f"Consul at {url} shows an empty catalog to this token: with ACLs enabled it needs "
                "node:write and service:write (set dns.consul.token or tokenFile; none is set)"
                if not self.config.token else
                f"Consul at {url} shows an empty catalog to the configured token: it needs node:write and "
                "service:write")
        await self._load_known()
        self.log.info("Consul at %s ready (leader %s)", url, leader)

    async def teardown(self) -> None:
        self._known = None
        self._may_hold.forget()
        await self.catalog.close()

    async def _load_known(self) -> None:
        """One read of every record Interlook holds, to answer the entries a restart brings back unchanged.

        It also tells which entries may hold records at all (``_may_hold``).
        Only a shortcut: when the read fails (an agent without the UI
        endpoint, a token that may not use it), every entry is read the
        normal way.
        """
        self._known = None
        self._may_hold.forget()
        try:
            nodes = await self.catalog.managed_records()
        except (ConsulUnreachable, ConsulException) as exc:
            self.log.info("no bulk read of our records (%s): entries are read one by one", self._clean(exc))
            return
        known = Known(nodes, self.instance_id, loaded_at=self.clock(), ttl=KNOWN_TTL)
        self._may_hold.load(known.owners())
        if len(known):
            self._known = known
            self.log.info("%d entries hold records in Consul: unchanged ones are confirmed without a request",
                          len(known))

    def _unchanged(self, owner: str, desired: list[Record]) -> bool:
        known = self._known
        if known is None:
            return False
        if known.expired(self.clock()):
            self._known = None
            return False
        return known.unchanged(owner, desired)

    async def handle(self, message: Message) -> Message:
        if message.action in (Action.ADD, Action.UPDATE):
            return await self._publish(message)
        if message.action is Action.DELETE:
            return await self._unpublish(message)
        return message

    async def run_background(self) -> None:
        """Remove the records of entries that no longer exist (see extensions/kit/orphans.py)."""
        await self.orphan_sweep().forever(self.config.reconcile_interval)

    def orphan_sweep(self) -> OrphanSweep:
        return OrphanSweep(self, self._owners, self._remove_orphan, (ConsulUnreachable, ConsulException))

    # -- the work -------------------------------------------------------------
    async def _publish(self, message: Message) -> Message:
        service = message.service
        if not service.public_ip:
            return message.failed(f"{self.name}: {service.name} has no public IP "
                                  "(an IPAM step must come before provisioner.consul)")
        names, invalid = normalize_names(service.dns_names)
        if invalid:
            return message.failed(f"{self.name}: not valid DNS names: {', '.join(invalid)}")
        port = self.config.public_port(service.tls, service.port)
        desired = [Record(n, service.name, service.public_ip, port, self.instance_id) for n in names]
        try:
            outcome = await self._sync_entry(service.name, desired)
        except (ConsulUnreachable, ConsulException) as exc:
            return message.failed(self._describe(exc))
        if outcome.conflicts:
            return message.failed(f"{self.name}: " + "; ".join(outcome.conflicts) + " (left unchanged)")
        self._log_outcome(service.name, outcome)
        return message.reply()

    async def _unpublish(self, message: Message) -> Message:
        try:
            outcome = await self._sync_entry(message.service.name, [])
        except (ConsulUnreachable, ConsulException) as exc:
            return message.failed(self._describe(exc))
        self._may_hold.holds_nothing(message.service.name)
        self._log_outcome(message.service.name, outcome)
        return message.reply()

    async def _sync_entry(self, owner: str, desired: list[Record], *, trust_view: bool = True) -> Outcome:
        """Read, plan, apply only the difference.  No desired record: remove them all.

        ``trust_view``: let what the start-up read showed (and what this
        process wrote since) spare reads; False reads everything from Consul.
        """
        if trust_view and self._unchanged(owner, desired):
            return Outcome()
        if trust_view and self._may_hold.fresh(owner):
            if not desired:
                return Outcome()  # it never held a record: nothing to remove
            if len(desired) <= MAX_RECORDS_PER_TXN:
                try:
                    return await self._create_entry(owner, desired)
                except ConcurrentChange:
                    pass  # a node already holds one of its names: the full read says whose
        self._may_hold.writing(owner)
        states = {r.name: await self.catalog.read_name(r.name) for r in desired}
        plan: Plan = plan_entry(desired, states, await self.catalog.entry_nodes(owner, self.instance_id))
        if plan.conflicts:
            return Outcome(conflicts=plan.conflicts)
        for record, modify_index in plan.write:
            await self.catalog.write(record, modify_index)
        removed = tuple([node.name for node in plan.remove if await self.catalog.remove(node)])
        return Outcome(written=tuple(r for r, _ in plan.write), removed=removed)

    async def _create_entry(self, owner: str, desired: list[Record]) -> Outcome:
        """A fresh entry: every record in one transaction that creates all its nodes, or none if one exists."""
        states = {r.name: NameState(r.name, None, await self.catalog.service_instances(r.name)) for r in desired}
        plan = plan_entry(desired, states, ())
        if plan.conflicts:
            return Outcome(conflicts=plan.conflicts)
        self._may_hold.writing(owner)
        await self.catalog.write_all(plan.write)
        return Outcome(written=tuple(r for r, _ in plan.write))

    async def _owners(self) -> set[str]:
        """Entries that own a node marked with our instance (never another's, never a legacy one)."""
        nodes = await self.catalog.instance_nodes(self.instance_id)
        return {node.owner for node in nodes}

    async def _remove_orphan(self, owner: str) -> None:
        # The sweep holds the owner's entry lock: no message for it runs meanwhile.
        try:
            outcome = await self._sync_entry(owner, [], trust_view=False)  # a listed owner: read, never assume
        except ConcurrentChange:
            self.log.info("a record of %s changed meanwhile; the next pass decides", owner)
            return
        self._may_hold.holds_nothing(owner)
        for name in outcome.removed:
            self.log.info("removed orphan record %s (entry %s no longer exists)", name, owner)

    # -- wording --------------------------------------------------------------
    def _log_outcome(self, owner: str, outcome: Outcome) -> None:
        for record in outcome.written:
            self.log.info("%s: registered %s -> %s:%d (DNS %s)", owner, record.name, record.address, record.port,
                          record.dns_query(self.config.domain))
        for name in outcome.removed:
            self.log.info("%s: deregistered %s", owner, name)

    def _describe(self, exc: Exception) -> str:
        """An entry error for a failed Consul call; never shows the token."""
        if isinstance(exc, ACLPermissionDenied):
            return f"{self.name}: Consul denied the change ({self._clean(exc)}); the token needs node:write and " \
                   "service:write"
        if isinstance(exc, ConcurrentChange):
            return f"{self.name}: a record changed in Consul while being written; will retry ({self._clean(exc)})"
        if isinstance(exc, ConsulUnreachable):
            return f"{self.name}: cannot reach Consul at {self.config.url}: {exc}"
        return f"{self.name}: Consul error: {self._clean(exc)}"

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        return text.replace(self.config.token, "<token>") if self.config.token else text
