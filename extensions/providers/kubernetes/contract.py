"""The Kubernetes Service contract: which Services are ours, and what they ask for.

Pure functions from plain Kubernetes objects (dicts, or kopf bodies, which
read the same) to a ``controller.messages.Service``; no client, no kopf.  The
kopf layer summarises EndpointSlices and Nodes into small frozen views held in
its indexes, and calls :func:`read_service` with them, so a Service is
evaluated without a single API call.  See docs/kubernetes.md for the table.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from controller.messages import Service, Target
from controller.selectors import Labels, labels_of

DEFAULT_PREFIX = "interlook.io"
MANAGED_TYPES = ("NodePort", "LoadBalancer")

# Input keys, relative to the annotation prefix.
HOSTS = "hosts"
PORT = "port"
TLS = "tls"
IP = "ip"
POOL = "pool"
# Output keys (written by the controller), relative to the prefix.
STATE = "state"
STEP = "step"
PUBLIC_IP = "public-ip"
ERROR = "error"
INFO = "info"
INPUT_KEYS = (HOSTS, PORT, TLS, IP, POOL)
OUTPUT_KEYS = (STATE, STEP, PUBLIC_IP, ERROR, INFO)

# The Go Interlook's labels: a label value cannot hold a comma, so one host only.
LEGACY_HOSTS = "interlook.hosts"
LEGACY_PORT = "interlook.port"
LEGACY_TLS = "interlook.ssl"

NO_READY_ENDPOINTS = "no ready endpoints"

_DNS_LABEL = re.compile(r"^(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")
_POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidService(ValueError):
    """The Service asks for something that cannot be published as written."""


@dataclass(frozen=True)
class Selector:
    """An equality-based label selector: ``key``, ``!key``, ``key=value``, ``key!=value``."""

    requirements: tuple[tuple[str, str, str], ...] = ()  # (key, op, value); op in exists, !exists, =, !=

    @classmethod
    def parse(cls, items: Iterable[str]) -> Selector:
        reqs: list[tuple[str, str, str]] = []
        for raw in items:
            for item in (part.strip() for part in str(raw).split(",")):
                if not item:
                    continue
                if "!=" in item:
                    key, value = item.split("!=", 1)
                    reqs.append((key.strip(), "!=", value.strip()))
                elif "=" in item:
                    key, value = item.split("=", 1)
                    reqs.append((key.strip(), "=", value.strip().lstrip("=").strip()))
                elif item.startswith("!"):
                    reqs.append((item[1:].strip(), "!exists", ""))
                else:
                    reqs.append((item, "exists", ""))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, value in self.requirements:
            present = key in labels
            if op == "exists" and not present:
                return False
            if op == "!exists" and present:
                return False
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and present and labels.get(key) == value:
                return False
        return True

    def __str__(self) -> str:
        out = []
        for key, op, value in self.requirements:
            out.append({"exists": key, "!exists": f"!{key}", "=": f"{key}={value}", "!=": f"{key}!={value}"}[op])
        return ",".join(out)


@dataclass(frozen=True)
class Scope:
    """Which Services this controller looks at, and under which annotation prefix."""

    prefix: str = DEFAULT_PREFIX
    selector: Selector = Selector()
    namespaces: tuple[str, ...] = ()  # empty: all namespaces

    def key(self, name: str) -> str:
        # Interned: the same few keys are held by every Service's presentation and summary.
        return _prefixed(self.prefix, name)


@functools.lru_cache(maxsize=256)
def _prefixed(prefix: str, name: str) -> str:
    return sys.intern(f"{prefix}/{name}")


@dataclass(frozen=True)
class EndpointsView:
    """What one EndpointSlice says: ready endpoints by node (a kopf index value)."""

    slice_name: str
    # (node name, endpoint identity) of each ready endpoint with a node.
    ready: tuple[tuple[str, str], ...] = ()


def summarize_endpoint_slice(body: Mapping[str, Any]) -> EndpointsView:
    """The part of an EndpointSlice that targets depend on."""
    ready: list[tuple[str, str]] = []
    for endpoint in body.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # The API says an unset `ready` means ready; terminating endpoints are not.
        if conditions.get("ready") is False or conditions.get("terminating") is True and not conditions.get("ready"):
            continue
        node = endpoint.get("nodeName") or ""
        if not node:
            continue
        ref = endpoint.get("targetRef") or {}
        identity = ref.get("uid") or (f"{ref.get('namespace', '')}/{ref['name']}" if ref.get("name") else "")
        identity = identity or ",".join(sorted(endpoint.get("addresses") or []))
        ready.append((sys.intern(str(node)), identity))  # a few nodes, named by thousands of slices
    return EndpointsView(slice_name=str((body.get("metadata") or {}).get("name", "")), ready=tuple(sorted(ready)))


def node_internal_ip(body: Mapping[str, Any]) -> str:
    """A Node's InternalIP ("" when it has none)."""
    for address in (body.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            return str(address["address"])
    return ""


def entry_name(namespace: str, name: str) -> str:
    # One copy of each name, whichever table (core, lifecycle, write-back, IP index) holds it.
    return sys.intern(f"{namespace}/{name}")


def split_entry_name(entry: str) -> tuple[str, str]:
    namespace, _, name = entry.partition("/")
    return namespace, name


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _annotations(body: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(body).get("annotations") or {}


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(body).get("labels") or {}


def summarize_service(body: Mapping[str, Any], scope: Scope, finalizer: str) -> dict[str, Any]:
    """The part of a Service the controller reads, in the shape of its body (held for every Service).

    Our annotations (inputs and outputs, under the prefix), the labels (pools
    and name rules select on any of them), our finalizer, the type and
    ports, the LoadBalancer addresses: nothing else is ever read, and a
    Service's other annotations (``last-applied-configuration`` alone is
    often kilobytes) would be most of what 10,000 Services cost in memory.
    Label keys and values repeat across Services (``app``, ``team: a``):
    one interned copy of each.
    """
    meta = body.get("metadata") or {}
    prefix = f"{scope.prefix}/"
    # Keys and namespaces are the same strings for every Service: one copy each (sys.intern).
    namespace = meta.get("namespace")
    summary_meta: dict[str, Any] = {"name": meta.get("name"),
                                    "namespace": sys.intern(namespace) if isinstance(namespace, str) else namespace,
                                    "uid": meta.get("uid")}
    annotations = {sys.intern(k): v for k, v in (meta.get("annotations") or {}).items() if k.startswith(prefix)}
    if annotations:
        summary_meta["annotations"] = annotations
    labels = dict(labels_of(meta.get("labels")))
    if labels:
        summary_meta["labels"] = labels
    if finalizer in (meta.get("finalizers") or []):
        summary_meta["finalizers"] = [finalizer]
    if meta.get("deletionTimestamp"):
        summary_meta["deletionTimestamp"] = meta.get("deletionTimestamp")
    spec = body.get("spec") or {}
    summary: dict[str, Any] = {"metadata": summary_meta, "spec": {
        "type": spec.get("type"),
        "ports": [{k: p[k] for k in ("name", "port", "nodePort") if p.get(k) is not None}
                  for p in spec.get("ports") or []]}}
    ingress = [{"ip": i["ip"]} for i in (((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
               if i.get("ip")]
    if ingress:
        summary["status"] = {"loadBalancer": {"ingress": ingress}}
    return summary


def shows_deployed(body: Mapping[str, Any], scope: Scope, public_ip: str | None = None) -> bool:
    """The Service's annotations say it is deployed (at ``public_ip``, when given)."""
    annotations = _annotations(body)
    if annotations.get(scope.key(STATE)) != "deployed":
        return False
    return public_ip is None or annotations.get(scope.key(PUBLIC_IP), "") == public_ip


def asks_to_be_published(body: Mapping[str, Any], scope: Scope) -> bool:
    """The Service carries hosts and port, as annotations or legacy labels (values not checked)."""
    annotations, labels = _annotations(body), _labels(body)
    hosts = scope.key(HOSTS) in annotations or LEGACY_HOSTS in labels
    port = scope.key(PORT) in annotations or LEGACY_PORT in labels
    return hosts and port


def is_managed(body: Mapping[str, Any], scope: Scope) -> bool:
    """DESIGN.md: NodePort/LoadBalancer, hosts and port given, selector and namespace match."""
    spec = body.get("spec") or {}
    if spec.get("type") not in MANAGED_TYPES:
        return False
    if scope.namespaces and _meta(body).get("namespace") not in scope.namespaces:
        return False
    if not scope.selector.matches(_labels(body)):
        return False
    return asks_to_be_published(body, scope)


def marked_keys(annotations: Mapping[str, str], scope: Scope) -> list[str]:
    """The annotations we (or an older Interlook) wrote: under our prefix and not an input."""
    inputs = {scope.key(k) for k in INPUT_KEYS}
    return [k for k in annotations if k.startswith(f"{scope.prefix}/") and k not in inputs]


def carries_our_marks(body: Mapping[str, Any], scope: Scope, finalizer: str) -> bool:
    """Anything we wrote on it: our annotations or the finalizer."""
    return bool(marked_keys(_annotations(body), scope)) or finalizer in (_meta(body).get("finalizers") or [])


def parse_hosts(raw: str) -> tuple[str, ...]:
    hosts: list[str] = []
    for host in (h.strip().lower().rstrip(".") for h in raw.split(",")):
        if not host:
            continue
        labels = host.split(".")
        if len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels) or "*" in labels[1:]:
            raise InvalidService(f"invalid host name {host!r}")
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise InvalidService("no host names given (hosts is empty)")
    return tuple(hosts)


def parse_bool(raw: str, what: str) -> bool:
    text = raw.strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise InvalidService(f"{what} must be true or false, got {raw!r}")


def select_port(spec: Mapping[str, Any], wanted: str) -> tuple[int, int]:
    """(service port, nodePort) of the port named ``wanted``, or numbered so."""
    wanted = wanted.strip()
    if not wanted:
        raise InvalidService("no port given (port is empty)")
    ports = spec.get("ports") or []
    chosen = next((p for p in ports if p.get("name") == wanted), None)
    # isdigit() alone accepts "²", which int() refuses: digits are ASCII here.
    if chosen is None and wanted.isascii() and wanted.isdigit():
        chosen = next((p for p in ports if int(p.get("port") or 0) == int(wanted)), None)
    if chosen is None:
        names = ", ".join(str(p.get("name") or p.get("port")) for p in ports) or "none"
        raise InvalidService(f"port {wanted!r} is not a port of the Service (ports: {names})")
    node_port = int(chosen.get("nodePort") or 0)
    if not node_port:
        raise InvalidService(f"port {wanted!r} has no nodePort yet")
    return int(chosen.get("port") or 0), node_port


def parse_pool(raw: str) -> str:
    """The pool a Service names (the IP step says whether it may use it); "" for the default."""
    name = raw.strip()
    if name and not _POOL_NAME.match(name):
        raise InvalidService(f"pool {raw!r} is not a pool name (lower-case letters, digits and '-', "
                             "at most 63)")
    return name


def parse_requested_ip(raw: str) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise InvalidService(f"requested IP {raw!r} is not an IP address") from None


def ready_targets(endpoints: Iterable[EndpointsView], node_ips: Mapping[str, str],
                  node_port: int) -> tuple[Target, ...]:
    """One target per node with ready endpoints, weight = ready endpoints on it.

    An endpoint listed in two slices (IPv4 and IPv6 families of one Pod) counts once.
    """
    seen: set[tuple[str, str]] = set()
    weights: dict[str, int] = {}
    for view in endpoints:
        for node, identity in view.ready:
            if (node, identity) in seen:
                continue
            seen.add((node, identity))
            ip = node_ips.get(node)
            if ip:
                weights[ip] = weights.get(ip, 0) + 1
    return tuple(Target(host=ip, port=node_port, weight=count) for ip, count in weights.items())


@dataclass(frozen=True)
class Reading:
    """The outcome of reading one managed Service: a service to publish, or why not."""

    service: Service
    error: str = ""   # malformed input: shown as an error on the Service
    info: str = ""    # not published for a normal reason (e.g. no ready endpoints)

    @property
    def publishable(self) -> bool:
        return not self.error and not self.info


def read_service(body: Mapping[str, Any], scope: Scope, endpoints: Iterable[EndpointsView],
                 node_ips: Mapping[str, str], provider: str = "provider.kubernetes",
                 namespace_labels: Labels = ()) -> Reading:
    """Turn a managed Service and its index data into what the workflow publishes."""
    meta = _meta(body)
    name = entry_name(str(meta.get("namespace", "")), str(meta.get("name", "")))
    annotations, labels = _annotations(body), _labels(body)
    bare = Service(name=name, provider=provider)
    try:
        hosts_raw = annotations.get(scope.key(HOSTS), labels.get(LEGACY_HOSTS))
        port_raw = annotations.get(scope.key(PORT), labels.get(LEGACY_PORT))
        tls_raw = annotations.get(scope.key(TLS), labels.get(LEGACY_TLS, "false"))
        if hosts_raw is None:
            raise InvalidService(f"annotation {scope.key(HOSTS)} is missing")
        if port_raw is None:
            raise InvalidService(f"annotation {scope.key(PORT)} is missing")
        hosts = parse_hosts(str(hosts_raw))
        tls = parse_bool(str(tls_raw), scope.key(TLS))
        public_port, node_port = select_port(body.get("spec") or {}, str(port_raw))
        requested_ip = parse_requested_ip(str(annotations.get(scope.key(IP), "")))
        pool = parse_pool(str(annotations.get(scope.key(POOL), "")))
    except InvalidService as exc:
        return Reading(service=bare, error=f"invalid Service: {exc}")
    service = Service(name=name, provider=provider, targets=ready_targets(endpoints, node_ips, node_port),
                      tls=tls, dns_names=hosts, port=public_port, requested_ip=requested_ip, pool=pool,
                      labels=labels_of(labels), namespace_labels=namespace_labels)
    if not service.targets:
        return Reading(service=service, info=NO_READY_ENDPOINTS)
    return Reading(service=service)
