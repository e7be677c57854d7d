"""The Consul records of one entry: what should exist, what does, and whose it is.

Pure data and comparisons, no I/O, so that the rules (shape compatible with
the Go Interlook, ownership, "no write when nothing changed") can be read and
tested without an agent.  The record of a DNS name is an external node named
after the name (address = the public IP) carrying one service of the same
name and one passing check; node meta marks it as Interlook's, made by one
instance for one entry (extensions/kit/ownership.py has the rules).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from extensions.kit.ownership import Mark, Ownership

# The Go program's mark for nodes that are not Consul agents (ESM, DNS views).
EXTERNAL_KEY = "external-node"
# Ours: every record Interlook writes says so, and for which entry.
MANAGED_KEY = "interlook-managed"
OWNER_KEY = "interlook-owner"
INSTANCE_KEY = "interlook-instance"  # absent on records written before instance ids
CHECK_NAME = "interlook"
CHECK_NOTES = "Published by Interlook; the check is always passing."

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def normalize_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The DNS names as Consul will hold them (lower case, no final dot), and the invalid ones."""
    valid: list[str] = []
    invalid: list[str] = []
    for raw in names:
        name = raw.strip().rstrip(".").lower()
        if not name:
            continue
        if len(name) > 253 or not _DNS_NAME.match(name):
            invalid.append(raw)
        elif name not in valid:
            valid.append(name)
    return valid, invalid


@dataclass(frozen=True)
class ServiceState:
    id: str
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class CheckState:
    id: str
    service_id: str
    name: str
    status: str


@dataclass(frozen=True)
class NodeState:
    """A node as the catalog holds it."""

    name: str
    address: str
    meta: Mapping[str, str]
    modify_index: int
    services: tuple[ServiceState, ...] = ()
    checks: tuple[CheckState, ...] = ()

    @property
    def mark(self) -> Mark | None:
        return mark_of(self.meta)


@dataclass(frozen=True)
class ServiceInstance:
    """One instance of a service, on whichever node, with that node's marks."""

    node: str
    mark: Mark | None


@dataclass(frozen=True)
class NameState:
    """Everything in Consul that answers to one DNS name."""

    name: str
    node: NodeState | None
    instances: tuple[ServiceInstance, ...] = ()


@dataclass(frozen=True)
class OwnedNode:
    """A node Interlook wrote, as listed by its ownership marks."""

    name: str
    owner: str
    modify_index: int
    instance: str = ""


@dataclass(frozen=True)
class Record:
    """What Consul should hold for one DNS name of one entry."""

    name: str
    owner: str
    address: str
    port: int
    instance: str
    meta: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", {EXTERNAL_KEY: "true", MANAGED_KEY: "true", OWNER_KEY: self.owner,
                                          INSTANCE_KEY: self.instance})

    def dns_query(self, domain: str) -> str:
        """The name Consul's DNS answers for this record.

        Consul reads a single label before ``.service.`` as the service name,
        so a dotted name is only answered as a node (``<name>.node.<domain>``).
        """
        kind = "node" if "." in self.name else "service"
        return f"{self.name}.{kind}.{domain}"

    @property
    def check_id(self) -> str:
        return f"service:{self.name}"

    def conflict(self, state: NameState) -> str:
        """Why this record may not be written over what Consul holds; empty when it may.

        Our node for this entry, or one written for it before instance ids
        (adopted: the write re-marks it), may be written; anything else is
        somebody else's.  The holder is named by kind, never by Service.
        """
        rules = Ownership(self.instance)
        if state.node is not None and not rules.may_change(state.node.mark, self.owner):
            return (f"{self.name} is already in Consul as node {state.node.name}, "
                    f"held by {rules.holder(state.node.mark, self.owner)}")
        for instance in state.instances:
            if instance.node != self.name:
                return (f"{self.name} is already in Consul as a service on node {instance.node}, "
                        f"held by {rules.holder(instance.mark, self.owner)}")
        return ""

    def is_current(self, node: NodeState | None) -> bool:
        """True when Consul already holds exactly this record (extra items are left alone)."""
        if node is None or node.address != self.address:
            return False
        if any(node.meta.get(k) != v for k, v in self.meta.items()):
            return False
        wanted_service = ServiceState(self.name, self.name, self.address, self.port)
        wanted_check = CheckState(self.check_id, self.name, CHECK_NAME, "passing")
        return wanted_service in node.services and wanted_check in node.checks

    def transaction(self, modify_index: int) -> list[dict[str, Any]]:
        """One atomic write: the node only if it is still the version we read (0: absent), its service, its check.

        A compare-and-set on the node is what makes ownership safe against a
        concurrent writer: if anyone changed the node since we read it, the
        whole transaction is refused and nothing is written.
        """
        return [
            {"Node": {"Verb": "cas", "Node": {
                "Node": self.name, "Address": self.address, "Meta": dict(self.meta),
                "ModifyIndex": modify_index}}},
            {"Service": {"Verb": "set", "Node": self.name, "Service": {
                "ID": self.name, "Service": self.name, "Address": self.address, "Port": self.port}}},
            {"Check": {"Verb": "set", "Check": {
                "Node": self.name, "CheckID": self.check_id, "Name": CHECK_NAME, "Status": "passing",
                "ServiceID": self.name, "Notes": CHECK_NOTES}}},
        ]


