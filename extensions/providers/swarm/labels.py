"""From Docker's JSON to the Service Interlook publishes: labels, ports, targets.

Pure functions over the plain dicts the Engine API returns (service, task and
node objects), so every rule can be tested without a daemon.  The rules are
the Go program's: ``interlook.hosts`` (comma-separated DNS names),
``interlook.port`` (the container port to publish, matched against the
service's target ports), ``interlook.ssl``; targets are the nodes of running
tasks on the published port, duplicates merged into weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from controller.messages import Service, Target
from controller.selectors import labels_of

HOSTS_LABEL = "interlook.hosts"
PORT_LABEL = "interlook.port"
SSL_LABEL = "interlook.ssl"
REQUIRED_LABELS = (HOSTS_LABEL, PORT_LABEL)

RUNNING = "running"
INGRESS = "ingress"
HOST = "host"

JSON = Mapping[str, Any]


class LabelSelectorError(ValueError):
    pass


class ServiceLabelError(ValueError):
    """The service asks to be published but its labels or ports do not allow it."""


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    value: str | None = None  # None: the label only has to be present

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.key not in labels:
            return False
        return self.value is None or labels[self.key] == self.value

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


def parse_label_selector(items: Iterable[str]) -> tuple[LabelRequirement, ...]:
    """``["env=prod", "team"]`` -> requirements; the Docker ``label`` filter syntax."""
    out = []
    for raw in items:
        item = raw.strip()
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key:
            raise LabelSelectorError(f"{raw!r} has no label key")
        out.append(LabelRequirement(key, value.strip() if sep else None))
    return tuple(out)


def label_filters(selector: Sequence[LabelRequirement]) -> list[str]:
    """The Engine API ``label`` filter: our two labels plus the configured selector."""
    return [*REQUIRED_LABELS, *(str(r) for r in selector)]


def service_labels(service: JSON) -> Mapping[str, str]:
    return (service.get("Spec") or {}).get("Labels") or {}


def service_name(service: JSON) -> str:
    return str((service.get("Spec") or {}).get("Name") or service.get("ID") or "")


def is_selected(service: JSON, selector: Sequence[LabelRequirement]) -> bool:
    """True when the service carries our labels and matches the configured selector."""
    labels = service_labels(service)
    return all(k in labels for k in REQUIRED_LABELS) and all(r.matches(labels) for r in selector)


def parse_hosts(value: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in value.split(",") if h.strip())
    if not hosts:
        raise ServiceLabelError(f"label {HOSTS_LABEL} is empty")
    return hosts


def parse_port(value: str) -> int:
    try:
        port = int(value.strip())
    except ValueError:
        raise ServiceLabelError(f"label {PORT_LABEL}={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServiceLabelError(f"label {PORT_LABEL}={value!r} is not a port number (1-65535)")
    return port


_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off", "")


def parse_ssl(value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ServiceLabelError(f"label {SSL_LABEL}={value!r} must be true or false")


def endpoint_ports(service: JSON) -> list[JSON]:
    """Published ports as the swarm assigned them (Endpoint), else as asked (Spec)."""
    ports = (service.get("Endpoint") or {}).get("Ports")
    if ports:
        return list(ports)
    return list(((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or [])


def find_port(service: JSON, wanted: int) -> JSON:
    """The port config that publishes ``wanted``: by target port (the Go rule), else by published port."""
    ports = endpoint_ports(service)
    # TCP first: a load balancer in front of a UDP-only port would be of no use.
    candidates = sorted(ports, key=lambda p: (p.get("Protocol") or "tcp") != "tcp")
    for key in ("TargetPort", "PublishedPort"):
        for port in candidates:
            # A host-mode port may leave the published port to each node (0 here).
            published = port.get("PublishedPort") or port.get("PublishMode") == HOST
            if int(port.get(key) or 0) == wanted and published:
                return port
    published = ", ".join(f"{p.get('PublishedPort', '?')}->{p.get('TargetPort', '?')}/{p.get('Protocol', 'tcp')}"
                          for p in ports) or "none"
    raise ServiceLabelError(f"label {PORT_LABEL}={wanted} is not a published port of the service "
                            f"(published: {published})")


def node_address(node: JSON) -> str:
    """The address other machines reach the node at: Status.Addr, else the manager address."""
    addr = str((node.get("Status") or {}).get("Addr") or "")
    if addr and addr not in ("0.0.0.0", "::"):
        return addr
    manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
    if manager:
        host, _, _ = manager.rpartition(":")
        return (host or manager).strip("[]")
    return ""


def node_is_ready(node: JSON) -> bool:
    return str((node.get("Status") or {}).get("State") or "") == "ready"


def is_running(task: JSON) -> bool:
    return (task.get("Status") or {}).get("State") == RUNNING and task.get("DesiredState") == RUNNING


def task_published_port(task: JSON, port: JSON) -> int:
    """For a host-mode port: what this task's node publishes, else the port asked for."""
    target = int(port.get("TargetPort") or 0)
    for status in ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []:
        if int(status.get("TargetPort") or 0) == target and status.get("PublishedPort"):
            return int(status["PublishedPort"])
    return int(port.get("PublishedPort") or 0)


