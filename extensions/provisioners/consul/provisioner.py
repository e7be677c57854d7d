"""provisioner.consul: publish each entry's DNS names as Consul external nodes.

Each ``add``/``update`` plans the entry's records against what Consul holds
(for the names it wants, and for every node marked as the entry's) and
applies only the difference; a ``delete`` removes every node marked as the
entry's.  A background reconcile removes the records of entries the core no
longer has (left behind by a crash between two steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from controller.extension import PROVISIONER, BaseExtension, ExtensionContext
from controller.messages import Action, Message
from extensions.kit.orphans import OrphanSweep
from extensions.provisioners.consul.client import (
    ACLPermissionDenied,
    ConcurrentChange,
    ConsulCatalog,
    ConsulException,
    ConsulUnreachable,
)
from extensions.provisioners.consul.config import ConsulConfig
from extensions.provisioners.consul.records import Known, Plan, Record, normalize_names, plan_entry

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
        await self.catalog.close()

    async def _load_known(self) -> None:
        """One read of every record Interlook holds, to answer the entries a restart brings back unchanged.

        Only a shortcut: when the read fails (an agent without the UI
        endpoint, a token that may not use it), every entry is read the
        normal way.
        """
        self._known = None
        try:
            nodes = await self.catalog.managed_records()
        except (ConsulUnreachable, ConsulException) as exc:
            self.log.info("no bulk read of our records (%s): entries are read one by one", self._clean(exc))
            return
        known = Known(nodes, self.instance_id, loaded_at=self.clock(), ttl=KNOWN_TTL)
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
        self._log_outcome(message.service.name, outcome)
        return message.reply()

    async def _sync_entry(self, owner: str, desired: list[Record]) -> Outcome:
        """Read, plan, apply only the difference.  No desired record: remove them all."""
        if self._unchanged(owner, desired):
            return Outcome()
        states = {r.name: await self.catalog.read_name(r.name) for r in desired}
        plan: Plan = plan_entry(desired, states, await self.catalog.entry_nodes(owner, self.instance_id))
        if plan.conflicts:
            return Outcome(conflicts=plan.conflicts)
        for record, modify_index in plan.write:
            await self.catalog.write(record, modify_index)
        removed = tuple([node.name for node in plan.remove if await self.catalog.remove(node)])
        return Outcome(written=tuple(r for r, _ in plan.write), removed=removed)

    async def _owners(self) -> set[str]:
        """Entries that own a node marked with our instance (never another's, never a legacy one)."""
        nodes = await self.catalog.instance_nodes(self.instance_id)
        return {node.owner for node in nodes}

    async def _remove_orphan(self, owner: str) -> None:
        # The sweep holds the owner's entry lock: no message for it runs meanwhile.
        try:
            outcome = await self._sync_entry(owner, [])
        except ConcurrentChange:
            self.log.info("a record of %s changed meanwhile; the next pass decides", owner)
            return
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
