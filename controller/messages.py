"""Messages: the only thing that moves between the core and the extensions.

A provider sends ``add``/``delete`` for the services it sees; the core sends the
same message through each provisioner of the workflow; every extension puts
each processed message back, with ``error`` set when it failed.  Messages and
services are frozen so that no extension can change what another one holds.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

from controller.selectors import Labels, labels_of


class Action(enum.StrEnum):
    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"
    REFRESH = "refresh"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True, slots=True)
class Target:
    """One backend address of a service: a node and the port it listens on."""

    host: str
    port: int
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "weight": self.weight}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        return cls(host=str(data["host"]), port=int(data["port"]), weight=int(data.get("weight", 1)))


def merge_targets(targets: Iterable[Target]) -> tuple[Target, ...]:
    """Merge targets with the same host:port; their weights add up.

    The Go program counts duplicates (three tasks on one node and port give
    weight 3); summing weights is the same for weight-1 input and keeps
    already-merged lists stable when merged again.
    """
    weights: Counter[tuple[str, int]] = Counter()
    for target in targets:
        weights[(target.host, target.port)] += max(int(target.weight), 1)
    return tuple(sorted(Target(host, port, weight) for (host, port), weight in weights.items()))


@dataclass(frozen=True, slots=True)  # kept by every entry: no per-object __dict__
class Service:
    """What a provider wants published, plus what the provisioners gave it."""

    name: str
    provider: str = ""
    targets: tuple[Target, ...] = ()
    tls: bool = False
    public_ip: str = ""
    dns_names: tuple[str, ...] = ()
    # The port the service listens on in the platform (the Kubernetes
    # Service port).  The DNS step uses it as the registered service port
    # unless configured otherwise; load balancers publish on their own
    # httpPort/httpsPort, as the Go program did.
    port: int = 0
    # An address the user asked for (Kubernetes `interlook.io/ip`); the IPAM
    # step gives it or fails, it never silently gives another one.
    requested_ip: str = ""
    # The IP pool the user asked for by name (Kubernetes `interlook.io/pool`).
    pool: str = ""
    # What pools and name rules select on: the Service's labels, and its
    # namespace's (Kubernetes; empty elsewhere).  Sorted pairs.
    labels: Labels = ()
    namespace_labels: Labels = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", merge_targets(self.targets))
        object.__setattr__(self, "dns_names", tuple(self.dns_names))

    def same_definition(self, other: Service) -> bool:
        """True when a provider would publish both the same way.

        The public IP is left out: only the IPAM step sets it, so a fresh
        provider message (which has none) must not look like a change.
        """
        return (
            self.targets == other.targets
            and self.tls == other.tls
            and self.dns_names == other.dns_names
            and self.port == other.port
            and self.requested_ip == other.requested_ip
            and self.pool == other.pool
            and self.labels == other.labels
            and self.namespace_labels == other.namespace_labels
        )

    def with_provider_fields(self, other: Service) -> Service:
        """This service with the fields only a provider may set taken from ``other``."""
        return self.but(targets=other.targets, tls=other.tls, dns_names=other.dns_names, port=other.port,
                        requested_ip=other.requested_ip, pool=other.pool, labels=other.labels,
                        namespace_labels=other.namespace_labels, provider=other.provider or self.provider)

    def but(self, **changes: Any) -> Service:
        """``dataclasses.replace`` for the hot paths: values taken from another Service are normalized already.

        replace() scans the fields and runs __post_init__ (merging targets)
        on every call: several times per Service and step, about 3 % of the
        controller's CPU per Service (bench/RESULTS.md).
        """
        unknown = changes.keys() - _SERVICE_FIELD_SET
        if unknown:
            raise TypeError(f"Service has no field {', '.join(sorted(unknown))}")
        new = object.__new__(Service)
        for name in _SERVICE_FIELDS:
            object.__setattr__(new, name, changes[name] if name in changes else getattr(self, name))
        if "targets" in changes or "dns_names" in changes:
            new.__post_init__()
        return new

    @property
    def namespace(self) -> str:
        """The Kubernetes namespace of the entry (``namespace/name``); "" for a Swarm service."""
        return self.name.rpartition("/")[0]

    def to_dict(self) -> dict[str, Any]:
        # `dns_name` is the Go program's key for the list of DNS names.
        return {
            "provider": self.provider,
            "name": self.name,
            "targets": [t.to_dict() for t in self.targets],
            "tls": self.tls,
            "public_ip": self.public_ip,
            "dns_name": list(self.dns_names),
            "port": self.port,
            "requested_ip": self.requested_ip,
            "pool": self.pool,
            "labels": dict(self.labels),
            "namespace_labels": dict(self.namespace_labels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Service:
        names = data.get("dns_names", data.get("dns_name")) or []
        if isinstance(names, str):
            names = [n for n in names.split(",") if n]
        return cls(
            name=str(data.get("name", "")),
            provider=str(data.get("provider", "")),
            targets=tuple(Target.from_dict(t) for t in data.get("targets") or []),
            tls=bool(data.get("tls", False)),
            public_ip=str(data.get("public_ip", "") or ""),
            dns_names=tuple(str(n) for n in names),
            port=int(data.get("port", 0) or 0),
            requested_ip=str(data.get("requested_ip", "") or ""),
            pool=str(data.get("pool", "") or ""),
            labels=labels_of(data.get("labels")),
            namespace_labels=labels_of(data.get("namespace_labels")),
        )


def holder_as_seen_by(holder: str, viewer: str) -> str:
    """How an error shown on ``viewer`` names the entry ``holder`` that holds what it wanted.

    Errors go to the viewer's annotations and Events, which the people of
    its namespace read: another namespace's Service names are none of their
    business (nor a way to find them).  Entry names are ``namespace/name``
    on Kubernetes; a name without ``/`` (Swarm) lives in one shared space.
    """
    if not holder:
        return "another Service"
    same_space = holder.rpartition("/")[0] == viewer.rpartition("/")[0]
    return holder if same_space and holder != viewer else "another Service"


@dataclass(frozen=True)
class Message:
    action: Action
    service: Service
    sender: str = ""
    destination: str = ""
    error: str = ""
    # Free-form detail an extension wants shown on the entry (e.g. "no ready endpoints").
    info: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def reply(self, *, error: str = "", service: Service | None = None, info: str = "") -> Message:
        """The message an extension puts back after processing this one."""
        return Message(self.action, service or self.service, self.sender, self.destination, error,
                       info or self.info, self.extra)

    def failed(self, error: str) -> Message:
        return Message(self.action, self.service, self.sender, self.destination, error or "unknown error",
                       self.info, self.extra)

    def sent_by(self, sender: str) -> Message:
        return Message(self.action, self.service, sender, self.destination, self.error, self.info, self.extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "sender": self.sender,
            "destination": self.destination,
            "error": self.error,
            "info": self.info,
            "service": self.service.to_dict(),
        }


_SERVICE_FIELDS = tuple(f.name for f in fields(Service))
_SERVICE_FIELD_SET = frozenset(_SERVICE_FIELDS)