@dataclass(frozen=True)
class Observed:
    """One labelled service as seen now: what to publish, or why it cannot be."""

    name: str
    service: Service | None = None
    error: str = ""
    # Tasks the swarm wants running (running or on their way): zero means
    # the service was scaled to nothing, not that it is restarting.
    desired_tasks: int = 0


def observe_service(service: JSON, tasks: Iterable[JSON], nodes: Mapping[str, JSON], *,
                    provider: str = "provider.swarm") -> Observed:
    """Build what Interlook publishes for one labelled service.

    ``tasks`` are the service's tasks (any state); ``nodes`` maps node ID to node.
    Bad labels give an Observed with ``error`` set rather than an exception.
    """
    name = service_name(service)
    service_id = service.get("ID")
    own_tasks = [t for t in tasks if not service_id or t.get("ServiceID") in (None, service_id)]
    desired = sum(1 for t in own_tasks if t.get("DesiredState") == RUNNING)
    try:
        labels = service_labels(service)
        hosts = parse_hosts(labels.get(HOSTS_LABEL, ""))
        port_config = find_port(service, parse_port(labels.get(PORT_LABEL, "")))
        tls = parse_ssl(labels.get(SSL_LABEL))
    except ServiceLabelError as exc:
        return Observed(name=name, error=str(exc), desired_tasks=desired)
    targets = compute_targets(port_config, own_tasks, nodes)
    return Observed(name=name, desired_tasks=desired,
                    service=Service(name=name, provider=provider, targets=targets, tls=tls, dns_names=hosts,
                                    labels=labels_of(labels)))


def compute_targets(port: JSON, tasks: Iterable[JSON], nodes: Mapping[str, JSON]) -> tuple[Target, ...]:
    """Node address and published port of every running task; one weight per task.

    Ingress mode publishes the port on every node of the swarm, but the Go
    program (and we) only name the nodes running a task, so the load balancer
    does not send traffic through nodes that would only forward it.
    """
    weights: Counter[tuple[str, int]] = Counter()
    ingress = (port.get("PublishMode") or INGRESS) == INGRESS
    for task in tasks:
        if not is_running(task):
            continue
        node = nodes.get(str(task.get("NodeID") or ""))
        if node is None or not node_is_ready(node):
            continue
        address = node_address(node)
        published = int(port.get("PublishedPort") or 0) if ingress else task_published_port(task, port)
        if address and published:
            weights[(address, published)] += 1
    return tuple(Target(host, p, w) for (host, p), w in weights.items())


def observe_all(services: Iterable[JSON], tasks: Iterable[JSON], nodes: Iterable[JSON],
                selector: Sequence[LabelRequirement] = (), *,
                provider: str = "provider.swarm") -> dict[str, Observed]:
    """Observed state of every selected service, by service name."""
    by_service: dict[str, list[JSON]] = {}
    for task in tasks:
        by_service.setdefault(str(task.get("ServiceID") or ""), []).append(task)
    node_map = {str(n.get("ID")): n for n in nodes}
    out: dict[str, Observed] = {}
    for service in services:
        if not is_selected(service, selector):
            continue
        observed = observe_service(service, by_service.get(str(service.get("ID") or ""), []), node_map,
                                   provider=provider)
        out[observed.name] = observed
    return out