@dataclass(frozen=True)
class Plan:
    """The writes that bring one entry's records in Consul to what it wants."""

    write: tuple[tuple[Record, int], ...] = ()   # (record, ModifyIndex to compare-and-set; 0: new node)
    remove: tuple[OwnedNode, ...] = ()
    conflicts: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.write or self.remove or self.conflicts)


def plan_entry(desired: Iterable[Record], states: Mapping[str, NameState], owned: Iterable[OwnedNode]) -> Plan:
    """Diff what an entry wants with what Consul holds; a conflict means write nothing at all."""
    wanted = list(desired)
    conflicts = tuple(c for r in wanted if (c := r.conflict(states[r.name])))
    if conflicts:
        return Plan(conflicts=conflicts)
    write = tuple(
        (r, node.modify_index if (node := states[r.name].node) is not None else 0)
        for r in wanted if not r.is_current(states[r.name].node)
    )
    names = {r.name for r in wanted}
    remove = tuple(n for n in owned if n.name not in names)
    return Plan(write=write, remove=remove)


def node_state(node: Mapping[str, Any] | None, checks: Iterable[Mapping[str, Any]]) -> NodeState | None:
    """A NodeState from /v1/catalog/node/<name> and /v1/health/node/<name> answers."""
    if not node or not node.get("Node"):
        return None
    info = node["Node"]
    services = tuple(
        ServiceState(str(s.get("ID", "")), str(s.get("Service", "")), str(s.get("Address", "")),
                     int(s.get("Port", 0) or 0))
        for s in (node.get("Services") or {}).values()
    )
    check_states = tuple(
        CheckState(str(c.get("CheckID", "")), str(c.get("ServiceID", "")), str(c.get("Name", "")),
                   str(c.get("Status", "")))
        for c in checks
    )
    return NodeState(name=str(info["Node"]), address=str(info.get("Address", "")),
                     meta=dict(info.get("Meta") or {}), modify_index=int(info.get("ModifyIndex", 0)),
                     services=services, checks=check_states)


def mark_of(meta: Mapping[str, str] | None) -> Mark | None:
    """The ownership marks in a node's meta; None when Interlook did not write it."""
    meta = meta or {}
    owner = meta.get(OWNER_KEY, "")
    if meta.get(MANAGED_KEY) != "true" or not owner:
        return None
    return Mark(instance=meta.get(INSTANCE_KEY, ""), entry=owner)


class Known:
    """The records a bulk read at start-up found, by entry: unchanged entries are answered without a request.

    After a restart every entry comes back through the workflow; reading its
    names one by one (three reads per record, one more for the entry) is most
    of the load a restart puts on Consul.  One read of every node Interlook
    marked answers instead, once per entry: the first message of an entry
    takes its records out (later ones read afresh), and only a record that
    is ours, for this entry, and exactly current counts as an answer.
    Anything else (a name missing, a record to change, adopt or remove) goes
    the normal way: read, plan, compare-and-set.  What it holds is dropped
    after ``ttl`` seconds: it is a start-up view, never a cache of the present.

    The same read also says which entries hold records at all (``owners``):
    the provisioner keeps those names for as long as it runs, so that an
    entry that never held one is published without reading for nodes.
    """

    def __init__(self, nodes: Iterable[NodeState], instance: str, *, loaded_at: float, ttl: float):
        self.instance = instance
        self.expires = loaded_at + ttl
        self._by_owner: dict[str, list[NodeState]] = {}
        for node in nodes:
            mark = node.mark
            # Another instance's records are never ours to confirm (nor to change).
            if mark is not None and mark.instance in (instance, ""):
                self._by_owner.setdefault(sys.intern(mark.entry), []).append(node)

    def __len__(self) -> int:
        return len(self._by_owner)

    def owners(self) -> set[str]:
        """The entries holding a record of this instance, or one from before instance ids, as read (interned).

        Ask before ``unchanged`` takes owners out.
        """
        return set(self._by_owner)

    def expired(self, now: float) -> bool:
        return now >= self.expires or not self._by_owner

    def unchanged(self, owner: str, desired: Iterable[Record]) -> bool:
        """Does Consul hold exactly ``desired`` for ``owner``, and nothing more of it?  Consumes the owner's view."""
        nodes = {node.name: node for node in self._by_owner.pop(owner, [])}
        wanted = list(desired)
        if not wanted or set(nodes) != {r.name for r in wanted}:
            return False
        return all(r.instance == self.instance and r.is_current(nodes[r.name]) for r in wanted)
